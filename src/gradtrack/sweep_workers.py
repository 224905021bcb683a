"""Joblib sweeps: start the workers while the main process prepares the sweep.

With ``hydra/launcher=joblib`` the main process first composes and checks every job
and opens the store (gradtrack.sweep), and only then does Hydra's launcher start its
loky workers, each of which then imports Hydra, gradtrack, MLflow (and scikit-learn,
matplotlib) during its first job: seconds per worker on the critical path, while a
core sits idle. ``prewarm`` starts the same reusable loky executor at the beginning of
the sweep, with the arguments Hydra's launcher will pass, and has every worker import
what the jobs will need, in parallel with the main process's preparation (its workers
once the jobs are checked). The launcher then finds the executor running and reuses
its workers.

Each warmed worker also keeps Hydra's plugin registry across jobs: Hydra's joblib
``execute_job`` restores the main process's singletons before every job, without the
plugin registry, which it then rebuilds by scanning every installed plugin package.

The workers are forked from one fork server that imports those modules once
(``use_forkserver``), instead of each being a new interpreter that imports them itself.
The server then freezes what it imported (gradtrack.worker_ready), so that the full
collections of its workers skip those objects: loky forces one after each worker's
first job, which took 0.37 s of a worker's 5 s in a 64-job sweep.

What every job shares (Hydra's context, the sweep's config, the task function and
Hydra's singletons, ~90 KB) is pickled once in the main process and unpickled once per
worker (``send_shared_once``), instead of once per job on both sides.

Nothing here changes what a job does: a worker that was not warmed (loky starts a new
one after a crash or an idle timeout) imports the same modules on first use.

Stopping: after SIGTERM or Ctrl-C the main process lets its workers end their runs
KILLED before joblib kills them (``stop_workers``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from gradtrack import forking
from gradtrack.forking import ENV_DIE_WITH, can_fork

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


# The workers the last prewarm in this process warmed, as warm_worker found them (tests
# look at them).
warmed: list[dict[str, Any]] = []


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


def launcher_problem(config: DictConfig) -> str | None:
    """What makes a joblib sweep's launcher settings unusable, or None. Joblib itself
    says it only once the launcher starts, after the sweep's parent run exists, with a
    traceback and every job left not run."""
    kwargs = joblib_kwargs(config)
    if kwargs is None:
        return None
    if kwargs["n_jobs"] == 0:
        return (
            "hydra.launcher.n_jobs=0: no worker would run the jobs. Set a number of "
            "workers (2), or -1 for one per CPU."
        )
    return _joblib_setting_problem(kwargs)


def _joblib_setting_problem(kwargs: dict[str, Any]) -> str | None:
    """The first launcher setting joblib.Parallel refuses, in joblib's words, or None.

    Each setting that is not the launcher's default is tried alone, so that the
    message names it (joblib's own does not always: ``max_nbytes=abc`` gives "Invalid
    literal for size"). Building a Parallel starts no worker.
    """
    from joblib import Parallel

    for key, value in kwargs.items():
        if key in ("n_jobs", "backend") or value == _HYDRA_JOBLIB_DEFAULTS.get(key):
            continue
        try:
            Parallel(**{**_HYDRA_JOBLIB_DEFAULTS, "backend": "loky", key: value})
            if key == "pre_dispatch" and isinstance(value, str) and value != "all":
                _pre_dispatch_amount(value)  # joblib evaluates it only once jobs start
        except Exception as exc:
            return (
                f"hydra.launcher.{key}={value}: {str(exc).rstrip('.')}. Fix or remove the setting "
                "(joblib.Parallel's documentation lists its values)."
            )
    return None


def _pre_dispatch_amount(expression: str) -> int:
    """How many jobs joblib would dispatch at first for an expression like 2*n_jobs."""
    from joblib._utils import eval_expr  # what joblib.Parallel itself uses

    return int(eval_expr(expression.replace("n_jobs", "2")))


def modules_for(config: DictConfig) -> list[str]:
    """What the jobs of a sweep import on their first run (never an unused framework)."""
    mods = ["gradtrack.cli", "gradtrack.train", "hydra_plugins.hydra_joblib_launcher._core"]
    sel = OmegaConf.select
    backends = {sel(config, "backend.name", default="numpy"), *swept_backends(config)}
    mods += [name for name in ("torch", "tensorflow") if name in backends]
    if sel(config, "tracking.enabled", default=True):
        mods += ["mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"]
        mods += ["gradtrack.tracking.run", "gradtrack.tracking.model"]
        if sel(config, "tracking.log_artifacts", default=True):
            mods += ["matplotlib.figure", "matplotlib.backends.backend_agg", "yaml"]
    linear = sel(config, "model.name", default="") in ("linear", "logistic")
    if linear and sel(config, "checks.baseline", default=True):
        mods += ["scipy.linalg", "sklearn.linear_model"]
    return mods


def swept_backends(config: DictConfig) -> list[str]:
    """The backends a sweep's ``backend=...`` override lists (e.g. numpy,torch)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    try:
        overrides = OverridesParser.create().parse_overrides(task)
    except Exception:  # Hydra reports a bad override itself
        return []
    found: list[str] = []
    for o in overrides:
        if o.get_key_element().lstrip("+~") != "backend":
            continue
        if o.is_sweep_override():
            found += [str(v) for v in o.sweep_string_iterator()]
        elif not o.is_delete():
            found.append(o.get_value_element_as_str())
    return found


class Prewarm:
    """A joblib sweep's workers, warmed while the main process prepares the sweep:
    ``prewarm`` starts their server, ``start`` the workers, once the jobs are checked
    (a refused sweep starts none), and ``wait`` waits until they are warm (before the
    launcher starts)."""

    def __init__(self, kwargs: dict[str, Any], modules: list[str]) -> None:
        self._kwargs, self._modules = kwargs, modules
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._warm, name="gradtrack-joblib-warm", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _warm(self) -> None:
        from joblib import Parallel, delayed, effective_n_jobs

        try:
            n = effective_n_jobs(self._kwargs["n_jobs"])
            jobs = (delayed(warm_worker)(self._modules) for _ in range(n))
            seen = Parallel(**self._kwargs)(jobs)
            warmed[:] = list({w["pid"]: w for w in seen}.values())
        except Exception as exc:  # the launcher meets (and reports) the same problem
            log.debug("could not warm the joblib workers: %s", exc)


def prewarm(config: DictConfig) -> Prewarm | None:
    """For a joblib sweep: start the server its workers will be forked from, which
    imports what the jobs need in the background; None for another launcher."""
    kwargs = joblib_kwargs(config)
    if kwargs is None:
        return None
    mods = modules_for(config)
    warmed.clear()
    use_forkserver(mods, kwargs["n_jobs"])
    send_shared_once()
    from gradtrack import interrupts

    interrupts.on_signal(stop_workers)
    return Prewarm(kwargs, mods)


def use_forkserver(modules: list[str], n_jobs: int) -> bool:
    """Have loky fork this sweep's workers from one server that imports ``modules`` once.

    By default each loky worker is a new interpreter that imports Hydra, gradtrack,
    MLflow, matplotlib and scikit-learn itself: on two cores, two workers importing at
    once slow the main process's own start. A fork server imports them once, and each
    worker forked from it starts with them loaded; it ends when this process does.

    The server is forked from this process (``fork_server``) when it runs no thread but
    the main one and has no store open yet: the MLflow modules among ``modules``, which
    this process needs for the store anyway, are imported here first, and the server
    imports the rest. Otherwise it is a new interpreter that imports them all.

    Left alone when a start method was already chosen in this process. Joblib limits
    the workers' BLAS and OpenMP threads through their environment, which loky can only
    pass to workers it starts itself; the server gets those variables (and, forked,
    the same limits on the thread pools already loaded) so the workers forked from it
    have them.
    """
    import multiprocessing.forkserver as forkserver

    from joblib.externals.loky.backend import context as loky_context

    if loky_context.get_start_method() not in (None, "forkserver"):
        return False
    try:
        from joblib import effective_n_jobs
        from joblib._parallel_backends import LokyBackend

        env = LokyBackend()._prepare_worker_env(effective_n_jobs(n_jobs))
    except Exception:  # a joblib without it: the workers inherit this environment
        env = {}
    loky_context.set_start_method("forkserver", force=True)
    # TensorFlow starts threads as it is imported, and a process running TensorFlow's
    # threads is not safe to fork: each worker imports it itself (warm_worker).
    preload = [m for m in modules if m.split(".")[0] != "tensorflow"]
    if can_fork():
        for name in preload:  # what this process imports for the store anyway
            if name.startswith("mlflow."):
                importlib.import_module(name)
        # worker_ready comes last: it freezes what the others imported
        if fork_server([*preload, "gradtrack.worker_ready"], env):
            return True
    forkserver.set_forkserver_preload(["gradtrack.worker_boot", *preload, "gradtrack.worker_ready"])
    if threading.current_thread() is threading.main_thread():
        env[ENV_DIE_WITH] = str(os.getpid())  # the server ends with this process
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        forkserver.ensure_running()  # starts the server; it imports in the background
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return True


# The name ps and top show for a fork server forked from the main process (a spawned
# one shows its command line, "... from multiprocessing.forkserver import main ...").
FORK_SERVER_NAME = "gt-fork-server"
WORKER_NAME = "gt-sweep-worker"


def fork_server(preload: list[str], env: dict[str, str]) -> bool:
    """Fork this process into multiprocessing's fork server, as ``forkserver.ensure_running``
    would spawn it: the same listening socket, "alive" pipe and ``forkserver.main``
    loop; the server imports ``preload`` and then forks each worker loky asks for.
    False (nothing started) if a server already runs."""
    import multiprocessing.forkserver as forkserver
    import socket
    from multiprocessing import connection, resource_tracker, util

    server = forkserver._forkserver
    if server._forkserver_pid is not None:
        return False
    resource_tracker.ensure_running()  # as ensure_running: the workers share it
    listener = socket.socket(socket.AF_UNIX)
    address = connection.arbitrary_address("AF_UNIX")
    listener.bind(address)
    if not util.is_abstract_socket_namespace(address):
        os.chmod(address, 0o600)
    listener.listen()
    # Every client holds the write end; the server ends when the last one goes.
    alive_r, alive_w = os.pipe()
    pid = forking.fork(FORK_SERVER_NAME, sigint=signal.default_int_handler)
    if pid == 0:
        code = 0
        try:
            os.close(alive_w)  # else the server would hold its own pipe open
            os.register_at_fork(after_in_child=_become_worker)
            os.environ.update(env)
            _limit_thread_pools(env)
            forkserver.main(listener.fileno(), alive_r, preload)
        except SystemExit:  # forkserver.main's way out: the main process has gone
            pass
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    listener.close()
    os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True


def _become_worker() -> None:
    """In each worker a forked fork server forks: end with the server, and show as a
    worker in ps (a forked process keeps its parent's name)."""
    forking.die_with_parent()
    forking.set_name(WORKER_NAME)


def _limit_thread_pools(env: dict[str, str]) -> None:
    """In a forked server: apply joblib's thread limits (``env``) to the BLAS and OpenMP
    pools already loaded, which read the variables only when they load."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn requires it; without it the pools stay as they are
        return
    for api, names in (
        ("blas", ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")),
        ("openmp", ("OMP_NUM_THREADS",)),
    ):
        limit = next((env[n] for n in names if env.get(n, "").isdigit()), None)
        if limit is not None:
            threadpool_limits(limits=int(limit), user_api=api)


def warm_worker(modules: list[str]) -> dict[str, Any]:
    """In a loky worker: import the jobs' modules, keep Hydra's plugins across jobs.
    Returns what the worker was like before that (tests look at it)."""
    from gradtrack import gc_schedule

    seen = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        # forked from the fork server: the jobs' modules are already there
        "had_modules": all(name in sys.modules for name in modules),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        # the objects the fork server froze before forking (gradtrack.worker_ready)
        "frozen_objects": gc.get_freeze_count(),
        # forked from a server forked from the main process (fork_server): their names
        "name": _proc_field(os.getpid(), "comm"),
        "server_name": _proc_field(os.getppid(), "comm"),
        "server_parent": _proc_field(os.getppid(), "ppid"),
        "blas_threads": _blas_threads(),
    }
    gc_schedule.configure()  # before the imports, which are most of a worker's collections
    for name in modules:
        with contextlib.suppress(ImportError):  # a job that needs it will say so itself
            importlib.import_module(name)
    keep_plugins_across_jobs()
    return seen


def _blas_threads() -> list[int]:
    """The thread count of each BLAS library loaded (joblib limits them per worker)."""
    if "threadpoolctl" not in sys.modules:  # nothing imported it: not worth importing
        return []
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]


def _proc_field(pid: int, field: str) -> str | None:
    """A process's name (``comm``) or parent's pid (``ppid``) from Linux's /proc."""
    from gradtrack.tracking.owner import process_stat

    stat = process_stat(pid)
    if stat is None:
        return None
    return stat[0] if field == "comm" else stat[1][1]


# After SIGTERM or Ctrl-C, how long the main process waits for its workers to end
# their runs KILLED (a training chunk, then one store call each) before joblib kills
# the workers. Within the 2 s a signalled process may take, with the parent's end.
WORKERS_STOP_SECONDS = 1.3


def worker_pids() -> list[int]:
    """The pids of the loky workers running this process's joblib jobs."""
    if "joblib.externals.loky.reusable_executor" not in sys.modules:
        return []  # no joblib sweep in this process
    from joblib.externals.loky import reusable_executor

    return list(getattr(reusable_executor._executor, "_processes", None) or {})


# How long the main process waits for a warm worker to answer call_in_a_worker before
# doing the work itself (drawing a sweep's overlay takes a worker ~0.2 s).
WORKER_CALL_SECONDS = 30.0


def call_in_a_worker(
    function: Callable, *args: Any, timeout: float = WORKER_CALL_SECONDS, **kwargs: Any
) -> Any:
    """``function(*args, **kwargs)`` in an idle worker of this process's joblib sweep when
    it has live ones, else here (see ``start_in_a_worker``)."""
    started = start_in_a_worker(function, *args, timeout=timeout, **kwargs)
    return started() if started is not None else function(*args, **kwargs)


def start_in_a_worker(
    function: Callable, *args: Any, timeout: float = WORKER_CALL_SECONDS, **kwargs: Any
) -> Callable[[], Any] | None:
    """Start ``function(*args, **kwargs)`` in an idle worker of this process's joblib sweep;
    returns a function that gives its result, waiting for it, or None when this process
    has no live worker. The function and its arguments must pickle.

    A joblib sweep's summary draws its loss overlay after the last job, when the workers
    have matplotlib loaded and nothing to do, while the main process would import it
    first (0.3 s at the sweep's end); the main process writes the summary's tables
    meanwhile. Whatever goes wrong there (no live worker, the pool is gone or broken, no
    answer within ``timeout``, an error) has the work done here instead, when the result
    is asked for, so the caller gets the same result, or the same error, either way.
    """

    if not worker_pids():
        return None
    from joblib.externals.loky import reusable_executor

    try:
        future = reusable_executor._executor.submit(function, *args, **kwargs)
    except Exception as exc:
        log.debug("no joblib worker could take %s (%r): running it here", function, exc)
        return lambda: function(*args, **kwargs)

    def result() -> Any:
        try:
            return future.result(timeout=timeout)
        except Exception as exc:
            future.cancel()
            log.debug("a joblib worker could not run %s (%r): running it here", function, exc)
        return function(*args, **kwargs)

    return result


def stop_workers(signum: int, seconds: float = WORKERS_STOP_SECONDS) -> bool:
    """On SIGTERM or Ctrl-C in a joblib sweep's main process: let the workers end their
    runs KILLED; True once none of their runs is RUNNING any more, False if ``seconds``
    passed first.

    Joblib answers the exception the signal raises in the main process by killing its
    workers outright (SIGKILL), which would leave their runs RUNNING. So the main process
    first waits, within ``seconds``, for the runs to end (a stopped worker keeps still
    until then: see cli._app). A scheduler may signal only the process it started
    (Kubernetes signals a container's first process), so SIGTERM is passed on; Ctrl-C
    reaches the whole process group already, and a second one could cut a worker's own
    clean-up short.
    """
    from gradtrack.sweep import active_sweep

    deadline = time.monotonic() + seconds
    pids = worker_pids()
    sweep = active_sweep()
    if not pids or sweep is None:  # nothing running, or nothing tracked
        return True
    for pid in pids if signum == signal.SIGTERM else ():
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signum)
    while True:
        try:
            running = sweep.running_children(pids, seconds=deadline - time.monotonic())
        except Exception:  # the store does not answer in time: joblib ends the workers
            return False
        if not running:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def release_pool() -> None:
    """Before a stopped joblib sweep's main process exits with ``os._exit``: unlink the
    pool's semaphores, as a normal exit would.

    ``os._exit`` skips multiprocessing's exit finalizers, which unlink them, and its
    resource tracker, which cleans up after a process that dies, then printed "There
    appear to be 3 leaked semaphore objects to clean up at shutdown" under the sweep's
    last line. The finalizers take milliseconds.
    """
    if "joblib.externals.loky.reusable_executor" not in sys.modules:
        return  # no joblib pool in this process
    from multiprocessing import util

    with contextlib.suppress(Exception):  # a clean-up: the exit goes on regardless
        # exit priority 0 and up: each semaphore's unlink, each queue's close (which
        # only wakes its feeder thread); the joins, below 0, are left out
        util._run_finalizers(0)


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


