"""In-process measurements: per-step cost per backend, scaling, and tracking cost.

Every function returns plain dicts of numbers so run.py can tabulate and store them.
Timings take the minimum over repeats: on a shared machine the minimum is the best
estimate of what the code itself costs (other processes only ever add time).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# The two fits the per-step figures use: all features, standardized, float64, full batch.
PROBLEMS = {
    "fit_linear": ["dataset=auto_mpg", "model=linear"],
    "fit_logistic": ["dataset=pima", "model=logistic"],
}
COMMON = ["dataset.features=[]", "dataset.standardize=true", "backend.dtype=float64"]
# (label, backend name, eager)
BACKENDS = [
    ("numpy", "numpy", False),
    ("torch", "torch", False),
    ("tensorflow", "tensorflow", False),
    ("tensorflow_eager", "tensorflow", True),
]


def compose(*overrides: str, root: Path = REPO):
    """Compose conf/ exactly like the CLI (data under ``root``) and return the Config."""
    from gradtrack.config import compose as compose_config

    return compose_config([f"paths.root={root}", *overrides], CONF)


def _trainer(cfg, backend: str, eager: bool, ds=None):
    """The backend's trainer for ``cfg``, built as train.run builds it (float64)."""
    import dataclasses

    from gradtrack.build import build_trainer, prepare

    if ds is None:
        _, ds = prepare(cfg)
    be = dataclasses.replace(cfg.backend, name=backend, eager=eager, dtype="float64")
    return build_trainer(dataclasses.replace(cfg, backend=be), ds), ds


