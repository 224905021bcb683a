"""``python -m gradtrack.pipeline.prepare NAME``: make one prepared CSV.

One DVC stage per CSV, so a change that touches one dataset only re-runs the
experiments that read it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradtrack.data import prepare as data_prepare
from gradtrack.data.sources import AUTO_MPG, PIMA
from gradtrack.errors import GradtrackError

DATASETS = ("regression", "classification", "nn_data")


def prepare_one(name: str, root: Path) -> Path:
    """Write data/<name>.csv from data/raw/ (nn_data is generated, it reads no raw file)."""
    data, raw = root / "data", root / "data" / "raw"
    out = data / f"{name}.csv"
    if name == "regression":
        data_prepare.prepare_regression(raw / AUTO_MPG.filename, out)
    elif name == "classification":
        data_prepare.prepare_classification(raw / PIMA.filename, out)
    else:
        data_prepare.make_nn_data(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradtrack.pipeline.prepare")
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--root", default=".", help="project root (default: current directory)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        out = prepare_one(args.name, root)
    except (GradtrackError, OSError) as exc:
        print(f"prepare {args.name}: error: {exc}", file=sys.stderr)
        return 2
    print(f"prepared {out.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
