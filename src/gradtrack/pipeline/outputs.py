"""What a run writes for DVC: a small metrics JSON and the per-step loss CSV.

These files are committed to git with dvc.lock, and CI re-makes them on a fresh clone
and compares bytes, so they are a pure function of code, config and data:

* no timings, timestamps, run ids or paths (those stay in MLflow);
* only the metrics worth a column in ``dvc exp show`` / a line in ``dvc metrics diff``;
* every value rounded to ``SIGNIFICANT`` significant digits, so the last bits of a
  float (summation order in a BLAS or framework kernel) cannot change the bytes.
  MLflow keeps full precision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

SIGNIFICANT = 12

# The metrics a DVC metrics file keeps, in this order, when the run has them.
DVC_METRICS = (
    "final_loss",
    "final_x",
    "r2",
    "accuracy",
    "converged",
    "baseline/pass",
    "gradcheck/pass",
)


def rounded(value: float) -> float:
    """``value`` to SIGNIFICANT significant digits (ints and bools become floats)."""
    return float(f"{float(value):.{SIGNIFICANT}g}")


def dvc_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The DVC subset of a run's metrics, rounded; non-finite values are left out."""
    out: dict[str, float] = {}
    for key in DVC_METRICS:
        value = metrics.get(key)
        if value is not None and math.isfinite(float(value)):
            out[key] = rounded(value)
    return out


def metrics_json(metrics: Mapping[str, float]) -> str:
    return json.dumps(dvc_metrics(metrics), indent=2) + "\n"


def losses_csv(losses: Iterable[float]) -> str:
    """``step,loss`` with one row per step (DVC plots), losses rounded."""
    rows = [f"{i},{float(v):.{SIGNIFICANT}g}" for i, v in enumerate(losses)]
    return "\n".join(["step,loss", *rows]) + "\n"


def write_metrics(path: Path, metrics: Mapping[str, float]) -> None:
    _write(path, metrics_json(metrics))


def write_losses(path: Path, losses: Iterable[float]) -> None:
    _write(path, losses_csv(losses))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Bytes, not text mode: "\n" on every platform, so a checkout compares equal.
    path.write_bytes(text.encode())
