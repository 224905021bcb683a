"""Peak memory in proportion to the data (issue 13, item 7).

    .venv/bin/python benchmarks/memory.py [--rows 805000]

Builds a ~50 MB regression CSV (the Auto MPG rows repeated with a little noise, the
same seven features), then runs ``gradtrack +experiment=fit_linear epochs=50`` on it
and on the 392-row ``data/regression.csv``, each in a fresh process, tracked and with
``tracking.enabled=false``. The figure is peak RSS (big) minus peak RSS (small): what
the data costs. Target: <= 150 MB (3x the float64 matrix).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Runs `python -m gradtrack ARGS`; at exit writes its own peak RSS (bytes) to argv[1].
_PEAK = """
import atexit, resource, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
sys.argv = ["gradtrack", *sys.argv[2:]]
runpy.run_module("gradtrack", run_name="__main__", alter_sys=True)
"""


def big_csv(path: Path, rows: int, seed: int = 0) -> Path:
    import numpy as np
    import pandas as pd

    small = pd.read_csv(REPO / "data" / "regression.csv")
    rng = np.random.default_rng(seed)
    big = small.iloc[rng.integers(0, len(small), rows)].reset_index(drop=True)
    for c in big.columns:
        big[c] = (big[c] + rng.normal(0, 0.01 * small[c].std(), rows)).round(4)
    big.to_csv(path, index=False)
    return path


def peak_bytes(data: Path, tmp: Path, *extra: str) -> int:
    out = tmp / "peak.txt"
    run = tmp / "run"
    res = subprocess.run(
        [sys.executable, "-c", _PEAK, str(out), "+experiment=fit_linear", "epochs=50"]
        + [f"dataset.path={data}", f"paths.root={REPO}", f"tracking.root={run / 'mlruns'}"]
        + [f"hydra.run.dir={run / 'out'}", *extra],
        cwd=tmp,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return int(out.read_text())


def run_all(rows: int = 805_000) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        big = big_csv(tmp / "big.csv", rows)
        out["csv_mb"] = big.stat().st_size / 1e6
        small = REPO / "data" / "regression.csv"
        for name, extra in (("tracked", ()), ("untracked", ("tracking.enabled=false",))):
            b = peak_bytes(big, tmp, *extra)
            s = peak_bytes(small, tmp, *extra)
            out[name] = {
                "big_peak_mb": b / 1e6,
                "small_peak_mb": s / 1e6,
                "delta_mb": (b - s) / 1e6,
            }
    out["max_delta_mb"] = max(out[k]["delta_mb"] for k in ("tracked", "untracked"))
    return out


if __name__ == "__main__":
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 805_000
    print(json.dumps(run_all(rows), indent=2))
