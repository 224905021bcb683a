"""``python -m gradtrack.pipeline.summarise``: one table of every experiment's metrics.

Reads data/metrics/<experiment>.json (written by the train stages) and writes
data/summary.json and data/summary.md (a markdown table), both committed to git.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Columns of the markdown table, in order (the metrics pipeline/outputs.py writes);
# every metric is in summary.json.
COLUMNS = ("final_loss", "final_x", "r2", "accuracy", "baseline/pass", "gradcheck/pass")


def collect(metrics_dir: Path) -> dict[str, dict[str, float]]:
    """{experiment: metrics} for every JSON file in ``metrics_dir``, sorted by name."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted(metrics_dir.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(
                f"{path}: not valid JSON ({exc}); re-run its stage: dvc repro -f train@{path.stem}"
            ) from exc
    return out


def _cell(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.6g}"


def markdown(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| experiment | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, metrics in summary.items():
        cells = [_cell(metrics.get(c)) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradtrack.pipeline.summarise")
    parser.add_argument("--metrics-dir", default="data/metrics")
    parser.add_argument("--json", default="data/summary.json")
    parser.add_argument("--markdown", default="data/summary.md")
    args = parser.parse_args(argv)
    summary = collect(Path(args.metrics_dir))
    if not summary:
        print(f"summarise: error: no metrics in {args.metrics_dir}; run dvc repro", file=sys.stderr)
        return 2
    Path(args.json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    Path(args.markdown).write_text(markdown(summary))
    print(markdown(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
