"""A tracking server that goes away loses nothing: a real `mlflow server` stopped,
hung and restarted under a real gradtrack process; the spool and its delivery."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, wait_until_training
from team_support import free_port, mlflow_server_process

SPOOL = ".gradtrack-spool"


def _server(workdir: Path, port: int):
    """`mlflow server` on 127.0.0.1:port (SQLite in workdir, artifacts served); a restart
    with the same workdir and port is the same server with the same data."""
    return mlflow_server_process(f"sqlite:///{workdir / 'mlflow.db'}", workdir, port)


def _start_run(project: Path, uri: str, steps: int, err: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradtrack",
            "+experiment=fit_linear_1d",
            "backend=numpy",
            f"epochs={steps}",
            "tracking=server",
            f"tracking.uri={uri}",
            f"tracking.root={project / 'track'}",
        ],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=open(err, "w"),  # noqa: SIM115 - the child owns it
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _wait_for_run(uri: str, proc: subprocess.Popen, timeout: float = 120):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gradtrack exited with {proc.returncode}"
        exp = client.get_experiment_by_name("gradtrack")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs:
            return runs[0]
        time.sleep(0.3)
    raise AssertionError("the run never appeared on the server")


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"never printed {text!r}: {path.read_text()}"
        time.sleep(0.1)


def _sync(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(
        ["--spool", str(project / "track" / SPOOL), *args], project, module="gradtrack.sync_cli"
    )


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _assert_complete(uri: str, run_id: str, steps: int) -> None:
    """Every budgeted point of every series, each once; params, input, artifacts, FINISHED."""
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking.budget import kept_steps

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    kept = kept_steps(steps, 1000).tolist()
    assert _steps(client, run_id, "Training/loss") == kept
    assert _steps(client, run_id, "Training/grad_norm") == kept
    assert run.data.params["epochs"] == str(steps)
    assert run.data.metrics["r2"] > 0.5 and "final_loss" in run.data.metrics
    assert run.data.tags["experiment"] == "fit_linear_1d"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["auto_mpg"]
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"history.npz", "loss_curve.png"} <= top, top
    # The LoggedModel: made on the server (a real id, even if made while it was away),
    # READY, the run's output, its files uploaded with that id written in them.
    [lm] = client.search_logged_models([run.info.experiment_id])
    assert lm.source_run_id == run_id and lm.status.value == "READY"
    assert [o.model_id for o in run.outputs.model_outputs] == [lm.model_id]
    assert {x.key for x in lm.metrics} >= {"final_loss", "r2"}
    assert {x.dataset_name for x in lm.metrics} == {"auto_mpg"}
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(lm.model_id)}
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{lm.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.model_id == lm.model_id and model.metadata.run_id == run_id


def _spooled(project: Path) -> list[str]:
    root = project / "track" / SPOOL
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _run_outliving_its_server(project: Path, work: Path, port: int, steps: int, err: Path):
    """A long run against a real server that goes away mid-run (and stays away).

    Yields (uri, run, proc) once the server is gone and the run still trains; the run
    is killed on the way out if it is still alive."""
    with contextlib.ExitStack() as first:
        uri, _ = first.enter_context(_server(work, port))
        proc = _start_run(project, uri, steps, err)
        try:
            run = _wait_for_run(uri, proc)
            first.close()  # the server goes away mid-run
            assert proc.poll() is None, "the run ended before the server went away"
            yield uri, run, proc
        finally:
            _stop(proc)


@pytest.mark.slow
@pytest.mark.integration
def test_server_killed_mid_run_and_restarted_loses_nothing(project, tmp_path):
    """The server goes away until the run notices (its next live send, within 10 s),
    then comes back on the same port with the same store: the run delivers what it
    spooled (at a live send or at its end; if it ended first, gradtrack-sync does)."""
    steps, port, work = 3_000_000, free_port(), tmp_path / "server"  # ~25 s here
    err = tmp_path / "run.err"
    with _run_outliving_its_server(project, work, port, steps, err) as (uri, run, proc):
        deadline = time.monotonic() + 60
        while "is not answering" not in err.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        with _server(work, port):  # back, same port, same store
            rc = proc.wait(timeout=300)
            text = err.read_text()
            assert rc == 0, text
            assert "is not answering" in text  # the run did see the outage
            if _spooled(project):  # still down when the run ended: deliver now
                out = _sync(project)
                assert out.returncode == 0, out.stdout + out.stderr
            assert _spooled(project) == []
            _assert_complete(uri, run.info.run_id, steps)


@pytest.mark.slow
@pytest.mark.integration
def test_server_down_until_the_run_ends_then_the_next_run_delivers(project, tmp_path):
    from mlflow.tracking import MlflowClient

    steps, port, work = 3_000_000, free_port(), tmp_path / "server"
    err = tmp_path / "run.err"
    with _run_outliving_its_server(project, work, port, steps, err) as (_, run, proc):
        rc = proc.wait(timeout=300)
    text = err.read_text()
    assert rc == 0, text  # training finished; its results wait in the spool
    run_id = run.info.run_id
    assert _spooled(project) == [run_id]
    spool = project / "track" / SPOOL
    assert f"gradtrack-sync --spool {spool}" in text and "ended FINISHED" in text
    ops = [json.loads(line) for line in (spool / run_id / "ops.jsonl").read_text().splitlines()]
    assert ops[-1]["op"] == "set_terminated" and ops[-1]["status"] == "FINISHED"
    listed = _sync(project, "--list")
    assert listed.returncode == 0 and run_id in listed.stdout and "(FINISHED)" in listed.stdout
    down = _sync(project)  # the server is still away: nothing lost, told so
    assert down.returncode == 1 and "does not answer" in down.stdout
    assert _spooled(project) == [run_id]

    with _server(work, port) as (uri, _):
        assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "RUNNING"
        # The next run against the server delivers the spool before it looks for dead
        # runs: the spooled run ends FINISHED, not FAILED as "process gone".
        nxt = run_cli(
            [
                "+experiment=fit_linear_1d",
                "epochs=20",
                "tracking=server",
                f"tracking.uri={uri}",
                f"tracking.root={project / 'track'}",
                "tracking.log_model=false",
            ],
            project,
        )
        assert nxt.returncode == 0, nxt.stderr
        assert _spooled(project) == []
        _assert_complete(uri, run_id, steps)
        assert "process_gone" not in MlflowClient(tracking_uri=uri).get_run(run_id).data.tags


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("noticed", [True, False], ids=["outage-noticed", "outage-unnoticed"])
def test_sigterm_while_the_server_hangs_ends_within_2s_and_killed_is_delivered(
    project, tmp_path, noticed
):
    """The server process is stopped (SIGSTOP: connections accepted, never answered), the
    worst case for HTTP timeouts; SIGTERM must still end the run KILLED within 2 s."""
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking.budget import kept_steps

    port, work, err = free_port(), tmp_path / "server", tmp_path / "run.err"
    with _server(work, port) as (uri, server):
        proc = _start_run(project, uri, 100_000_000, err)
        try:
            run = _wait_for_run(uri, proc)
            wait_until_training(MlflowClient(tracking_uri=uri), run.info.run_id, proc)
            os.killpg(server.pid, signal.SIGSTOP)
            if noticed:  # the next live send (within LIVE_SEND_SECONDS) finds it gone
                _wait_for_text(err, "is not answering", proc)
            else:  # SIGTERM before any call found out: the run's end must
                time.sleep(1.0)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            took = time.monotonic() - t0
        finally:
            _stop(proc)
        text = err.read_text()
        assert rc == 143, text
        assert took <= 2.0, f"exit took {took:.2f} s after SIGTERM with the server hung"
        assert "gradtrack-sync --spool" in text and "ended KILLED" in text
        os.killpg(server.pid, signal.SIGCONT)
        out = _sync(project)
        assert out.returncode == 0, out.stdout + out.stderr
        assert _spooled(project) == []
        client = MlflowClient(tracking_uri=uri)
        got = client.get_run(run.info.run_id)
        assert got.info.status == "KILLED"
        assert got.data.tags["killed_by"] == "SIGTERM"
        steps = _steps(client, run.info.run_id, "Training/loss")
        kept = kept_steps(100_000_000, 1000).tolist()
        # The budgeted steps made, each once, plus the last completed step.
        assert len(steps) >= 2 and steps[:-1] == kept[: len(steps) - 1]


@pytest.mark.integration
def test_delivery_resent_after_a_crash_stores_each_point_once(tmp_path):
    """A delivery cut short before it recorded its progress sends an operation again;
    the store keeps each point once. A line cut short by a crash is ignored."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking import spool
    from gradtrack.tracking.store import TrackingTarget

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e")
    run_id = client.create_run(exp).info.run_id
    root = tmp_path / SPOOL

    target = TrackingTarget(uri="http://127.0.0.1:1", artifact_root=None, spool=str(root))

    def write() -> Path:
        s = spool.RunSpool(root, target.uri, run_id, exp, "r")
        c = spool.guard(client, target)
        c.spooling, c.spool, c._last_probe = True, s, time.monotonic()  # a spooling run
        for start in (0, 100):
            metrics = [
                Metric("Training/loss", 1 / (i + 1), 1000 + i, i) for i in range(start, start + 100)
            ]
            c.log_batch(run_id, metrics, [Param("p", "1")], [RunTag("t", "v")])
        s.append({"op": "set_terminated", "status": "FINISHED", "end_time": 5000})
        s.release()
        with open(s.dir / spool.OPS, "a") as f:
            f.write('{"op": "log_ba')  # a crash mid-write
        return s.dir

    d = spool.deliver_run(client, write())
    assert (d.sent, d.left, d.status, d.error) == (3, 0, "FINISHED", None)
    assert not (root / run_id).exists()
    # Again from the start, as after a crash before the first progress write.
    d = spool.deliver_run(client, write())
    assert d.left == 0
    hist = client.get_metric_history(run_id, "Training/loss")
    assert sorted(m.step for m in hist) == list(range(200))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"p": "1"}


def test_sync_names_a_missing_spool_folder(tmp_path):
    out = run_cli(["--spool", str(tmp_path / "nope")], tmp_path, module="gradtrack.sync_cli")
    assert out.returncode == 2
    assert f"--spool {tmp_path / 'nope'}: no such folder" in out.stderr
    out = run_cli([], tmp_path, module="gradtrack.sync_cli")
    assert out.returncode == 0 and "nothing spooled" in out.stdout
