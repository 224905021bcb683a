"""What a joblib sweep's jobs share is pickled once in the main process and unpickled
once per worker (gradtrack.sweep_workers.send_shared_once). The sweeps themselves,
warmed workers included, are tested in test_sweeps.py."""

from __future__ import annotations

import os
import pickle
import time

import pytest
from joblib.externals.loky.backend.reduction import dumps as loky_dumps

from gradtrack import sweep_workers
from gradtrack.sweep_workers import SharedArgs, execute_job_sharing


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(sweep_workers, "_received", {})


def _task(idx: int, shared: SharedArgs) -> bytes:
    """One job as loky sends it: its own arguments, then what every job shares."""
    return loky_dumps((execute_job_sharing, (idx, [f"x={idx}"], shared)))


def test_shared_objects_are_pickled_once_whatever_the_number_of_jobs(monkeypatch):
    from joblib.externals import cloudpickle

    pickled = []
    real = cloudpickle.dumps
    monkeypatch.setattr(
        cloudpickle, "dumps", lambda obj, *a, **k: pickled.append(1) or real(obj, *a, **k)
    )
    shared = SharedArgs(({"config": list(range(1000))}, "context"))
    tasks = [_task(i, shared) for i in range(20)]
    assert len(pickled) == 1
    assert all(len(t) > 1000 for t in tasks)  # each job still carries them


def test_a_process_unpickles_what_jobs_share_once_and_hands_each_job_the_same_objects(
    fresh_cache,
):
    shared = SharedArgs(({"config": [1, 2, 3]}, "context"))
    first = pickle.loads(_task(0, shared))
    second = pickle.loads(_task(1, shared))
    assert first[1][:2] == (0, ["x=0"]) and second[1][:2] == (1, ["x=1"])
    assert first[1][2] == shared.objects  # equal to what the main process had ...
    assert second[1][2] is first[1][2]  # ... and unpickled once in this process
    # The next sweep (or the next batch of a search sweeper) brings new objects.
    other = SharedArgs(({"config": [4]}, "context"))
    third = pickle.loads(_task(2, other))
    assert third[1][2] == other.objects
    assert list(sweep_workers._received) == [other.token]  # only the current one is kept


class _Loader:
    """A config loader that composes a job as its overrides and a Hydra job name."""

    def load_sweep_config(self, master: str, overrides: list[str]):
        from omegaconf import OmegaConf

        return OmegaConf.create(
            {"hydra": {"job": {"name": "app"}}, "master": master, "o": overrides}
        )


class _Context:
    config_loader = _Loader()


def test_execute_job_gets_the_shared_objects_unpacked_pickled_or_not(monkeypatch, fresh_cache):
    from hydra.core import utils
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton

    runs, states = [], []
    monkeypatch.setattr(utils, "run_job", lambda **kw: runs.append(kw) or "ret")
    monkeypatch.setattr(Singleton, "set_state", staticmethod(states.append))

    def set_config(self, cfg):  # run_job sets it; execute_job setting it too is a copy
        raise AssertionError("HydraConfig set before run_job")

    monkeypatch.setattr(HydraConfig, "set_config", set_config)
    objects = (_Context(), "config", "task", {"instances": {}})
    shared = SharedArgs(objects)
    # n_jobs=1: joblib runs the job in this process, nothing is pickled
    assert execute_job_sharing(3, ["a=1"], shared) == "ret"
    function, args = pickle.loads(_task(4, shared))  # a worker
    assert function(*args) == "ret"
    assert states == [{"instances": {}}] * 2
    for run, num, overrides in zip(runs, (3, 4), (["a=1"], ["x=4"]), strict=True):
        job = run["config"]
        assert (job.master, list(job.o)) == ("config", overrides)
        assert (job.hydra.job.id, job.hydra.job.num) == (f"app_{num}", num)
        assert run["task_function"] == "task" and isinstance(run["hydra_context"], _Context)
        assert (run["job_dir_key"], run["job_subdir_key"]) == (
            "hydra.sweep.dir",
            "hydra.sweep.subdir",
        )


