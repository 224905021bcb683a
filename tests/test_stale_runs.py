"""Runs left RUNNING by a dead process are found and ended FAILED; nothing else is touched.

Owners are real processes (a sleeping child, one that was killed), the store is the
real SQLite store, and the end-to-end test kills a real training run with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import mlflow_runs, run_cli
from reliability_support import seed_store


@pytest.fixture
def sleeper():
    """A live process to own runs; killed after the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _tags_of(proc: subprocess.Popen) -> dict[str, str]:
    from gradtrack.tracking import owner

    tags = owner.owner_tags()  # same machine, boot and pid namespace as this test
    tags[owner.PID] = str(proc.pid)
    tags[owner.START] = owner.process_start(proc.pid)
    assert tags[owner.START], "no /proc/<pid>/stat"
    return tags


@pytest.fixture
def dead_owner() -> dict[str, str]:
    """Owner tags of a process that existed and was killed (SIGKILL)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    tags = _tags_of(proc)
    proc.kill()
    proc.wait()
    return tags


def test_owner_state_tells_live_dead_and_foreign_owners_apart(sleeper, dead_owner):
    from gradtrack.tracking import owner

    live = _tags_of(sleeper)
    assert owner.owner_state(owner.owner_tags()) == owner.ALIVE  # this very process
    assert owner.owner_state(live) == owner.ALIVE
    assert owner.owner_state(dead_owner) == owner.GONE
    # The pid is alive but it is another process (pids are reused): gone.
    assert owner.owner_state({**live, owner.START: str(int(live[owner.START]) + 1)}) == owner.GONE
    # The machine restarted since the run began: every process of that boot is gone.
    assert owner.owner_state({**live, owner.BOOT: "another-boot"}) == owner.GONE
    # Never judged: another host, another pid namespace, no owner tags at all.
    assert owner.owner_state({**dead_owner, owner.HOST: "elsewhere"}) == owner.OTHER_HOST
    assert owner.owner_state({**dead_owner, owner.MACHINE: "another"}) == owner.OTHER_HOST
    assert owner.owner_state({**dead_owner, owner.PID_NS: "pid:[1]"}) == owner.UNKNOWN
    assert owner.owner_state({}) == owner.UNKNOWN
    assert owner.owner_state({**dead_owner, owner.START: ""}) == owner.UNKNOWN


def _store(project: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{seed_store(project)}"
    client = MlflowClient(tracking_uri=uri)
    return uri, client, client.create_experiment("gradtrack")


def _run(client, exp: str, name: str, tags: dict[str, str], steps: int = 0) -> str:
    from mlflow.entities import Metric

    run = client.create_run(exp, run_name=name, tags=tags)
    ms = [Metric("loss", 1.0 / (s + 1), 0, s) for s in range(steps)]
    if ms:
        client.log_batch(run.info.run_id, metrics=ms, synchronous=True)
    return run.info.run_id


@pytest.fixture
def four_runs(project, sleeper, dead_owner):
    """A store with four RUNNING runs: live owner, dead owner, dead on another host, untagged."""
    from gradtrack.tracking import owner

    uri, client, exp = _store(project)
    ids = {
        "live": _run(client, exp, "live", _tags_of(sleeper), steps=5),
        "dead": _run(client, exp, "dead", dead_owner, steps=42),
        "other_host": _run(client, exp, "other", {**dead_owner, owner.HOST: "node-7"}, 3),
        "untagged": _run(client, exp, "untagged", {}),
    }
    return uri, client, exp, ids


def _statuses(client, ids: dict[str, str]) -> dict[str, str]:
    return {k: client.get_run(rid).info.status for k, rid in ids.items()}


def test_scan_ends_only_the_dead_run_of_this_host(four_runs):
    from gradtrack.tracking import owner

    _, client, exp, ids = four_runs
    ended = owner.end_dead_runs(client, [exp])
    assert [d.run_id for d in ended] == [ids["dead"]]
    assert ended[0].last_step == 41
    assert _statuses(client, ids) == {
        "live": "RUNNING",
        "dead": "FAILED",
        "other_host": "RUNNING",
        "untagged": "RUNNING",
    }
    tags = client.get_run(ids["dead"]).data.tags
    assert "disappeared after step 41" in tags[owner.GONE_TAG]
    assert tags[owner.LAST_STEP_TAG] == "41"
    assert owner.end_dead_runs(client, [exp]) == []  # nothing left to end


def test_opening_the_store_ends_dead_runs_of_the_experiment(four_runs, project):
    from gradtrack.tracking.store import open_store, resolve_tracking

    _, client, _, ids = four_runs
    open_store(resolve_tracking(None, project / "mlruns"), "gradtrack")
    assert _statuses(client, ids) == {
        "live": "RUNNING",
        "dead": "FAILED",
        "other_host": "RUNNING",
        "untagged": "RUNNING",
    }


def test_a_process_looks_for_dead_runs_at_its_first_open_then_once_a_minute(
    four_runs, project, dead_owner
):
    """Every job of a sweep opens the store, and the search for dead runs reads every
    run of the experiment: a process searches at its first open of a store, then again
    only once STALE_SCAN_SECONDS have passed."""
    from gradtrack.tracking import store

    _, client, exp, ids = four_runs
    target = store.resolve_tracking(None, project / "mlruns")
    _, exp_id = store.open_store(target, "gradtrack")
    assert exp_id == exp and client.get_run(ids["dead"]).info.status == "FAILED"
    died_since = _run(client, exp, "died since", dead_owner)
    store.open_store(target, "gradtrack")  # the next job, a moment later
    assert client.get_run(died_since).info.status == "RUNNING"
    store._last_stale_scan[(target.uri, exp)] -= store.STALE_SCAN_SECONDS  # a minute on
    store.open_store(target, "gradtrack")
    assert client.get_run(died_since).info.status == "FAILED"
    assert client.get_run(ids["live"]).info.status == "RUNNING"


def test_report_does_not_count_a_dead_run_as_running(four_runs, tmp_path):
    from gradtrack.report import main as report_main

    uri, client, _, ids = four_runs
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", uri, "--experiment", "gradtrack", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "4 runs (1 DEAD, 3 RUNNING)" in text
    assert client.get_run(ids["dead"]).info.status == "RUNNING"  # a report alone changes nothing
    args = ["--tracking-uri", uri, "--experiment", "gradtrack", "--out", str(out), "--fix-stale"]
    assert report_main(args) == 0
    assert "4 runs (1 FAILED, 3 RUNNING)" in (out / "report.md").read_text()
    assert _statuses(client, ids)["dead"] == "FAILED"


def test_runs_command_lists_then_fixes_stale_runs(four_runs, project):
    uri, client, _, ids = four_runs
    res = run_cli(["stale", "--tracking-uri", uri], project, module="gradtrack.runs_cli")
    assert res.returncode == 0, res.stderr
    assert "4 RUNNING, 1 with their process gone; gradtrack-runs stale --fix" in res.stdout
    line = next(x for x in res.stdout.splitlines() if x.startswith(ids["dead"]))
    assert line.endswith(": gone")
    assert _statuses(client, ids)["dead"] == "RUNNING"
    res = run_cli(["stale", "--fix", "--tracking-uri", uri], project, module="gradtrack.runs_cli")
    assert res.returncode == 0, res.stderr
    assert "ended FAILED (last recorded step 41)" in res.stdout
    assert list(_statuses(client, ids).values()).count("RUNNING") == 3


def test_runs_command_refuses_a_missing_store(tmp_path):
    res = run_cli(["stale"], tmp_path, module="gradtrack.runs_cli")
    assert res.returncode == 2
    assert "no tracking store at sqlite:///" in res.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_ended_failed_by_the_next_run(project):
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking import owner

    seed_store(project)  # the test polls the store while the run starts
    long_run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradtrack",
            "+experiment=fit_linear",
            "backend=numpy",
            "epochs=100000000",
        ],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    try:
        deadline = time.monotonic() + 180
        while True:  # until the run is RUNNING and has sent some steps
            assert long_run.poll() is None and time.monotonic() < deadline
            runs = mlflow_runs(project)
            if runs and client.get_metric_history(runs[0].info.run_id, "Training/loss"):
                break
            time.sleep(0.5)
        run_id = runs[0].info.run_id
        assert client.get_run(run_id).info.status == "RUNNING"
    finally:
        long_run.send_signal(signal.SIGKILL)
        long_run.wait()
    assert client.get_run(run_id).info.status == "RUNNING"  # what kill -9 leaves
    res = run_cli(["model=quadratic", "epochs=5"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    dead = client.get_run(run_id)
    assert dead.info.status == "FAILED"
    step = max(m.step for m in client.get_metric_history(run_id, "Training/loss"))
    assert dead.data.tags[owner.LAST_STEP_TAG] == str(step)
    assert f"owner process {long_run.pid} on " in dead.data.tags[owner.GONE_TAG]
    assert f"disappeared after step {step}" in dead.data.tags[owner.GONE_TAG]
    statuses = sorted(r.info.status for r in mlflow_runs(project))
    assert statuses == ["FAILED", "FINISHED"]
