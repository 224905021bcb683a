"""The ``gradtrack`` command: one Hydra app composing conf/ into a run."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from gradtrack import gc_schedule, interrupts, run_compose
from gradtrack.config import register_configs, to_typed
from gradtrack.errors import DivergedError, GradtrackError

PRINT_TRACE_MAX_STEPS = 200
ENV_CONFIG_DIR = "GRADTRACK_CONFIG_DIR"
# After SIGTERM a sweep's parent run is ended KILLED within this long: the run that was
# training has already used up to a second of the 2 s a signalled process may take.
SWEEP_KILLED_SECONDS = 0.5
# A joblib worker stopped by a signal exits after this long if nobody ends it first.
WORKER_LINGER_SECONDS = 5.0


def is_project_conf(conf: Path) -> bool:
    """A gradtrack project's conf/: its config.yaml composes gradtrack's schema."""
    try:
        text = (conf / "config.yaml").read_text()
    except OSError:
        return False
    return any(line.split("#")[0].strip() == "- config_schema" for line in text.splitlines())


def find_config_dir(cwd: Path | None = None) -> str:
    """The config folder the app composes; the first of (README "Which configs win"):

    1. ``$GRADTRACK_CONFIG_DIR``: the user asked for it;
    2. the ``conf/`` of the gradtrack project you are in (the working directory or a
       parent of it), so a checkout's edited configs are used from inside it;
    3. the source checkout's ``conf/`` when gradtrack runs from one (src/ layout);
    4. the configs packaged with gradtrack (``gradtrack/conf``, copied from conf/ at build).
    """
    explicit = os.environ.get(ENV_CONFIG_DIR)
    if explicit:
        return str(Path(explicit).expanduser().resolve())
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_project_conf(folder / "conf"):
            return str(folder / "conf")
    package = Path(__file__).resolve().parent
    if package.parent.name == "src" and is_project_conf(package.parents[1] / "conf"):
        return str(package.parents[1] / "conf")
    return str(package / "conf")


CONF_DIR = find_config_dir()

register_configs()


def _fmt(value: float, dtype: str) -> str:
    # float32 values print as float32 (the notebook's "-0.9760001"), not as doubles.
    return str(np.float32(value)) if dtype == "float32" else repr(float(value))


def print_trace(result, dtype: str) -> None:
    if len(result.losses) > PRINT_TRACE_MAX_STEPS:
        return
    for i, loss in enumerate(result.losses):
        line = f"step {i + 1:>4}  loss {_fmt(loss, dtype)}"
        if result.values is not None:
            line += f"  x {_fmt(result.values[i], dtype)}"
        print(line)


def print_summary(result, cfg) -> None:
    """The run's results, then its MLflow run. In a sweep the run line names the job,
    and the whole block goes out in one write: a joblib sweep's jobs print at once."""
    keys = [
        k
        for k in (
            "final_loss",
            "final_x",
            "r2",
            "accuracy",
            "baseline/coef_max_rel_err",
            "baseline/pass",
            "gradcheck/max_rel_err",
            "epochs_per_second",
        )
        if k in result.metrics
    ]
    lines = [f"{k:>28}: {result.metrics[k]:.10g}" for k in keys]
    if result.coef_ is not None:
        lines.append(f"{'coef_':>28}: {np.array2string(result.coef_, precision=6)}")
        lines.append(f"{'intercept_':>28}: {result.intercept_:.6f}")
    if result.run_id:
        from gradtrack.tracking import naming

        job = naming.current_job()
        lines.append(
            f"MLflow run {result.run_id} (experiment '{cfg.tracking.experiment}'"
            + (f", job {job})" if job else ")")
        )
    print("\n".join(lines), flush=True)


