"""A new SQLite store is created once, under a lock, whole: concurrent first use is safe.

Real processes against a real store: the race only shows across processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OPEN_STORE = """
import sys
from pathlib import Path
import mlflow.tracking  # imported first: "opening" means the store is opened right now
from gradtrack.tracking.store import open_client, resolve_tracking
print("opening", flush=True)
client = open_client(resolve_tracking(None, Path(sys.argv[1])))
print("experiments:", len(client.search_experiments()), flush=True)
"""


def _open_in_subprocess(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_STORE, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _waits_for_a_lock(pid: int) -> bool:
    """True while ``pid`` is blocked on a file lock (a "->" line of /proc/locks)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and line.split()[5].split(":")[0] == str(pid) for line in lines)


def _head_revision(db: Path) -> str:
    """The alembic revision of a store, read with plain sqlite3 (no mlflow involved)."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _assert_store_opens(db: Path) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.tracking import MlflowClient

    assert _head_revision(db) == _get_latest_schema_revision()
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()


def test_a_process_waits_for_the_one_creating_the_store(tmp_path):
    from gradtrack.tracking.store import store_lock

    db = tmp_path / "mlflow.db"
    with store_lock(db):  # this test plays the process that is creating the store
        proc = _open_in_subprocess(tmp_path)
        try:
            assert proc.stdout.readline() == "opening\n", proc.stderr.read()
            # Without the lock it would create the store now; with it, it waits.
            deadline = time.monotonic() + 120
            while not _waits_for_a_lock(proc.pid):
                assert proc.poll() is None, f"it did not wait: {proc.communicate()}"
                assert time.monotonic() < deadline, "never blocked on the store lock"
                time.sleep(0.05)
            assert not db.exists()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "experiments: 1" in out  # the Default experiment of a new store
    _assert_store_opens(db)
    assert not list(tmp_path.glob("mlflow.db.creating-*"))


def test_sigterm_during_creation_waits_until_the_store_is_whole(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = _open_in_subprocess(tmp_path)
    try:
        assert proc.stdout.readline() == "opening\n", proc.stderr.read()
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("mlflow.db.creating-*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # mid-migration
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The signal still ended the process (default action), but only after the store
    # was complete and in place: no half-migrated store, no temporary left behind.
    assert proc.returncode == -signal.SIGTERM
    _assert_store_opens(db)
    assert not list(tmp_path.glob("mlflow.db.creating-*"))


def test_an_existing_store_is_opened_without_the_lock(tmp_path):
    from gradtrack.tracking.store import open_client, resolve_tracking, store_lock

    target = resolve_tracking(None, tmp_path)
    open_client(target)
    with store_lock(tmp_path / "mlflow.db"):  # held elsewhere: an open must not wait
        proc = _open_in_subprocess(tmp_path)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "experiments: 1" in out


@pytest.mark.slow
def test_eight_first_runs_at_once_on_a_fresh_store_all_finish(project):
    from mlflow.tracking import MlflowClient

    root = project / "fresh"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradtrack",
                "+experiment=fit_linear_1d",
                "tracking.log_model=false",
                f"tracking.root={root}",
                f"seed={seed}",
            ],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for seed in range(8)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    _assert_store_opens(root / "mlflow.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gradtrack")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 8
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(8)]


# A run written through gradtrack's store, then the process killed outright: no clean
# close, so a WAL store's commits are still in its -wal file when the process dies.
RUN_THEN_SIGKILL = """
import os, signal, sys
from pathlib import Path
from gradtrack.tracking.store import open_store, resolve_tracking
client, exp = open_store(resolve_tracking(None, Path(sys.argv[1])), "gradtrack")
run = client.create_run(exp, run_name="survivor")
client.log_metric(run.info.run_id, "final_loss", 0.25)
client.set_terminated(run.info.run_id, "FINISHED")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _journal_mode(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


@pytest.mark.parametrize("wal", ["1", "0"])
def test_committed_runs_survive_a_killed_process_in_either_journal_mode(tmp_path, wal):
    """Stores are WAL + synchronous=NORMAL (GRADTRACK_SQLITE_WAL=0: rollback journal);
    what a process committed before SIGKILL is in the store either way."""
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking.store import store_size

    env = {**os.environ, "GRADTRACK_SQLITE_WAL": wal}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_THEN_SIGKILL, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    db = tmp_path / "mlflow.db"
    assert _journal_mode(db) == ("wal" if wal == "1" else "delete")
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    [run] = client.search_runs([client.get_experiment_by_name("gradtrack").experiment_id])
    assert (run.info.run_name, run.info.status) == ("survivor", "FINISHED")
    assert run.data.metrics == {"final_loss": 0.25}
    size = store_size(db)  # checkpointed: the file alone now holds every commit
    assert (
        not (tmp_path / "mlflow.db-wal").exists()
        or (tmp_path / "mlflow.db-wal").stat().st_size == 0
    )
    assert size == db.stat().st_size


def _history_plan(db: Path) -> str:
    """SQLite's plan for MLflow's own query of one run's metric history."""
    import sqlite3

    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.orm import Query

    query = (
        Query(SqlMetric)
        .filter_by(run_uuid="r" * 32, key="Training/loss")
        .order_by(SqlMetric.timestamp, SqlMetric.step, SqlMetric.value)
    )
    sql = str(
        query.statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )
    con = sqlite3.connect(db)
    try:
        return " ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + sql))
    finally:
        con.close()


def _plain_mlflow_store(db: Path, runs: int = 0, points: int = 0) -> None:
    """A store made by MLflow itself (no gradtrack), with ``runs`` runs of ``points``."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("plain")
    for _ in range(runs):
        run = client.create_run(exp)
        metrics = [Metric("Training/loss", 1.0 / (s + 1), 0, s) for s in range(points)]
        client.log_batch(run.info.run_id, metrics=metrics, synchronous=True)


def test_one_runs_history_is_read_through_the_run_index_in_any_store(tmp_path):
    """A run's metric history must not cost more as the store grows: SQLite reads it
    through MLflow's (run_uuid, key, step) index, not the key-first primary key that
    scans every run's points (a sweep summary grew with the square of its jobs)."""
    import sqlite3

    from gradtrack.tracking.store import (
        METRICS_INDEX_STATS,
        open_client,
        plan_metric_queries,
        resolve_tracking,
    )

    # A store gradtrack creates.
    root = tmp_path / "new"
    open_client(resolve_tracking(None, root))
    db = root / "mlflow.db"
    assert "index_metrics_run_uuid_key_step" in _history_plan(db)
    con = sqlite3.connect(db)
    stats = dict(con.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'metrics'"))
    con.close()
    assert stats == METRICS_INDEX_STATS

    # A store MLflow made, with runs in it: SQLite's own choice is the scan ...
    old = tmp_path / "old"
    old.mkdir()
    _plain_mlflow_store(old / "mlflow.db", runs=30, points=50)
    assert "sqlite_autoindex_metrics_1" in _history_plan(old / "mlflow.db")
    # ... until gradtrack opens it; the history reads the same points.
    client = open_client(resolve_tracking(None, old))
    assert "index_metrics_run_uuid_key_step" in _history_plan(old / "mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("plain").experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "Training/loss")
    assert sorted(m.step for m in history) == list(range(50))

    # Statistics a store has already (a real ANALYZE) are left alone.
    measured = tmp_path / "measured.db"
    _plain_mlflow_store(measured, runs=3, points=5)
    con = sqlite3.connect(measured)
    con.execute("ANALYZE")
    con.commit()
    before = sorted(con.execute("SELECT * FROM sqlite_stat1"))
    con.close()
    assert plan_metric_queries(measured) is False
    con = sqlite3.connect(measured)
    assert sorted(con.execute("SELECT * FROM sqlite_stat1")) == before
    con.close()


def test_many_runs_histories_read_at_once_are_mlflows_histories(tmp_path, monkeypatch):
    """A sweep's summary reads every job's loss history in one query
    (store.metric_histories); it must give exactly what MLflow's client gives run by
    run: the same points in the same order, a NaN as NaN, runs without the metric left
    out; and a store MLflow's client reaches another way (a server) is read run by run."""
    import math

    from mlflow.entities import Metric

    from gradtrack.tracking import store
    from gradtrack.tracking.store import metric_histories, open_client, resolve_tracking

    client = open_client(resolve_tracking(None, tmp_path))
    exp = client.create_experiment("histories")
    key = "Training/loss"
    runs = [client.create_run(exp).info.run_id for _ in range(4)]
    logged = {
        runs[0]: [(3, 0.5, 10), (0, 4.0, 10), (1, float("nan"), 10), (1, 2.0, 5), (2, 1.0, 11)],
        runs[1]: [(0, 7.0, 1), (5, 6.0, 1)],
        runs[3]: [(0, 1.5, 1)],
    }
    for run_id, points in logged.items():
        metrics = [Metric(key, value, ts, step) for step, value, ts in points]
        client.log_batch(run_id, metrics=metrics + [Metric("other", 1.0, 1, 0)])
    client.log_batch(runs[2], metrics=[Metric("other", 2.0, 1, 0)])  # no loss history

    def as_mlflow(run_ids):
        out = {}
        for run_id in run_ids:
            history = client.get_metric_history(run_id, key)
            if history:
                out[run_id] = [(m.step, m.value) for m in history]
        return out

    def same(a, b):  # NaN == NaN here
        def norm(h):
            return {r: [(s, "nan" if math.isnan(v) else v) for s, v in p] for r, p in h.items()}

        return norm(a) == norm(b)

    expected = as_mlflow(runs)
    assert set(expected) == {runs[0], runs[1], runs[3]}
    assert any(math.isnan(v) for _, v in expected[runs[0]])
    assert same(metric_histories(client, runs, key), expected)
    monkeypatch.setattr(store, "HISTORY_RUNS_PER_QUERY", 2)  # several queries
    assert same(metric_histories(client, runs, key), expected)

    class ThroughAServer:  # no database behind it: one request per run
        get_metric_history = client.get_metric_history

    assert same(metric_histories(ThroughAServer(), runs, key), expected)
