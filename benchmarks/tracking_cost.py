"""Tracking's share of the work, each figure next to its reference in the same run.

* growth: a run of 1e4 and of 1e6 (quick: 1e5) steps, tracked and untracked,
  in-process; tracking's cost must grow no faster than the training it tracks.
* store: how much the SQLite database grows for one run of each length.
* signal: SIGTERM during training and during a long flush, process gone in seconds.
* fixed: the per-run cost of tracking in a warm process (a sweep's jobs), model included.
* process: ``gradtrack +experiment=fit_linear`` vs the plain MLflow script a user
  would write instead (benchmarks/plain_mlflow.py), whole processes, interleaved.
* sweep64: a 64-job fit_linear_1d numpy sweep with the basic launcher vs one
  single-run process, and with joblib n_jobs=2 vs basic (medians of 3 interleaved
  repeats).
* sweep_long_jobs (no target): joblib n_jobs=2 vs basic on 32 jobs that train for
  about a second each.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gradtrack.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def _run_seconds(*overrides: str) -> float:
    from gradtrack import train

    cfg = _compose(*overrides, f"paths.root={REPO}")
    t0 = time.perf_counter()
    train.run(cfg)
    return time.perf_counter() - t0


def growth(lengths: tuple[int, int] = (10_000, 1_000_000)) -> dict[str, Any]:
    """(tracked growth) / (untracked growth) between two run lengths, plus DB growth."""
    from gradtrack.tracking.store import store_size

    out: dict[str, Any] = {"lengths": list(lengths), "experiment": "fit_linear_1d"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mlruns"
        db = root / "mlflow.db"
        base = ("+experiment=fit_linear_1d", "checks.gradcheck=false", "checks.baseline=false")
        _run_seconds(*base, "epochs=10", f"tracking.root={root}")  # store, imports, caches
        _run_seconds(*base, "epochs=10", "tracking.enabled=false")
        for n in lengths:
            off = _run_seconds(*base, f"epochs={n}", "tracking.enabled=false")
            size0 = store_size(db)
            on = _run_seconds(*base, f"epochs={n}", f"tracking.root={root}")
            out[str(n)] = {
                "untracked_s": off,
                "tracked_s": on,
                "db_growth_bytes": store_size(db) - size0,
            }
    a, b = (out[str(n)] for n in lengths)
    out["tracked_growth_over_untracked_growth"] = (b["tracked_s"] - a["tracked_s"]) / (
        b["untracked_s"] - a["untracked_s"]
    )
    out["max_db_growth_bytes"] = max(out[str(n)]["db_growth_bytes"] for n in lengths)
    return out


def fixed(repeats: int = 5) -> dict[str, Any]:
    """Warm, in-process: whole tracked run minus whole untracked run (fit_linear)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mlruns"
        on_args = ("+experiment=fit_linear", f"tracking.root={root}")
        off_args = ("+experiment=fit_linear", "tracking.enabled=false")
        _run_seconds(*on_args)
        _run_seconds(*off_args)
        on, off = [], []
        for _ in range(repeats):  # interleaved, so load changes hit both sides
            on.append(_run_seconds(*on_args))
            off.append(_run_seconds(*off_args))
    return {
        "tracked_s": on,
        "untracked_s": off,
        "fixed_per_run_s": statistics.median(on) - statistics.median(off),
        "includes": "params, tags, 800 per-step points, final metrics, dataset input, "
        "config/overrides/history/PNG artifacts, LoggedModel",
    }


def _wait_running(uri: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.communicate()[1][-2000:])
        exp = client.get_experiment_by_name("gradtrack")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs:
            return runs[0].info.run_id
        time.sleep(0.2)
    raise RuntimeError("the run never appeared")


