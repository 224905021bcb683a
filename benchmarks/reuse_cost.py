"""What reuse costs and saves: the fingerprint, the store lookup, and `make demo` twice.

    .venv/bin/python benchmarks/reuse_cost.py [--quick]     # this section alone

* ``fingerprint``: the code hash (every src/gradtrack/**/*.py, once per process) and
  one run's fingerprint once the code hash is known.
* ``lookup``: the reuse lookup (a tag search on the fingerprint) in a SQLite store
  holding 1000 runs, for a hit and a miss.
* ``demo_twice``: the notebook experiments ``make demo`` runs (reuse=true), twice into
  one fresh store: the second pass over the first, and the runs it added (should be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED_EXPERIMENTS = (
    "seed_backprop",
    "seed_backprop_scaled",
    "seed_quadratic_torch",
    "seed_quadratic_tf",
    "seed_fence",
    "seed_linear",
    "seed_logistic",
    "seed_logistic_tf",
)


def fingerprint_cost(repeats: int = 5) -> dict[str, Any]:
    from gradtrack.tracking import fingerprint as F

    cold = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        F.hash_sources()
        cold.append(time.perf_counter() - t0)
    F.code_version()
    plain = {
        "backend": {"name": "numpy", "dtype": "float64"},
        "optimizer": {"name": "sgd", "lr": 1e-3},
        "dataset": {"name": "auto_mpg", "features": ["a", "b"]},
        "epochs": 200,
        "tracking": {"root": "mlruns"},
    }
    warm = []
    for _ in range(repeats * 20):
        t0 = time.perf_counter()
        F.fingerprint(plain, "0" * 64)
        warm.append(time.perf_counter() - t0)
    return {
        "source_files": len(F.source_files()),
        "code_hash_ms": 1000 * min(cold),
        "fingerprint_ms": 1000 * min(warm),
    }


def lookup_cost(n_runs: int = 1000, repeats: int = 20) -> dict[str, Any]:
    """Time find_matches in a store of ``n_runs`` tagged runs (hit and miss)."""
    import hashlib

    from gradtrack.tracking.fingerprint import TAG
    from gradtrack.tracking.reuse import choose, find_matches
    from gradtrack.tracking.store import ensure_experiment, open_client, resolve_tracking

    with tempfile.TemporaryDirectory() as tmp:
        target = resolve_tracking(None, Path(tmp) / "mlruns")
        client = open_client(target)
        exp = ensure_experiment(client, "gradtrack", target)
        t0 = time.perf_counter()
        fps = []
        for i in range(n_runs):
            fp = hashlib.sha256(str(i).encode()).hexdigest()
            fps.append(fp)
            run = client.create_run(exp, tags={TAG: fp, "model": "linear", "x": str(i)})
            client.set_terminated(run.info.run_id, "FINISHED")
        fill_s = time.perf_counter() - t0
        out: dict[str, Any] = {"runs_in_store": n_runs, "fill_s": fill_s}
        for name, fp in (("hit", fps[n_runs // 2]), ("miss", "f" * 64)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                found = choose(find_matches(client, exp, fp), None)
                times.append(time.perf_counter() - t0)
            assert (found is not None) == (name == "hit")
            out[f"{name}_ms"] = 1000 * min(times)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _count(root: Path) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gradtrack")
    return len(client.search_runs([exp.experiment_id], max_results=10_000)) if exp else 0


def demo_twice(experiments: tuple[str, ...] = SEED_EXPERIMENTS) -> dict[str, Any]:
    """``make demo`` (each experiment with reuse=true) twice into one fresh store."""
    out: dict[str, Any] = {"experiments": list(experiments)}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        root = cwd / "mlruns"
        for attempt in ("first", "second"):
            t0 = time.perf_counter()
            for e in experiments:
                cmd = [sys.executable, "-m", "gradtrack", f"+experiment={e}", "reuse=true"]
                cmd += [f"paths.root={REPO}", f"tracking.root={root}"]
                res = subprocess.run(
                    cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900
                )
                if res.returncode != 0:
                    raise RuntimeError(f"{e} failed:\n{res.stderr[-2000:]}")
                if attempt == "second" and "reused FINISHED run" not in res.stdout:
                    raise RuntimeError(f"{e}: the second `make demo` trained again")
            out[f"{attempt}_s"] = time.perf_counter() - t0
            out[f"runs_after_{attempt}"] = _count(root)
    out["second_over_first"] = out["second_s"] / out["first_s"]
    out["runs_added_by_second"] = out["runs_after_second"] - out["runs_after_first"]
    return out


def run_all(quick: bool = False) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint_cost(repeats=2 if quick else 5),
        "lookup": lookup_cost(n_runs=50 if quick else 1000, repeats=3 if quick else 20),
        "demo_twice": demo_twice(SEED_EXPERIMENTS[:2] if quick else SEED_EXPERIMENTS),
    }


def ratios(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def ratio(value: float, target: float) -> dict[str, Any]:
        return {"value": value, "target": target, "op": "<=", "ok": value <= target}

    d = fig.get("demo_twice")
    if not d:
        return {}
    return {
        # The second pass pays only process start-up and one lookup per experiment.
        "reuse/demo_second_over_first": ratio(d["second_over_first"], 0.6),
        "reuse/demo_runs_added_by_second": ratio(float(d["runs_added_by_second"]), 0.0),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    fig = run_all(args.quick)
    print(json.dumps({"figures": fig, "ratios": ratios(fig)}, indent=2))