def send_shared_once() -> None:
    """Have Hydra's joblib launcher send what its jobs share once per worker.

    ``hydra_joblib_launcher._core.launch`` hands every job the same Hydra context, sweep
    config, task function and singleton state, and loky pickles them with each job
    (~90 KB, ~7 ms in the main process, whose feeder thread competes with the workers
    for the cores) and each worker unpickles them again for each job (~8 ms). Here the
    launcher's ``delayed`` puts them in one ``SharedArgs``, pickled once; a worker
    unpickles it at its first job and keeps it for the next ones, as a sequential sweep
    keeps them for all its jobs (Hydra sets the singletons from them before each job).
    """
    from hydra_plugins.hydra_joblib_launcher import _core

    if getattr(_core.delayed, "_gradtrack_shares", False):
        return
    from joblib import delayed

    last: list[SharedArgs] = []

    def delayed_sharing(function: Callable) -> Callable:
        if function is not _core.execute_job:
            return delayed(function)

        def call(idx: int, overrides: Any, *shared: Any) -> Any:
            if not last or not last[0].holds(shared):
                last[:] = [SharedArgs(shared)]
            return delayed(execute_job_sharing)(idx, overrides, last[0])

        return call

    delayed_sharing._gradtrack_shares = True  # type: ignore[attr-defined]
    _core.delayed = delayed_sharing


