"""Helper processes that a joblib sweep's main process forks for itself.

Before a joblib sweep's first job, its main process imports MLflow, creates the store
and the parent run, and composes and checks every job; and the workers need MLflow,
scikit-learn and matplotlib imported. On two cores, with the fork server spawned as a
new interpreter, that was two chains of about the same length: the main process
(checks ~1.5 s, MLflow ~1.7 s, store ~0.85 s) and the server (MLflow ~1.7 s, then
scikit-learn and matplotlib ~1.45 s); MLflow was imported twice, once in each.

Forked helpers share what the main process has already imported, so each import is
paid once, and the checks run beside the MLflow import instead of before it:

* the jobs are checked in a child forked before MLflow is imported
  (gradtrack.sweep.ForkedCheck), while the main process imports MLflow;
* the fork server is then forked from the main process, MLflow loaded, and imports
  only scikit-learn and matplotlib while the main process creates the store
  (gradtrack.sweep_workers.use_forkserver).

A helper is forked only while this process runs a single thread (the main thread),
the only state in which forking is safe; otherwise the caller does the work itself as
before. A helper ends with the process that forked it, and leaves with ``os._exit``:
the atexit handlers it inherited (the sweep's summary, temporary folders) belong to
the main process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

# The main process's pid, for a spawned fork server to end with it (worker_boot); set
# only when the main thread starts the server: the parent-death signal follows the
# thread that started a process, not the process.
ENV_DIE_WITH = "GRADTRACK_DIE_WITH_PID"

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15  # the name ps and top show (/proc/PID/comm), at most 15 bytes


def _prctl(option: int, value: int | bytes) -> bool:
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl
        return False


def die_with_parent() -> None:
    """SIGTERM this process when its parent (the thread that started it) ends."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def set_name(name: str) -> None:
    """The name ps and top show for this process (at most 15 bytes)."""
    _prctl(_PR_SET_NAME, name.encode()[:15])


def can_fork() -> bool:
    """Whether this process may fork a helper now: on Linux, from its main thread, with
    no other thread running (a thread holding a lock at the fork would leave the lock
    held forever in the child)."""
    return (
        sys.platform == "linux"
        and threading.current_thread() is threading.main_thread()
        and threading.active_count() == 1
    )


def fork(name: str, sigint: object = signal.SIG_DFL) -> int:
    """Fork a helper process; returns its pid here and 0 in the helper.

    In the helper, SIGTERM ends the process (not gradtrack's handlers, which end a
    run), Ctrl-C does what ``sigint`` says, the process gets SIGTERM when this one
    ends, and ps shows it as ``name``. The helper must leave with ``os._exit``.
    """
    # What this process has buffered would be written again by the helper's own flush.
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, sigint)  # type: ignore[arg-type]
    die_with_parent()
    set_name(name)
    if os.getppid() != parent:  # the parent ended before the signal was set
        os._exit(0)
    return 0