def _time_run(trainer, n: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.run(n)
        out.append((time.perf_counter() - t0) / n)
    return out


def per_step(
    problems: tuple[str, ...] = tuple(PROBLEMS),
    backends: list[tuple[str, str, bool]] = BACKENDS,
    steps: int = 500,
    eager_steps: int = 20,
    repeats: int = 5,
    root: Path = REPO,
) -> dict[str, dict[str, dict[str, float]]]:
    """µs per training step, warm-up (and TF tracing) excluded: {problem: {backend: {...}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for prob in problems:
        cfg = compose(*PROBLEMS[prob], *COMMON, root=root)
        out[prob] = {}
        ds = None
        for label, name, eager in backends:
            trainer, ds = _trainer(cfg, name, eager, ds)
            n = eager_steps if eager else steps
            trainer.run(n)  # warm-up: TF traces the loop, torch/numpy fill caches
            times = _time_run(trainer, n, repeats)
            out[prob][label] = {
                "us_per_step": min(times) * 1e6,
                "us_per_step_median": float(np.median(times)) * 1e6,
                "steps_timed": n * repeats,
                "rows": ds.n_rows,
                "features": ds.n_features,
            }
    return out


def scaling(
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000),
    d: int = 100,
    target_seconds: float = 0.6,
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Numpy step time on dataset=synthetic vs the two matvecs (X·w, Xᵀ·r) a step needs.

    Step and matvec chunks alternate, so both see the same machine load.
    """
    from gradtrack.data.load import load_dataset

    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        cfg = compose(
            "dataset=synthetic",
            "model=linear",
            f"dataset.n_samples={n}",
            f"dataset.n_features={d}",
            "backend.dtype=float64",
        )
        ds = load_dataset(cfg.dataset, None, cfg.dataset.task)
        ds.X_raw = None  # only X and y are needed (frame is built from X_raw): keep 1e6 small
        trainer, _ = _trainer(cfg, "numpy", False, ds)
        X, w, r = ds.X, np.zeros(d), np.ones(n)
        trainer.run(1)
        t0 = time.perf_counter()
        trainer.run(1)
        k = max(1, min(200, int(target_seconds / repeats / max(time.perf_counter() - t0, 1e-9))))
        steps, mv = [], []
        for _ in range(repeats):
            steps += _time_run(trainer, k, 1)
            t0 = time.perf_counter()
            for _ in range(k):
                X @ w
                X.T @ r
            mv.append((time.perf_counter() - t0) / k)
        out[str(n)] = {
            "n": n,
            "d": d,
            "steps_timed": k * repeats,
            "step_ms": min(steps) * 1e3,
            "two_matvecs_ms": min(mv) * 1e3,
            "step_over_matvecs": min(steps) / min(mv),
        }
        del trainer, ds, X
    ns = sorted(out.values(), key=lambda v: v["n"])
    for a, b in zip(ns, ns[1:]):
        b["growth_vs_prev"] = b["step_ms"] / a["step_ms"]
        b["rows_vs_prev"] = b["n"] / a["n"]
    return out


class _TimedTracker:
    """Wraps the real tracker and adds up the seconds spent in each of its methods."""

    def __init__(self, inner: Any, seconds: dict[str, float]):
        self._inner = inner
        self.seconds = seconds

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        return timed

    def __enter__(self):
        t0 = time.perf_counter()
        self._inner.__enter__()
        self.seconds["create_run"] = time.perf_counter() - t0
        return self

    def __exit__(self, *exc):
        t0 = time.perf_counter()
        try:
            return self._inner.__exit__(*exc)
        finally:
            self.seconds["end_run(flush+terminate)"] = time.perf_counter() - t0


def _tracked_run(cfg, seconds: dict[str, float] | None):
    """train.run(cfg); with ``seconds``, every tracker call is timed (same real store)."""
    import gradtrack.tracking as tracking
    from gradtrack import train

    real = tracking.open_run
    if seconds is not None:
        tracking.open_run = lambda *a, **kw: _TimedTracker(real(*a, **kw), seconds)
    try:
        t0 = time.perf_counter()
        res = train.run(cfg)
        return res, time.perf_counter() - t0
    finally:
        tracking.open_run = real


def tracking_cost(steps: int = 1000, repeats: int = 3, naive_values: int = 200) -> dict[str, Any]:
    """The same numpy fit_linear run with tracking on (SQLite in a temp dir) and off."""
    import logging
    import warnings

    # MLflow's INFO lines and model-logging warnings would bury the benchmark's table.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    base = [
        *PROBLEMS["fit_linear"],
        *COMMON,
        "backend=numpy",
        f"epochs={steps}",
        "progress_min_epochs=1000000000",  # no progress bar on the benchmark's terminal
    ]
    off_cfg = compose(*base, "tracking.enabled=false")
    out: dict[str, Any] = {"steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        on_cfg = compose(*base, f"tracking.root={tmp}/mlruns")
        _tracked_run(on_cfg, None)  # warm-up: imports mlflow, creates the store schema
        _tracked_run(off_cfg, None)
        loops = {"on": [], "off": []}
        wholes = {"on": [], "off": []}
        parts: list[dict[str, float]] = []
        for _ in range(repeats):
            for key, cfg in (("off", off_cfg), ("on", on_cfg)):
                seconds: dict[str, float] = {}
                res, wall = _tracked_run(cfg, seconds if key == "on" else None)
                loops[key].append(res.metrics["train_seconds"])
                wholes[key].append(wall)
                if key == "on":
                    parts.append(seconds)
        best = int(np.argmin(wholes["on"]))
        out.update(
            {
                "loop_s_off": min(loops["off"]),
                "loop_s_on": min(loops["on"]),
                "run_s_off": min(wholes["off"]),
                "run_s_on": min(wholes["on"]),
                # Tracking work outside the training loop: the per-run price of tracking.
                "fixed_per_run_s": (min(wholes["on"]) - min(loops["on"]))
                - (min(wholes["off"]) - min(loops["off"])),
                "tracker_calls_s": {k: round(v, 6) for k, v in parts[best].items()},
            }
        )
        out.update(metric_logging(Path(tmp), naive_values))
    return out


def metric_logging(tmp: Path, naive_values: int = 200, batched_steps: int = 1000) -> dict:
    """µs per metric value: mlflow.log_metric per step vs gradtrack's batched logging."""
    import mlflow

    from gradtrack.tracking import open_run, resolve_tracking

    target = resolve_tracking(None, tmp / "mlruns_logging")
    losses = np.linspace(1.0, 0.1, batched_steps)
    with open_run(True, target, "bench_logging", "batched") as trk:  # creates the store
        # First batch pays one-off lookups (as the naive side's first call below does);
        # then the best of three, each 2 x batched_steps new points.
        trk.log_step_metrics(0, {"loss": losses[:10], "grad_norm": losses[:10]})
        trk.flush()
        times = []
        for rep in range(3):
            t0 = time.perf_counter()
            start = 10 + rep * batched_steps
            trk.log_step_metrics(start, {"loss": losses, "grad_norm": losses})
            trk.flush()
            times.append(time.perf_counter() - t0)
        batched = min(times) / (2 * batched_steps)
    mlflow.set_tracking_uri(target.uri)
    mlflow.set_experiment("bench_logging")
    with mlflow.start_run(run_name="naive"):
        mlflow.log_metric("loss", 1.0, step=0)  # first call pays one-off lookups
        t0 = time.perf_counter()
        for i in range(naive_values):
            mlflow.log_metric("loss", float(losses[i % batched_steps]), step=i + 1)
        naive = (time.perf_counter() - t0) / naive_values
    return {
        "us_per_value_naive_log_metric": naive * 1e6,
        "us_per_value_batched": batched * 1e6,
        "naive_values": naive_values,
        "batched_values": 2 * batched_steps,
    }
