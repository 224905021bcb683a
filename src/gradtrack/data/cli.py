"""``gradtrack-data``: fetch the raw files and prepare the CSVs under data/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradtrack.errors import GradtrackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gradtrack-data", description="Fetch and prepare gradtrack's datasets."
    )
    parser.add_argument(
        "step",
        nargs="?",
        default="all",
        choices=("fetch", "prepare", "all"),
        help="fetch: raw files into data/raw (sha256-checked); prepare: the CSVs; all: both",
    )
    parser.add_argument("--root", default=".", help="project root (default: current directory)")
    args = parser.parse_args(argv)

    from gradtrack.data.fetch import fetch_all
    from gradtrack.data.prepare import prepare_all

    root = Path(args.root).resolve()
    data_dir = root / "data"
    try:
        if args.step in ("fetch", "all"):
            for p in fetch_all(data_dir / "raw", root):
                print(f"fetched  {p.relative_to(root)}")
        if args.step in ("prepare", "all"):
            for p in prepare_all(data_dir / "raw", data_dir).values():
                print(f"prepared {p.relative_to(root)}")
    except GradtrackError as exc:
        print(f"gradtrack-data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
