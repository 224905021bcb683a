"""Ctrl-C and SIGTERM: honoured at once, but never in the middle of a framework call.

Python runs a signal handler between two bytecodes of the main thread, wherever that
is. An exception raised inside TensorFlow's tracing, a SQLAlchemy commit or a store
migration can leave that library's state broken (TensorFlow then reports a
nonsensical ``ValueError`` and the run ends FAILED instead of KILLED). So:

* ``install()`` makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
  ``Terminated``, as usual, at the next bytecode;
* inside ``uninterrupted()`` (one chunk of training steps, sized to last a fraction
  of a second) a signal is only recorded, and raised as soon as the block ends;
* ``on_signal(hook)`` runs ``hook(signum)`` first, once per signal: a joblib sweep's
  main process uses it to let its workers end their runs before joblib kills them.

Schedulers (SLURM, Kubernetes, Ray) follow SIGTERM with SIGKILL after a grace period,
so the blocks must stay short: the training loop sizes its chunks by elapsed time.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable


class Terminated(BaseException):
    """Raised for SIGTERM, so a run ends KILLED like it does on Ctrl-C."""


_depth = 0
_pending: int | None = None
# A signal raised as an exception that nobody has acknowledged yet. Python drops an
# exception raised inside a weakref callback or ``__del__`` (garbage collection runs
# them between any two bytecodes), so a Ctrl-C landing there would be lost; the next
# training chunk or job start raises it again (see ``check``).
_raised: int | None = None


_hooks: list[Callable[[int], None]] = []


def on_signal(hook: Callable[[int], None]) -> None:
    """Run ``hook(signum)`` when SIGINT or SIGTERM arrives, before anything is raised."""
    if hook not in _hooks:
        _hooks.append(hook)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"received signal {signum}")


def _handler(signum, frame) -> None:
    global _pending, _raised
    for hook in _hooks:
        with contextlib.suppress(Exception):  # the signal must still be honoured
            hook(signum)
    if _depth:
        _pending = signum  # raised when the current block ends
        return
    _raised = signum
    _raise_for(signum)


def acknowledge() -> None:
    """The KeyboardInterrupt/Terminated of the last signal was caught where it is handled."""
    global _raised
    _raised = None


def check() -> None:
    """Raise again a signal whose exception was swallowed (see ``_raised``)."""
    global _raised
    if _raised is not None:
        signum, _raised = _raised, None
        _raise_for(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through the handler (main thread of the main interpreter)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    check()  # e.g. the next job of a sweep: a Ctrl-C lost between jobs stops it


@contextlib.contextmanager
def uninterrupted():
    """Hold a signal that arrives during the block; raise it right after the block."""
    global _depth, _pending
    check()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None and sys.exc_info()[0] is None:
            signum, _pending = _pending, None
            _raise_for(signum)