def signal_latency() -> dict[str, Any]:
    """Seconds from SIGTERM to process exit: during training, and during a long flush."""
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking.store import ensure_experiment, resolve_tracking

    out: dict[str, Any] = {}
    cases = {
        "training_numpy": ["+experiment=fit_linear"],
        "training_tensorflow": ["+experiment=fit_linear", "backend=tensorflow"],
        "flush_unbudgeted": [
            "+experiment=fit_linear_1d",
            "tracking.max_points=0",
            "tracking.flush_every=1",
        ],
    }
    for name, args in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "mlruns"
            target = resolve_tracking(None, root)
            ensure_experiment(MlflowClient(tracking_uri=target.uri), "gradtrack", target)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gradtrack", "epochs=100000000", *args]
                + [f"tracking.root={root}", f"paths.root={REPO}", f"hydra.run.dir={tmp}/out"],
                cwd=tmp,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                run_id = _wait_running(target.uri, proc)
                if name.startswith("flush"):
                    client = MlflowClient(tracking_uri=target.uri)
                    while not client.get_metric_history(run_id, "Training/loss"):
                        time.sleep(0.2)
                else:
                    time.sleep(6.0)
                t0 = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
                out[name] = {"seconds": time.perf_counter() - t0, "exit": proc.returncode}
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    out["max_seconds"] = max(v["seconds"] for v in out.values() if isinstance(v, dict))
    return out


def _wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} … failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0


def process_vs_plain(repeats: int = 4) -> dict[str, Any]:
    """Whole processes, interleaved: gradtrack's fit_linear vs the plain MLflow script."""
    data = REPO / "data" / "regression.csv"
    gt, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for i in range(repeats):
            gt.append(
                _wall(
                    [sys.executable, "-m", "gradtrack", "+experiment=fit_linear"]
                    + [f"paths.root={REPO}", f"tracking.root={cwd / f'g{i}'}"],
                    cwd,
                )
            )
            plain.append(
                _wall(
                    [sys.executable, str(REPO / "benchmarks" / "plain_mlflow.py"), str(data)]
                    + [str(cwd / f"p{i}")],
                    cwd,
                )
            )
    return {
        "gradtrack_s": gt,
        "plain_mlflow_s": plain,
        "gradtrack_over_plain": statistics.median(gt) / statistics.median(plain),
    }


def _sweep_wall(cwd: Path, name: str, overrides: list[str], extra: list[str]) -> float:
    """Wall seconds of one ``gradtrack -m`` sweep, its store and outputs under cwd/name."""
    return _wall(
        [sys.executable, "-m", "gradtrack", "-m", *overrides]
        + [f"tracking.root={cwd / name}", f"hydra.sweep.dir={cwd / name / 'multirun'}"]
        + extra,
        cwd,
    )


def sweep64(n_jobs: int = 2, jobs: int = 64, repeats: int = 3) -> dict[str, Any]:
    """A 64-job numpy sweep (basic, joblib) against one single-run process.

    Each is run ``repeats`` times, interleaved (single run, basic, joblib, then again),
    each time on a new store, and the ratios are those of the medians: one sample of a
    ~10 s sweep moves by 10% between identical runs on this machine.
    """
    lrs = ",".join(f"{0.01 + 0.1 * i / jobs:.5f}" for i in range(jobs))
    base = ["+experiment=fit_linear_1d", "backend=numpy", f"paths.root={REPO}", "reuse=false"]
    out: dict[str, Any] = {"jobs": jobs, "n_jobs": n_jobs, "repeats": repeats}
    samples: dict[str, list[float]] = {"single_run_s": [], "basic_s": [], "joblib_s": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            samples["single_run_s"].append(
                _wall(
                    [sys.executable, "-m", "gradtrack", *base, f"tracking.root={cwd / 'single'}"],
                    cwd,
                )
            )
            for name, extra in (
                ("basic", []),
                ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]),
            ):
                samples[f"{name}_s"].append(
                    _sweep_wall(cwd, name, [*base, f"optimizer.lr={lrs}"], extra)
                )
                finished, jobs_s = _children(cwd / name)
                key = f"{name}_finished_children"
                out[key] = min(out.get(key, finished), finished)  # the worst of the repeats
                samples.setdefault(f"{name}_jobs_s", []).append(jobs_s)
    for key, values in samples.items():
        out[key] = statistics.median(values)
        out[key.replace("_s", "_samples_s")] = values
    out["basic_over_single_run"] = out["basic_s"] / out["single_run_s"]
    out["joblib_over_basic"] = out["joblib_s"] / out["basic_s"]
    # Not a target: how well two workers share the jobs themselves. The rest of each
    # sweep (the main process's start, the checks, the store, the summary) is serial.
    out["joblib_over_basic_jobs_only"] = out["joblib_jobs_s"] / out["basic_jobs_s"]
    return out


