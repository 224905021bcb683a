"""``python -m gradtrack.pipeline.train EXPERIMENT [OVERRIDE ...]``: one DVC train stage.

Runs ``gradtrack +experiment=EXPERIMENT`` with that experiment's knobs from
params.yaml (``train.<EXPERIMENT>``: epochs, seed, optimizer.lr; see pipeline/params.py)
and then the given overrides, and tells the run which stage it is (an MLflow tag, see
lineage.py).

The MLflow run goes to the store of the repository DVC was started in. ``dvc exp run
--queue`` runs stages in a temporary copy under ``.dvc/tmp/exps/`` that is deleted
afterwards; DVC tells the stage the original repository in ``$DVC_ROOT``, so the run
lands in ``<that repo>/mlruns`` where ``mlflow ui`` and ``gradtrack-report`` see it.
The path only reaches the run's own config, never the stage's command or dvc.lock.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gradtrack.pipeline.lineage import STAGE_ENV

PARAMS_FILE = "params.yaml"
# MKL's Conditional Numerical Reproducibility mode for the stages (see main).
MKL_REPRODUCIBLE = ("MKL_CBWR", "COMPATIBLE")
# Set by DVC for every stage: the root of the repository `dvc` was started in.
DVC_ROOT_ENV = "DVC_ROOT"


class ParamsError(ValueError):
    """params.yaml lacks this experiment's knobs."""


def param_overrides(params: dict[str, Any], prefix: str = "") -> list[str]:
    """{"optimizer": {"lr": 0.05}, "epochs": None} → ["optimizer.lr=0.05"]."""
    out: list[str] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += param_overrides(value, name + ".")
        elif value is not None:
            out.append(f"{name}={_hydra_value(value)}")
    return out


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar: true/false, [a,b], plain scalars."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return str(value)


def experiment_params(experiment: str, params_path: Path) -> dict[str, Any]:
    """``train.<experiment>`` from params.yaml: this experiment's knobs, nobody else's."""
    if not params_path.is_file():
        raise ParamsError(f"{params_path}: not found; run the stage from the project root")
    params = yaml.safe_load(params_path.read_text()) or {}
    own = params.get("train", {}).get(experiment) if isinstance(params, dict) else None
    if not isinstance(own, dict):
        raise ParamsError(
            f"{params_path}: no mapping train.{experiment}; add it, or regenerate the "
            "file from conf/ with `python -m gradtrack.pipeline.params`"
        )
    return own


def tracking_root_override(env: dict[str, str], cwd: Path) -> list[str]:
    """``tracking.root=<repo>/mlruns`` when DVC runs this stage in a copy of ``<repo>``."""
    root = env.get(DVC_ROOT_ENV)
    if not root or Path(root).resolve() == cwd.resolve():
        return []
    return [f"tracking.root={Path(root).resolve() / 'mlruns'}"]


def build_argv(
    experiment: str,
    extra: list[str],
    params_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> list[str]:
    env = dict(os.environ) if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    return [
        f"+experiment={experiment}",
        *param_overrides(experiment_params(experiment, params_path)),
        *tracking_root_override(env, cwd),
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        raise SystemExit("usage: python -m gradtrack.pipeline.train EXPERIMENT [OVERRIDE ...]")
    experiment, extra = args[0], args[1:]
    try:
        gradtrack_args = build_argv(experiment, extra, Path(PARAMS_FILE))
    except ParamsError as exc:
        print(f"train {experiment}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("gradtrack " + " ".join(gradtrack_args), flush=True)
    os.environ[STAGE_ENV] = f"train@{experiment}"
    # Torch's matrix products go through Intel MKL, which picks its code path by CPU: on
    # Intel CPUs with AVX-512, seed_logistic's float32 losses differed in the 7th digit
    # from those on AMD CPUs (where MKL takes its generic path), so a committed result
    # reproduced on some CI machines only. MKL's reproducibility mode runs one path on
    # every x86 CPU (the generic one's bytes). Torch's own kernels did not differ.
    os.environ.setdefault(MKL_REPRODUCIBLE[0], MKL_REPRODUCIBLE[1])
    # exec: the stage's exit status and signals are gradtrack's own.
    os.execv(sys.executable, [sys.executable, "-m", "gradtrack", *gradtrack_args])


if __name__ == "__main__":
    main()
