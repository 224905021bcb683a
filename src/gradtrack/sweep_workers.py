"""Joblib sweeps: start the workers while the main process prepares the sweep.

With ``hydra/launcher=joblib`` the main process first composes and checks every job
and opens the store (gradtrack.sweep), and only then does Hydra's launcher start its
loky workers, each of which then imports Hydra, gradtrack, MLflow (and scikit-learn,
matplotlib) during its first job: seconds per worker on the critical path, while a
core sits idle. ``prewarm`` starts the same reusable loky executor at the beginning of
the sweep, with the arguments Hydra's launcher will pass, and has every worker import
what the jobs will need, in parallel with the main process's preparation. The launcher
then finds the executor running and reuses its workers.

Each warmed worker also keeps Hydra's plugin registry across jobs: Hydra's joblib
``execute_job`` restores the main process's singletons before every job, without the
plugin registry, which it then rebuilds by scanning every installed plugin package.

Nothing here changes what a job does: a worker that was not warmed (loky starts a new
one after a crash or an idle timeout) imports the same modules on first use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "JoblibLauncher"
# The launcher's own defaults (hydra_plugins.hydra_joblib_launcher.config); the config
# normally carries all of them.
_HYDRA_JOBLIB_DEFAULTS = {
    "n_jobs": -1,
    "backend": None,
    "prefer": "processes",
    "require": None,
    "verbose": 0,
    "timeout": None,
    "pre_dispatch": "2*n_jobs",
    "batch_size": "auto",
    "temp_folder": None,
    "max_nbytes": None,
    "mmap_mode": "r",
}


# The pids of the workers the last prewarm in this process warmed (tests look at them).
warmed_pids: list[int] = []


def joblib_kwargs(config: DictConfig) -> dict[str, Any] | None:
    """The ``joblib.Parallel`` arguments Hydra's joblib launcher will use, or None
    when the sweep uses another launcher."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    if launcher is None or not str(launcher.get("_target_", "")).endswith(JOBLIB_LAUNCHER):
        return None
    cfg = {**_HYDRA_JOBLIB_DEFAULTS}
    cfg.update(
        {k: v for k, v in OmegaConf.to_container(launcher, resolve=True).items() if k[0] != "_"}
    )
    cfg["backend"] = "loky"  # as hydra_joblib_launcher._core.launch
    for k in ("pre_dispatch", "batch_size", "max_nbytes"):  # ... process_joblib_cfg
        if cfg.get(k):
            with contextlib.suppress(ValueError):
                cfg[k] = int(cfg[k])
    return cfg


def modules_for(config: DictConfig) -> list[str]:
    """What the jobs of a sweep import on their first run (never an unused framework)."""
    mods = ["gradtrack.cli", "gradtrack.train", "hydra_plugins.hydra_joblib_launcher._core"]
    sel = OmegaConf.select
    backend = sel(config, "backend.name", default="numpy")
    if backend == "torch":
        mods.append("torch")
    elif backend == "tensorflow":
        mods.append("tensorflow")
    if sel(config, "tracking.enabled", default=True):
        mods += ["mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"]
        mods += ["gradtrack.tracking.run", "gradtrack.tracking.model"]
        if sel(config, "tracking.log_artifacts", default=True):
            mods += ["matplotlib.figure", "matplotlib.backends.backend_agg", "yaml"]
    linear = sel(config, "model.name", default="") in ("linear", "logistic")
    if linear and sel(config, "checks.baseline", default=True):
        mods += ["scipy.linalg", "sklearn.linear_model"]
    return mods


def prewarm(config: DictConfig) -> Callable[[], None] | None:
    """Start warming a joblib sweep's workers in the background; returns a function that
    waits until they are warm (call it before the launcher starts), or None."""
    kwargs = joblib_kwargs(config)
    if kwargs is None:
        return None
    mods = modules_for(config)
    warmed_pids.clear()

    def warm() -> None:
        from joblib import Parallel, delayed, effective_n_jobs

        try:
            n = effective_n_jobs(kwargs["n_jobs"])
            pids = Parallel(**kwargs)(delayed(warm_worker)(mods) for _ in range(n))
            warmed_pids[:] = sorted(set(pids))
        except Exception as exc:  # the launcher meets (and reports) the same problem
            log.debug("could not warm the joblib workers: %s", exc)

    thread = threading.Thread(target=warm, name="gradtrack-joblib-warm", daemon=True)
    thread.start()
    return thread.join


def warm_worker(modules: list[str]) -> int:
    """In a loky worker: import the jobs' modules, keep Hydra's plugins across jobs."""
    import importlib
    import os

    for name in modules:
        with contextlib.suppress(ImportError):  # a job that needs it will say so itself
            importlib.import_module(name)
    keep_plugins_across_jobs()
    return os.getpid()


def keep_plugins_across_jobs() -> None:
    """Make ``Singleton.set_state`` (called by Hydra before every joblib job) keep this
    process's plugin registry instead of rescanning every plugin package."""
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    original = Singleton.set_state
    if getattr(original, "_gradtrack_keeps_plugins", False):
        return

    def set_state(state: Any) -> None:
        current = Singleton._instances.get(Plugins)
        if current is not None and Plugins not in state["instances"]:
            state = {**state, "instances": {**state["instances"], Plugins: current}}
        original(state)

    set_state._gradtrack_keeps_plugins = True  # type: ignore[attr-defined]
    Singleton.set_state = staticmethod(set_state)  # type: ignore[method-assign]