def execute_job_sharing(idx: int, overrides: Any, shared: tuple | SharedArgs) -> Any:
    """Hydra's joblib ``execute_job`` with the arguments a ``SharedArgs`` carried (not
    pickled at all when joblib runs the job in this process: ``n_jobs=1``).

    The steps are those of ``hydra_plugins.hydra_joblib_launcher._core.execute_job``
    (hydra-joblib-launcher 1.2.0, pinned) but one: it sets ``HydraConfig`` from the
    job's config right before ``run_job``, which sets it from the same config twice
    more before anything reads it. Each set is a masked deep copy of the whole config,
    ~8 ms of a small job's ~250 ms in a worker; the basic launcher leaves it to
    ``run_job`` too.

    In a worker, the job's result goes back to the main process without the job's two
    configs (``cfg``, ``hydra_cfg``: ~21 KB, ~3.5 ms to pickle in the worker and ~1.3 ms
    to unpickle in the main process, for every job). Nothing there reads them: Hydra's
    sweepers read the return value, status and overrides, and the callbacks that get a
    job's result (``on_job_end``) run in the worker, before this. The job's folder
    keeps both (``.hydra/config.yaml``, ``.hydra/hydra.yaml``).
    """
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    if isinstance(shared, SharedArgs):
        shared = shared.objects
    hydra_context, config, task_function, singleton_state = shared
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    result = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if multiprocessing.parent_process() is not None:  # pickled back to the main process
        result.cfg = result.hydra_cfg = None
    return result


class SharedArgs:
    """Objects pickled once, however many jobs carry them; a process unpickles them
    once and hands the same objects to every later job (``received``)."""

    def __init__(self, objects: tuple) -> None:
        self.objects = objects
        self.token = uuid.uuid4().hex
        self._blob: bytes | None = None
        self._lock = threading.Lock()

    def holds(self, objects: tuple) -> bool:
        return len(objects) == len(self.objects) and all(
            a is b for a, b in zip(objects, self.objects, strict=True)
        )

    def blob(self) -> bytes:
        with self._lock:  # loky's feeder thread pickles the jobs
            if self._blob is None:
                from joblib.externals import cloudpickle

                self._blob = cloudpickle.dumps(self.objects)
            return self._blob

    def __reduce__(self) -> tuple:
        return received, (self.token, self.blob())


# In a worker: the shared objects of the sweep it runs jobs for (one sweep at a time).
_received: dict[str, tuple] = {}


def received(token: str, blob: bytes) -> tuple:
    """The objects a ``SharedArgs`` carried: unpickled at the first job, kept after."""
    objects = _received.get(token)
    if objects is None:
        import pickle

        _received.clear()
        objects = _received[token] = pickle.loads(blob)
    return objects
