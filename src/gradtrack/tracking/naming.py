"""What the MLflow UI shows about a run: its name, its source and its description.

A run's name says what it is: the experiment (or model · dataset), the backend and
the overrides that make it differ, e.g. ``fit_linear · torch · lr=0.1``. A sweep
child shows only the values its sweep varies (``GRADTRACK_SWEPT_KEYS``, set by
``gradtrack.sweep``). The context tags are MLflow's own, so the UI fills in Source,
Created by and Description.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gradtrack.config import is_plumbing

# Per-step metrics. MLflow's chart view groups metrics into sections by the prefix
# before the last "/", sorts named sections by plain string order (capitals first)
# and puts unprefixed metrics ("Model metrics") last. "Training" therefore opens
# the chart view, before baseline/*, gradcheck/* and the final values.
STEP_SECTION = "Training"
STEP_LOSS = f"{STEP_SECTION}/loss"
STEP_GRAD_NORM = f"{STEP_SECTION}/grad_norm"
STEP_X = f"{STEP_SECTION}/x"  # scalar problems: the iterate after each step

ENV_SWEPT = "GRADTRACK_SWEPT_KEYS"  # comma-separated override keys a sweep varies
ENV_OVERRIDES = "GRADTRACK_JOB_OVERRIDES"  # the overrides of a sweep's current job
SEP = " · "
MAX_NAME = 120
ENTRY_POINT = "gradtrack"
_GROUPS = ("dataset", "model", "backend", "optimizer", "tracking")


def override_key(override: str) -> str:
    """``+optimizer.lr=0.1`` → ``optimizer.lr``; ``~epochs`` → ``epochs``."""
    return override.split("=", 1)[0].lstrip("+~")


def short_override(override: str) -> str:
    """The label an override gets in a name: ``optimizer.lr=0.1`` → ``lr=0.1``,
    a config group choice ``optimizer=adam`` → ``adam``."""
    key = override_key(override)
    value = override.split("=", 1)[1] if "=" in override else ""
    if "." not in key:
        # A group choice (optimizer=adam) reads as its value; a top-level value as k=v.
        return value if key in _GROUPS else f"{key}={value}"
    return f"{key.rsplit('.', 1)[1]}={value}"


def distinguishing(overrides: list[str], swept: set[str] | None = None) -> list[str]:
    """Overrides worth a place in the name, in the order given.

    Left out: the experiment and backend (named anyway) and plumbing
    (``tracking.root``, ``paths.*``, ...). With ``swept``, only those keys count.
    """
    keep = []
    for o in overrides:
        key = override_key(o)
        if key in ("experiment", "backend") or key.startswith("hydra") or is_plumbing(key):
            continue
        if key == "tracking" or (swept is not None and key not in swept):
            continue
        keep.append(o)
    return keep


def swept_keys() -> set[str] | None:
    """Keys the current sweep varies (from the environment), or None outside a sweep."""
    raw = os.environ.get(ENV_SWEPT)
    return None if raw is None else {k for k in raw.split(",") if k}


def job_label(overrides: str, swept: Collection[str] | None) -> str:
    """A sweep job's short label: its swept values (``lr=0.1 · torch``)."""
    parts = overrides.split()
    if swept is not None:
        parts = [o for o in parts if override_key(o) in swept]
        return " · ".join(short_override(o) for o in parts) or "(single job)"
    return " · ".join(short_override(o) for o in distinguishing(parts)) or overrides


def job_key(overrides: str) -> str:
    """A sweep job's identity: its overrides in a fixed order. A rerun of the sweep with
    the keys in another order (``epochs=20 model=quadratic`` for ``model=quadratic
    epochs=20``) is the same sweep (tracking/resume.py) and so has the same jobs."""
    return " ".join(sorted(overrides.split()))


def current_job() -> str:
    """The label of the sweep job running in this process, or "" outside a sweep: what
    its console lines are prefixed with, since a joblib sweep's jobs print at once."""
    overrides = os.environ.get(ENV_OVERRIDES)
    return job_label(overrides, swept_keys()) if overrides else ""


def _head(cfg: Any) -> str:
    if cfg.experiment_name and cfg.experiment_name != "default":
        return cfg.experiment_name
    return f"{cfg.model.name}{SEP}{cfg.dataset.name}"


def run_name(cfg: Any, overrides: list[str]) -> str:
    """``fit_linear · torch · lr=0.1``; ``tracking.run_name`` wins when set."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    head = _head(cfg)
    named = () if head == cfg.experiment_name else ("model", "dataset")  # in the head
    parts = [head, cfg.backend.name]
    parts += [
        short_override(o)
        for o in distinguishing(overrides, swept_keys())
        if override_key(o) not in named
    ]
    name = SEP.join(parts)
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def sweep_name(cfg: Any, swept: list[str] | None, n_jobs: int) -> str:
    """The sweep parent: ``sweep · fit_linear · backend, lr · 4 jobs``."""
    varied = ", ".join(k.rsplit(".", 1)[-1] for k in swept or [])
    return SEP.join(p for p in ("sweep", _head(cfg), varied, f"{n_jobs} jobs") if p)


def model_name(cfg: Any) -> str:
    """The LoggedModel's name: the experiment, else ``<model>-<dataset>``."""
    if cfg.experiment_name and cfg.experiment_name != "default":
        return cfg.experiment_name
    return f"{cfg.model.name}-{cfg.dataset.name}"


def git_commit(*dirs: Path) -> str | None:
    """HEAD of the first of ``dirs`` inside a git checkout, or None."""
    for d in dirs:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=d, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def command(overrides: list[str]) -> str:
    """The shell command that reproduces a run with these overrides."""
    return shlex.join([ENTRY_POINT, *overrides])


def description(cfg: Any, overrides: list[str], commit: str | None) -> str:
    """The run's Markdown description: the experiment's purpose and how to rerun it."""
    purpose = (cfg.description or "").strip() or (
        f"{cfg.model.name} on {cfg.dataset.name}, {cfg.optimizer.name}, {cfg.epochs} epochs."
    )
    at = f" (at commit `{commit[:12]}`)" if commit else ""
    return f"{purpose}\n\nReproduce{at}:\n\n    {command(overrides)}\n"


def context_tags(
    cfg: Any, root: Path, overrides: list[str], note: str | None = None
) -> dict[str, str]:
    """MLflow's standard context tags: Source, Created by and Description in the UI.

    ``note`` replaces the description (the sweep parent's says what it sweeps).
    """
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_RUN_NOTE,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    # The code's checkout, as MLflow records for a script; else the project's (a
    # pip-installed gradtrack driven from a project repository).
    commit = git_commit(Path(__file__).resolve().parent, root)
    tags = {
        MLFLOW_SOURCE_NAME: ENTRY_POINT,
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_USER: _user(),
        MLFLOW_RUN_NOTE: note or description(cfg, overrides, commit),
    }
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"
