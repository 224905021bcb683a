"""Fresh-process measurements: start-up per backend, imported modules, and sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "sklearn", "matplotlib", "mlflow", "pandas")

# Runs `python -m gradtrack ARGS` and, at exit, writes the top-level modules it imported.
_WRAPPER = """
import atexit, json, runpy, sys
out = sys.argv[1]
def dump():
    with open(out, "w") as f:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
atexit.register(dump)
sys.argv = ["gradtrack", *sys.argv[2:]]
runpy.run_module("gradtrack", run_name="__main__", alter_sys=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def _timed(cmd: list[str], cwd: Path, timeout: int = 600) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall


def third_party(modules: list[str]) -> list[str]:
    """Top-level third-party packages among ``modules`` (what a bare import must load)."""
    import importlib.util

    std = set(sys.stdlib_module_names)
    names = [m for m in modules if m not in std and not m.startswith("_") and m != "gradtrack"]
    # Some entries are runtime-made modules (cython_runtime) that cannot be imported.
    return sorted(m for m in names if importlib.util.find_spec(m) is not None)


def startup(
    backends: tuple[str, ...] = ("numpy", "torch", "tensorflow"),
    repeats: int = 3,
    experiment: str = "seed_fence",
) -> dict[str, Any]:
    """Wall time of a minimal untracked run per backend, each in a fresh process.

    The floor is ``python -c "import <every third-party package the numpy run loaded>"``.
    """
    out: dict[str, Any] = {"experiment": experiment, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)  # Hydra writes outputs/ here, not into the repository
        for be in backends:
            mods_file = cwd / f"modules_{be}.json"
            args = [f"+experiment={experiment}", f"backend={be}", "tracking.enabled=false"]
            # Only the numpy run has a target; torch/tensorflow get fewer (slow) repeats.
            reps = repeats if be == "numpy" else max(1, repeats - 1)
            walls = [
                _timed([sys.executable, "-c", _WRAPPER, str(mods_file), *args], cwd)
                for _ in range(reps)
            ]
            mods = json.loads(mods_file.read_text())
            out["backends"][be] = {
                "wall_s": min(walls),
                "wall_s_all": [round(w, 3) for w in walls],
                "imports": {m: m in mods for m in HEAVY},
                "third_party": third_party(mods),
            }
        libs = out["backends"].get("numpy", {}).get("third_party", ["hydra", "numpy"])
        bare = "import " + ", ".join(libs)
        walls = [_timed([sys.executable, "-c", bare], cwd) for _ in range(repeats)]
        out["bare_import"] = {"command": f'python -c "{bare}"', "wall_s": min(walls)}
        walls = [_timed([sys.executable, "-c", "pass"], cwd) for _ in range(repeats)]
        out["bare_python_s"] = min(walls)
    return out


SWEEP_ARGS = [
    "-m",
    "backend=numpy,torch,tensorflow",
    "optimizer=sgd,adam",
    "optimizer.lr=0.01,0.05",
    "+experiment=seed_linear",
    "dataset.standardize=true",  # raw cylinders diverge at lr=0.05 with sgd
    "reuse=false",  # measured sweeps always train
]


def sweep(n_jobs: int = 2) -> dict[str, Any]:
    """The same 12-job tracked sweep with the basic (sequential) and joblib launchers."""
    from gradtrack.tracking import resolve_tracking
    from gradtrack.tracking.store import ensure_experiment

    out: dict[str, Any] = {"jobs": 12, "n_jobs": n_jobs, "args": SWEEP_ARGS}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for name, extra in (
            ("sequential", []),
            ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]),
        ):
            root = cwd / name
            # Create the store and experiment first, so parallel jobs never race on them.
            from mlflow.tracking import MlflowClient

            target = resolve_tracking(None, root / "mlruns")
            ensure_experiment(MlflowClient(tracking_uri=target.uri), "gradtrack", target)
            cmd = [
                sys.executable,
                "-m",
                "gradtrack",
                *SWEEP_ARGS,
                f"paths.root={REPO}",
                f"tracking.root={root / 'mlruns'}",
                f"hydra.sweep.dir={root / 'multirun'}",
                *extra,
            ]
            out[f"{name}_s"] = _timed(cmd, cwd, timeout=900)
    out["parallel_over_sequential"] = out["joblib_s"] / out["sequential_s"]
    return out