def sweep_long_jobs(n_jobs: int = 2, jobs: int = 32, epochs: int = 150_000) -> dict[str, Any]:
    """Not a target: the joblib / basic figure for jobs that each train for about a
    second (150,000 epochs; a job cost ~1.3 s when the 64-job target was set), where the
    sweep's serial part is a small share. One sample each, basic first."""
    lrs = ",".join(f"{0.01 + 0.1 * i / jobs:.5f}" for i in range(jobs))
    base = ["+experiment=fit_linear_1d", "backend=numpy", f"paths.root={REPO}", "reuse=false"]
    base += [f"epochs={epochs}", f"optimizer.lr={lrs}"]
    out: dict[str, Any] = {"jobs": jobs, "n_jobs": n_jobs, "epochs": epochs}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for name, extra in (
            ("basic", []),
            ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]),
        ):
            out[f"{name}_s"] = _sweep_wall(cwd, name, base, extra)
            out[f"{name}_finished_children"], out[f"{name}_jobs_s"] = _children(cwd / name)
    out["basic_per_job_s"] = out["basic_jobs_s"] / jobs
    out["joblib_over_basic"] = out["joblib_s"] / out["basic_s"]
    out["joblib_over_basic_jobs_only"] = out["joblib_jobs_s"] / out["basic_jobs_s"]
    return out


def _children(root: Path) -> tuple[int, float]:
    """(FINISHED child runs, seconds from the first child's start to the last one's end:
    the sweep's job phase, without the main process's start and summary)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gradtrack")
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    finished = sum(1 for r in kids if r.info.status == "FINISHED")
    if not kids or any(r.info.end_time is None for r in kids):
        return finished, float("nan")
    start = min(r.info.start_time for r in kids)
    return finished, (max(r.info.end_time for r in kids) - start) / 1000


def run_all(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["growth"] = growth((1_000, 10_000) if quick else (10_000, 1_000_000))
    out["fixed"] = fixed(repeats=1 if quick else 5)
    out["process"] = process_vs_plain(repeats=1 if quick else 4)
    out["signal"] = signal_latency()
    out["sweep64"] = sweep64(jobs=4 if quick else 64, repeats=1 if quick else 3)
    out["sweep_long_jobs"] = sweep_long_jobs(
        jobs=4 if quick else 32, epochs=1000 if quick else 150_000
    )
    return out


TARGETS = {
    "tracking_cost/tracked_growth_over_untracked_growth": (
        ("growth", "tracked_growth_over_untracked_growth"),
        1.05,
    ),
    "tracking_cost/db_growth_per_run_MB": (("growth", "max_db_growth_bytes"), 1.0),
    "tracking_cost/sigterm_to_exit_s": (("signal", "max_seconds"), 2.0),
    "tracking_cost/fixed_per_run_s": (("fixed", "fixed_per_run_s"), 0.3),
    "tracking_cost/process_over_plain_mlflow": (("process", "gradtrack_over_plain"), 1.2),
    "tracking_cost/sweep64_basic_over_single_run": (("sweep64", "basic_over_single_run"), 4.0),
    "tracking_cost/sweep64_joblib_over_basic": (("sweep64", "joblib_over_basic"), 0.65),
}


def ratios(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    r: dict[str, dict[str, Any]] = {}
    for name, ((section, key), target) in TARGETS.items():
        value = fig.get(section, {}).get(key)
        if value is not None and name.endswith("_MB"):
            value = value / 1e6
        r[name] = {
            "value": value,
            "target": target,
            "op": "<=",
            "ok": None if value is None else value <= target,
        }
    return r


if __name__ == "__main__":
    import json

    quick = "--quick" in sys.argv
    figures = run_all(quick)
    print(json.dumps({"figures": figures, "ratios": ratios(figures)}, indent=2))