def test_the_launchers_jobs_carry_one_shared_argument_per_launch(monkeypatch):
    from hydra_plugins.hydra_joblib_launcher import _core

    monkeypatch.setattr(_core, "delayed", _core.delayed)  # put back after the test
    sweep_workers.send_shared_once()
    sweep_workers.send_shared_once()  # idempotent: wraps Hydra's delayed once
    context, config, task, state = object(), object(), object(), {"instances": {}}
    calls = [
        _core.delayed(_core.execute_job)(i, [], context, config, task, state) for i in range(3)
    ]
    assert {c[0] for c in calls} == {execute_job_sharing}
    shared = [c[1][2] for c in calls]
    assert shared[0].objects == (context, config, task, state)
    assert shared[1] is shared[0] and shared[2] is shared[0]
    # Hydra's next launch (a search sweeper's next batch) takes a new singleton state.
    later = _core.delayed(_core.execute_job)(3, [], context, config, task, {"instances": {}})
    assert later[1][2] is not shared[0]
    # anything else the launcher might delay is left as it is
    assert _core.delayed(len)("abc")[0] is len


# -- work handed to an idle worker (a joblib sweep's summary overlay) -------------------


@pytest.fixture
def one_worker():
    """A real reusable loky executor with one worker, as a joblib sweep leaves it."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1)
    executor.submit(os.getpid).result(timeout=120)  # started
    yield executor
    executor.shutdown(wait=True, kill_workers=True)


def _fails_in_a_worker(main_pid: int) -> int:
    if os.getpid() != main_pid:
        raise RuntimeError("a worker's failure")
    return os.getpid()


def _slow_in_a_worker(main_pid: int) -> int:
    if os.getpid() != main_pid:
        time.sleep(30)
    return os.getpid()


def test_work_runs_in_an_idle_worker_when_there_is_one(one_worker):
    from gradtrack.sweep_workers import call_in_a_worker, worker_pids

    pid = call_in_a_worker(os.getpid)
    assert pid != os.getpid() and pid in worker_pids()


def test_work_runs_here_without_workers_or_when_a_worker_fails_or_hangs(one_worker):
    from gradtrack.sweep_workers import call_in_a_worker

    here = os.getpid()
    assert call_in_a_worker(_fails_in_a_worker, here) == here
    started = time.monotonic()
    assert call_in_a_worker(_slow_in_a_worker, here, timeout=0.5) == here
    assert time.monotonic() - started < 10
    one_worker.shutdown(wait=True, kill_workers=True)
    assert call_in_a_worker(os.getpid) == here  # the pool is gone


def test_work_started_in_a_worker_runs_while_the_caller_goes_on(one_worker):
    """start_in_a_worker returns at once; the result comes when asked for. Without a
    live worker it starts nothing (None), and the caller does the work its own way."""
    from gradtrack.sweep_workers import start_in_a_worker

    started = time.monotonic()
    result = start_in_a_worker(time.sleep, 1.0)
    assert result is not None and time.monotonic() - started < 0.5
    pid = start_in_a_worker(os.getpid)
    assert result() is None and time.monotonic() - started >= 1.0
    assert pid() != os.getpid()
    one_worker.shutdown(wait=True, kill_workers=True)
    assert start_in_a_worker(os.getpid) is None


# -- a failed job's exception, sent back from a worker ------------------------------------


class _NeedsTwoArguments(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def test_a_failed_jobs_exception_survives_the_trip_back_from_a_worker():
    """An exception that does not unpickle in the main process breaks joblib's pool."""
    from gradtrack.cli import _pickles
    from gradtrack.errors import DivergedError

    sent = DivergedError(25, 24, 1.7e305, "Lower optimizer.lr (now 1e+06).")
    back = pickle.loads(pickle.dumps(sent))
    assert (back.step, back.last_finite_step, back.last_finite_loss) == (25, 24, 1.7e305)
    assert back.advice == sent.advice
    assert str(back) == str(sent)
    assert _pickles(sent) and _pickles(ValueError("x"))
    # pickles, but cannot be rebuilt: a worker sends a RuntimeError naming it instead
    assert not _pickles(_NeedsTwoArguments(1, 2))
