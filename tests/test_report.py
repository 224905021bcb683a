"""gradtrack-report: runs read back from MLflow into a comparison table and a plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["tracking.log_model=false", "tracking.log_artifacts=false", "checks.baseline=false"]


def _train(project: Path, *overrides: str):
    from gradtrack import train

    return train.run(compose(*overrides, f"paths.root={project}"), list(overrides))


@pytest.fixture
def three_runs(project):
    """Two finished runs differing in lr, one diverged run; all in experiment 'gradtrack'."""
    ids = [
        _train(
            project,
            "+experiment=seed_linear",
            "backend=numpy",
            "epochs=40",
            f"optimizer.lr={lr}",
            *FAST,
        ).run_id
        for lr in (0.01, 0.001)
    ]
    from gradtrack.errors import DivergedError

    with pytest.raises(DivergedError):
        _train(
            project,
            "+experiment=seed_linear",
            "backend=numpy",
            "epochs=40",
            "optimizer.lr=1e6",
            *FAST,
        )
    return project, ids


def test_report_compares_differing_params_metrics_status_and_plots_losses(three_runs, monkeypatch):
    from gradtrack.report import main

    project, ids = three_runs
    monkeypatch.chdir(project)  # default tracking URI: ./mlruns/mlflow.db
    out = project / "rep"
    assert main(["--experiment", "gradtrack", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert "optimizer.lr" in header and "final_loss" in header and "status" in header
    assert "epochs" not in header  # identical in every run: not a column
    rows = table[2:]
    assert len(rows) == 3
    assert sum("FINISHED" in r for r in rows) == 2
    [failed] = [r for r in rows if "FAILED" in r]
    assert "1000000.0" in failed and "diverged after step" in failed
    assert any(ids[0][:8] in r and "| 0.01 |" in r for r in rows)
    png = (out / "loss_curves.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_report_of_an_experiment_leaves_sweep_parents_out_and_paramless_runs_add_no_column(
    three_runs,
):
    """A sweep's parent logs no params: counted in, it made every param of the other runs
    a "differing" column. A run without params from another tool stays a row."""
    from mlflow.tracking import MlflowClient

    from gradtrack.report import main

    project, ids = three_runs
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name("gradtrack").experiment_id
    parent = client.create_run(exp_id, tags={"sweep_role": "parent"}).info.run_id
    other = client.create_run(exp_id, run_name="logged-elsewhere").info.run_id
    for rid in (parent, other):
        client.set_terminated(rid, "FINISHED")
    out = project / "r"
    assert main(["--tracking-uri", uri, "--experiment", "gradtrack", "--out", str(out)]) == 0
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert "optimizer.lr" in header
    assert "epochs" not in header and "model.name" not in header  # the same in every run
    rows = table[2:]
    assert len(rows) == 4 and sum(other[:8] in r for r in rows) == 1
    assert not any(parent[:8] in r for r in rows)


def test_report_selects_by_run_ids_and_by_sweep_tag(three_runs):
    from mlflow.tracking import MlflowClient

    from gradtrack.report import main

    project, ids = three_runs
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    assert main(["--tracking-uri", uri, "--run-ids", ids[1], "--out", str(project / "a")]) == 0
    rows = [r for r in (project / "a" / "report.md").read_text().splitlines() if r.startswith("| ")]
    assert len(rows) == 2 and ids[1][:8] in rows[1]

    client = MlflowClient(tracking_uri=uri)
    for rid in ids:
        client.set_tag(rid, "sweep_id", "sw-42")
    assert main(["--tracking-uri", uri, "--sweep-id", "sw-42", "--out", str(project / "b")]) == 0
    rows = [r for r in (project / "b" / "report.md").read_text().splitlines() if r.startswith("| ")]
    assert len(rows) == 3 and all("FINISHED" in r for r in rows[1:])


def test_build_report_is_callable_on_runs_directly(three_runs):
    from mlflow.tracking import MlflowClient

    from gradtrack.report import build_report

    project, ids = three_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    path = build_report(client, [client.get_run(i) for i in ids], project / "c", "two runs")
    assert path == project / "c" / "report.md"
    assert path.read_text().startswith("# two runs")
    assert (project / "c" / "loss_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_report_errors_are_clear_and_exit_2(project, tmp_path):
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradtrack.report",
            "--experiment",
            "x",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "no tracking store" in missing.stderr and "mlflow.db" in missing.stderr
    assert not (project / "mlruns" / "mlflow.db").exists()  # nothing created by reading

    from gradtrack.report import main

    _train(project, "+experiment=seed_linear", "backend=numpy", "epochs=3", *FAST)
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    assert main(["--tracking-uri", uri, "--experiment", "nope", "--out", str(tmp_path / "o")]) == 2
    assert (
        main(["--tracking-uri", uri, "--sweep-id", "none-such", "--out", str(tmp_path / "o")]) == 2
    )
    assert not (tmp_path / "o").exists()
