"""Tracking server mode against a real `mlflow server` (SQLite backend) on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """Start `mlflow server`, wait for /health, yield its URI; stop the whole group after."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'db.sqlite'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown reaches the workers
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()


def test_training_against_a_tracking_server_is_readable_back(mlflow_server, project, tmp_path):
    from mlflow.tracking import MlflowClient

    from gradtrack.report import main as report_main

    out = run_cli(
        ["+experiment=fit_linear", "steps=300", "tracking=server", f"tracking.uri={mlflow_server}"],
        project,
    )
    assert out.returncode == 0, out.stderr
    assert not (project / "mlruns" / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("gradtrack")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fit_linear · numpy · steps=300"
    assert run.data.params["steps"] == "300"
    hist = client.get_metric_history(run.info.run_id, "Training/loss")
    assert sorted(m.step for m in hist) == list(range(300))
    png = Path(client.download_artifacts(run.info.run_id, "loss_curve.png", str(tmp_path)))
    assert png.read_bytes().startswith(PNG_MAGIC)
    # The LoggedModel's files went to the server's artifact store with it.
    [lm] = client.search_logged_models([exp.experiment_id])
    assert lm.source_run_id == run.info.run_id
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(lm.model_id)}

    rc = report_main(
        ["--tracking-uri", mlflow_server, "--experiment", "gradtrack", "--out", str(tmp_path / "r")]
    )
    assert rc == 0 and run.info.run_id[:8] in (tmp_path / "r" / "report.md").read_text()
