"""gradtrack's collector schedule (gc_schedule.py), each check in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> str:
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_configure_raises_only_the_young_threshold_once():
    out = _python(
        """
        import gc
        from gradtrack import gc_schedule
        before = gc.get_threshold()
        gc_schedule.configure()
        gc_schedule.configure()
        print(before, gc.get_threshold())
        """
    )
    before, after = out.strip().split(") (")
    young, middle, old = (int(x) for x in after.strip("()").split(","))
    assert young == 10_000
    assert (middle, old) == tuple(int(x) for x in before.strip("(").split(",")[1:])


def test_the_freeze_comes_after_every_exit_handler_registered_later():
    # A handler registered after configure() (MLflow's, loky's: they are imported
    # later) runs first and sees nothing frozen; the freeze then happens before the
    # interpreter's teardown, which a handler registered earlier still observes.
    out = _python(
        """
        import atexit, gc
        atexit.register(lambda: print("earlier handler sees frozen", gc.get_freeze_count() > 0))
        from gradtrack import gc_schedule
        gc_schedule.configure()
        gc_schedule.configure()  # registers the freeze once
        atexit.register(lambda: print("later handler sees frozen", gc.get_freeze_count() > 0))
        """
    )
    assert out.splitlines() == [
        "later handler sees frozen False",
        "earlier handler sees frozen True",
    ]


def test_the_cli_process_uses_the_schedule(project):
    # The console entry point and the Hydra task (what sweep workers run) both apply it.
    out = _python(
        f"""
        import gc, os, sys
        os.chdir({str(project)!r})
        sys.argv = ["gradtrack", "+experiment=seed_fence", "tracking.enabled=false"]
        from gradtrack.cli import _app
        import gradtrack.cli as cli
        seen = []
        import gradtrack.train as train
        real = train.run
        def spy(*a, **k):
            seen.append(gc.get_threshold()[0])
            return real(*a, **k)
        train.run = spy
        _app()
        print(seen)
        """
    )
    assert out.strip().splitlines()[-1] == "[10000]"
