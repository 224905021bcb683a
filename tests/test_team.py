"""The team setup for real: an MLflow server on PostgreSQL (psycopg) serving artifacts,
16-job sweeps through joblib and through a two-node Ray cluster, every point counted.

The tests start PostgreSQL, the server and Ray themselves, on loopback, and stop them.
One server serves the whole module (each sweep logs to its own experiment).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from team_support import mlflow_server, postgres, ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration]
JOBS, STEPS = 16, 40
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """(server URI, database URI): `mlflow server` on a fresh PostgreSQL database."""
    with postgres() as db, mlflow_server(db, tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri, db


def _sweep(project: Path, uri: str, experiment: str, *launcher: str):
    return run_cli(
        [
            "-m",
            *launcher,
            "+experiment=fit_linear_1d",
            "backend=numpy",
            f"epochs={STEPS}",
            "tracking.log_model=false",
            "tracking=server",
            f"tracking.uri={uri}",
            f"tracking.experiment={experiment}",
            f"seed=range({JOBS})",
        ],
        project,
        timeout=900,
    )


def _check_full_counts(uri: str, db: str, experiment: str) -> list:
    """One FINISHED parent, JOBS FINISHED children, every step of every series stored."""
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(runs) == JOBS + 1
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.data.tags
    assert parent.data.tags["failed_jobs"] == "0"
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(JOBS))
    for c in children:
        assert c.info.status == "FINISHED", c.data.tags.get("error")
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("Training/loss", "Training/grad_norm"):
            steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, key))
            assert steps == list(range(STEPS)), (c.data.params["seed"], key)
    # Counted again in PostgreSQL itself, behind the server's back.
    engine = sqlalchemy.create_engine(db)
    try:
        with engine.connect() as conn:
            n = conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
                    "WHERE r.experiment_id = :e AND m.key = 'Training/loss'"
                ),
                {"e": int(exp.experiment_id)},
            ).scalar_one()
    finally:
        engine.dispose()
    assert n == JOBS * STEPS
    # Artifacts go through the server (mlflow-artifacts:), not to a path on this machine.
    child = children[0]
    assert child.info.artifact_uri.startswith("mlflow-artifacts:")
    png = Path(client.download_artifacts(child.info.run_id, "loss_curve.png"))
    assert png.read_bytes().startswith(PNG_MAGIC)
    return children


def test_joblib_sweep_logs_every_point_to_a_postgres_backed_server(team_server, project):
    uri, db = team_server
    res = _sweep(project, uri, "team-joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    _check_full_counts(uri, db, "team-joblib")
    assert not (project / "mlruns").exists()  # nothing went to a local store


def test_two_node_ray_cluster_sweep_logs_every_point_to_the_same_server(
    team_server, project, tmp_path
):
    uri, db = team_server
    with ray_cluster(tmp_path / "ray_cwd", nodes=2) as cluster:
        res = _sweep(
            project,
            uri,
            "team-ray",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.address={cluster.address}",
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "Connected to Ray cluster" in res.stderr
        children = _check_full_counts(uri, db, "team-ray")
        # Jobs ran in Ray workers of both nodes: each worker's log file names its pid.
        pids = {c.data.tags["owner_pid"] for c in children}
        for node in cluster.nodes:
            ran = {p for p in pids if any(node.glob(f"session_*/logs/worker-*-{p}.*"))}
            assert ran, f"no job ran on the node in {node}"
