"""Tracking server mode against a real `mlflow server` (SQLite backend) on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

import team_support
from conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` (SQLite backend) on loopback; stopped after the test."""
    with team_support.mlflow_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path) as uri:
        yield uri


def test_training_against_a_tracking_server_is_readable_back(mlflow_server, project, tmp_path):
    from mlflow.tracking import MlflowClient

    from gradtrack.report import main as report_main

    out = run_cli(
        [
            "+experiment=fit_linear",
            "epochs=300",
            "tracking=server",
            f"tracking.uri={mlflow_server}",
        ],
        project,
    )
    assert out.returncode == 0, out.stderr
    assert not (project / "mlruns" / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("gradtrack")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fit_linear · numpy · epochs=300"
    assert run.data.params["epochs"] == "300"
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