def say_which_run(exc: BaseException, status: str, experiment: str | None = None) -> None:
    """After a single run's error or stop: which MLflow run it ended, as a finished run's
    last line names its run (train.run marks the exception with it)."""
    run_id = getattr(exc, "gradtrack_run_id", None)
    experiment = experiment or getattr(exc, "gradtrack_experiment", None)
    if run_id:
        where = f", experiment '{experiment}'" if experiment else ""
        print(f"MLflow run {run_id} ({status}{where})", file=sys.stderr)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: after a signal, the grace period before
    SIGKILL is short, and unloading TensorFlow alone can take seconds. Everything that
    matters (the run's end status, its metrics) is already in the store."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _in_joblib_worker(hc) -> bool:
    """Whether this job runs in a worker process of Hydra's joblib launcher (with
    n_jobs=1 joblib runs the jobs in the main process itself)."""
    from gradtrack.sweep_workers import JOBLIB_LAUNCHER

    target = str(OmegaConf.select(hc, "launcher._target_", default="") or "")
    return target.endswith(JOBLIB_LAUNCHER) and multiprocessing.parent_process() is not None


def _pickles(exc: Exception) -> bool:
    """Whether ``exc`` survives pickling.

    Hydra's joblib launcher sends a failed job's exception back to the main process.
    One that cannot be rebuilt there (an exception class whose ``__init__`` takes other
    arguments than its message) breaks joblib's whole pool: every other worker is
    killed, their runs stay RUNNING, and the sweep's remaining jobs never run. Such an
    exception is sent as a RuntimeError naming its type and message instead.
    """
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


def _stop_worker(code: int) -> None:
    """A joblib worker whose run a signal ended (KILLED): take no further job, and exit.

    Not at once: loky kills every other worker of the pool as soon as one exits, which
    would cut their own runs' ends short. The main process waits until its workers'
    runs have ended and then ends the pool (sweep_workers.stop_workers); a worker whose
    main process has gone exits by itself after WORKER_LINGER_SECONDS.
    """
    import signal
    import time

    interrupts.acknowledge()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    time.sleep(WORKER_LINGER_SECONDS)
    _exit_now(code)


def _finish_sweep(sigterm: bool) -> None:
    """End the interrupted sweep's parent run now (os._exit skips atexit hooks).

    After Ctrl-C the parent gets its partial summary. After SIGTERM the grace period
    before SIGKILL is short: the parent is only ended KILLED, within a second; the same
    command resumes the sweep and writes the summary.
    """
    from contextlib import suppress

    from gradtrack.sweep import active_sweep

    sweep = active_sweep()
    if sweep is None:
        return
    if sigterm:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):  # the process ends within the second
            signal.signal(sig, signal.SIG_IGN)
        sweep.end_killed("SIGTERM", seconds=SWEEP_KILLED_SECONDS)
        return
    sweep.interrupted = True
    with suppress(Exception):
        sweep.finish()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gradtrack import train

    gc_schedule.configure()  # also in sweep workers, which do not go through main()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    interrupts.install()
    try:
        obj = to_typed(cfg)
        result = train.run(obj, list(hc.overrides.task))
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        if multirun and _in_joblib_worker(hc):
            _stop_worker(143 if isinstance(exc, interrupts.Terminated) else 130)
        raise
    except MissingMandatoryValue as exc:
        key = exc.full_key
        print(
            f"gradtrack: error: {key}: a required value is missing (???); set it on the "
            f"command line, e.g. {key}=...",
            file=sys.stderr,
        )
        sys.exit(2)
    except Exception as exc:
        if not multirun and isinstance(exc, GradtrackError):
            print(f"gradtrack: error: {exc}", file=sys.stderr)
            say_which_run(exc, "FAILED", cfg.tracking.experiment)
            # 1: the run failed; 2: bad input (config, data, store), before any run
            sys.exit(1 if isinstance(exc, DivergedError) else 2)
        # In a sweep Hydra records the failed job and carries on with the others.
        if multirun and _in_joblib_worker(hc) and not _pickles(exc):
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise
    if not multirun:  # a sweep's jobs would print 200 lines each: their summary says it
        print_trace(result, obj.backend.dtype)
    print_summary(result, obj)
    return result.metrics.get(obj.sweep_metric)


def version() -> str:
    """gradtrack's installed version, or the package's own when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("gradtrack")
    except PackageNotFoundError:
        from gradtrack import __version__

        return __version__


def main() -> float | None:
    """The console entry point: a bad override is an input error (message, exit 2)."""
    from hydra.errors import CompactHydraException

    from gradtrack.hydra_errors import explain

    gc_schedule.configure()
    interrupts.install()  # also the main process of a sweep whose jobs run elsewhere
    if "--version" in sys.argv[1:]:  # Hydra's own --version would print Hydra's
        from hydra import __version__ as hydra_version

        print(f"gradtrack {version()} (Hydra {hydra_version}, Python {sys.version.split()[0]})")
        return None
    if os.environ.get(ENV_CONFIG_DIR) and not (Path(CONF_DIR) / "config.yaml").is_file():
        print(
            f"gradtrack: error: {ENV_CONFIG_DIR}={os.environ[ENV_CONFIG_DIR]}: no config.yaml "
            "there. Point it at a gradtrack conf/ folder, or unset it to use the packaged configs.",
            file=sys.stderr,
        )
        sys.exit(2)

    # Make Hydra re-raise composition errors instead of printing its own report and
    # exiting 1; restored afterwards so nothing else sees the setting.
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with run_compose.once():  # Hydra would compose a single run's config twice
            result = _app()
        sweep = sys.modules.get("gradtrack.sweep")  # ended_status: None but after a sweep
        if sweep is not None and sweep.ended_status == "FAILED":
            sys.exit(1)  # its last line, already printed, says which jobs and why
        return result
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        # The run is already ended KILLED with its metrics flushed; say so briefly.
        interrupts.acknowledge()
        sigterm = isinstance(exc, interrupts.Terminated)
        print(f"gradtrack: stopped by {'SIGTERM' if sigterm else 'Ctrl-C'}", file=sys.stderr)
        say_which_run(exc, "KILLED")
        _finish_sweep(sigterm)  # a sweep's parent ends KILLED too
        from gradtrack.sweep_workers import release_pool

        release_pool()
        _exit_now(143 if sigterm else 130)
    except Exception as exc:
        message = explain(exc)
        if message is None:
            # A search whose trials all failed; or a sweep job's own error (a single run
            # reports those in _app), which Hydra raises after naming the job: the job's
            # run and the sweep's summary hold the rest, a traceback would only bury it.
            if isinstance(exc, CompactHydraException | GradtrackError):
                print(f"gradtrack: error: {exc}", file=sys.stderr)
                sys.exit(1)
            raise
        print(f"gradtrack: error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


if __name__ == "__main__":
    main()
