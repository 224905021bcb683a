"""``python -m gradtrack.pipeline.train EXPERIMENT [OVERRIDE ...]``: one DVC train stage.

Runs ``gradtrack +experiment=EXPERIMENT`` with the pipeline-wide knobs from
params.yaml (``null`` keeps the experiment's own value) and then the given overrides,
and tells the run which stage it is (an MLflow tag, see lineage.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gradtrack.pipeline.lineage import STAGE_ENV

PARAMS_FILE = "params.yaml"


def param_overrides(params: dict[str, Any], prefix: str = "") -> list[str]:
    """{"optimizer": {"lr": 0.05}, "steps": None} → ["optimizer.lr=0.05"]."""
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


def build_argv(experiment: str, extra: list[str], params_path: Path) -> list[str]:
    params = {}
    if params_path.is_file():
        params = yaml.safe_load(params_path.read_text()) or {}
    if not isinstance(params, dict):
        raise SystemExit(f"{params_path}: expected a mapping of config keys, got {params!r}")
    return [f"+experiment={experiment}", *param_overrides(params), *extra]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        raise SystemExit("usage: python -m gradtrack.pipeline.train EXPERIMENT [OVERRIDE ...]")
    experiment, extra = args[0], args[1:]
    gradtrack_args = build_argv(experiment, extra, Path(PARAMS_FILE))
    print("gradtrack " + " ".join(gradtrack_args), flush=True)
    os.environ[STAGE_ENV] = f"train@{experiment}"
    # exec: the stage's exit status and signals are gradtrack's own.
    os.execv(sys.executable, [sys.executable, "-m", "gradtrack", *gradtrack_args])


if __name__ == "__main__":
    main()
