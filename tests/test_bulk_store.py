"""The bulk metric writer (tracking/bulk.py) stores exactly what MLflow's log_batch stores.

Every test logs the same batches twice on a real store: to one run through MLflow's
own ``MlflowClient.log_batch``, to its twin through ``bulk.log_batch``; then the rows
of both runs (metrics, latest_metrics, logged_model_metrics, params, tags, the run's
name) must be equal, row for row. SQLite always; PostgreSQL too when it is installed
(integration).
"""

from __future__ import annotations

import math
import sqlite3
import time

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gradtrack.tracking import bulk, spool
from gradtrack.tracking.store import open_client, resolve_tracking
from team_support import postgres

BIG = 1.7976931348623157e308  # what MLflow stores for +inf


@pytest.fixture(scope="module")
def pg_uri():
    with postgres() as uri:
        yield uri


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.integration])],
)
def client(request, tmp_path):
    if request.param == "sqlite":
        return open_client(resolve_tracking(None, tmp_path / "mlruns"))
    return MlflowClient(tracking_uri=request.getfixturevalue("pg_uri"))


class Twins:
    """Two runs of one experiment, each with a LoggedModel: ``ref`` gets MLflow's
    log_batch, ``new`` gets the bulk writer."""

    def __init__(self, client, name: str):
        self.client = client
        self.store = bulk.sql_store(client)
        assert self.store is not None
        self.exp = client.create_experiment(f"{name}-{time.time_ns()}")
        self.runs, self.models = [], []
        for _ in range(2):
            run_id = client.create_run(self.exp, run_name="twin").info.run_id
            model = client.create_logged_model(self.exp, name="m", source_run_id=run_id)
            self.runs.append(run_id)
            self.models.append(model.model_id)

    def log(self, make) -> str:
        """``make(model_id)`` -> (metrics, params, tags), logged to both; the bulk path taken."""
        ref, new = self.runs
        self.client.log_batch(ref, *make(self.models[0]), synchronous=True)
        return bulk.log_batch(self.client, self.store, new, *make(self.models[1]))

    def rows(self, i: int) -> dict:
        import sqlalchemy

        run_id, model_id = self.runs[i], self.models[i]
        tables = {
            "metrics": "run_uuid",
            "latest_metrics": "run_uuid",
            "params": "run_uuid",
            "tags": "run_uuid",
            "logged_model_metrics": "run_id",
            "runs": "run_uuid",
        }
        names = {run_id: "RUN", model_id: "MODEL"}
        out = {}
        with self.store.engine.connect() as conn:
            for table, col in tables.items():
                query = sqlalchemy.text(f"SELECT * FROM {table} WHERE {col} = :r")
                got = []
                for row in conn.execute(query, {"r": run_id}).mappings():
                    row = {k: names.get(v, v) if isinstance(v, str) else v for k, v in row.items()}
                    if table == "runs":
                        row = {k: row[k] for k in ("name", "status", "lifecycle_stage")}
                    if table == "tags" and row["key"] == "mlflow.loggedModels":
                        row["value"] = row["value"].replace(model_id, "MODEL")
                    got.append(tuple(sorted(row.items())))
                out[table] = sorted(got, key=repr)
        return out

    def assert_same(self) -> dict:
        ref, new = self.rows(0), self.rows(1)
        for table in ref:
            assert new[table] == ref[table], table
        return new


def _points(key, steps, values, ts, **kw):
    return [Metric(key, float(v), ts, int(s), **kw) for s, v in zip(steps, values, strict=True)]


def test_batches_store_the_same_rows_as_mlflow(client):
    """First batch, higher and lower steps, equal steps at later timestamps, equal step and
    timestamp with other values, NaN and +/-inf, a point sent twice, model metrics."""
    t = Twins(client, "same-rows")
    T = 1_700_000_000_000

    def first(model):
        metrics = _points("loss", range(100), [1 / (s + 1) for s in range(100)], T)
        metrics += _points("grad_norm", range(100), [2.0**-s for s in range(100)], T)
        metrics += [
            Metric("r2", 0.9, T, 99, model_id=model, dataset_name="d", dataset_digest="abc"),
            Metric("mse", 0.1, T, 99, model_id=model),
        ]
        params = [Param("lr", "0.1"), Param("epochs", "100"), Param("seed", 0)]
        tags = [RunTag("backend", "numpy"), RunTag("phase", "train")]
        return metrics, params, tags

    assert t.log(first) == "bulk"
    latest = {dict(r)["key"] for r in t.assert_same()["latest_metrics"]}
    assert latest == {"loss", "grad_norm", "r2", "mse"}

    def steps_up_and_down(model):
        metrics = _points("loss", range(100, 110), [0.5] * 10, T + 1)  # higher steps
        metrics += _points("loss", range(10, 20), [7.0] * 10, T + 2)  # lower, later
        metrics += _points("grad_norm", [99], [5.0], T + 1)  # same step, later timestamp
        metrics += _points("grad_norm", [99], [6.0], T - 1)  # same step, earlier
        return metrics, [], []

    assert t.log(steps_up_and_down) == "bulk"
    t.assert_same()

    def same_step_and_time(model):
        # Same step and timestamp, other values: the larger value is the latest.
        return _points("loss", [109, 109, 109], [-5.0, 1e9, 3.0], T + 1), [], []

    assert t.log(same_step_and_time) == "bulk"
    rows = t.assert_same()
    loss = [r for r in rows["latest_metrics"] if ("key", "loss") in r][0]
    assert ("value", 1e9) in loss

    def non_finite(model):
        metrics = _points("odd", [0, 1, 2], [math.nan, math.inf, -math.inf], T)
        metrics += _points("loss", [500], [math.nan], T)  # NaN becomes the latest loss
        # Same step and timestamp, one NaN (stored as 0) and one 0.0: equal by MLflow's
        # rule, so the first one stays the latest.
        metrics += _points("tie", [5, 5], [math.nan, 0.0], T)
        metrics += [Metric("odd_model", math.inf, T, 3, model_id=model)]
        return metrics, [], []

    assert t.log(non_finite) == "bulk"
    rows = t.assert_same()
    assert {dict(r)["value"] for r in rows["metrics"] if ("key", "odd") in r} == {0.0, BIG, -BIG}
    tie = [dict(r) for r in rows["latest_metrics"] if ("key", "tie") in r][0]
    assert tie["is_nan"] in (True, 1)

    def repeats_in_batch(model):
        p = Metric("rep", 1.0, T, 1)
        return [p, p, Metric("rep", 1.0, T, 1), Metric("rep", 2.0, T, 2)], [], []

    assert t.log(repeats_in_batch) == "bulk"
    t.assert_same()

    def updates(model):
        # A tag's new value, the same tag twice (the last wins), a param sent again.
        tags = [RunTag("phase", "eval"), RunTag("extra", "a"), RunTag("extra", "b")]
        return _points("loss", [600], [0.25], T), [Param("lr", "0.1")], tags

    assert t.log(updates) == "bulk"
    rows = t.assert_same()
    assert (("key", "extra"), ("run_uuid", "RUN"), ("value", "b")) in rows["tags"]

    # A batch sent twice (the spool resends after a cut): stored once, by MLflow's recovery.
    assert t.log(first) == "mlflow"
    t.assert_same()

    def some_new_some_old(model):
        metrics, _, _ = first(model)
        return metrics[:5] + _points("loss", [700, 701], [0.1, 0.2], T + 3), [], []

    assert t.log(some_new_some_old) == "mlflow"
    t.assert_same()

    def one_row_once_sanitized(model):
        # Two NaN objects at one step and time, and +inf next to the largest float:
        # distinct points to MLflow's dedupe, one row each once stored.
        metrics = _points("nan2", [1, 1], [math.nan, math.nan], T)
        metrics += _points("inf2", [1, 1], [math.inf, BIG], T)
        return metrics, [], []

    assert t.log(one_row_once_sanitized) == "mlflow"
    t.assert_same()

    def renamed(model):
        return _points("loss", [800], [0.3], T), [], [RunTag("mlflow.runName", "renamed")]

    assert t.log(renamed) == "mlflow"
    rows = t.assert_same()
    assert rows["runs"] == [
        (("lifecycle_stage", "active"), ("name", "renamed"), ("status", "RUNNING"))
    ]


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(MlflowException) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_errors_are_mlflows_and_nothing_is_written(client):
    t = Twins(client, "errors")
    ref, new = t.runs
    T = 1_700_000_000_000
    good = _points("loss", range(3), [1.0, 0.5, 0.25], T)
    client.log_batch(ref, metrics=good, params=[Param("lr", "0.1")], synchronous=True)
    bulk.log_batch(client, t.store, new, good, [Param("lr", "0.1")])

    bad_value = [*good[:1], Metric("loss", None, T, 9)]
    changed_param = (_points("loss", [10], [0.1], T), [Param("lr", "0.2")])
    bad_key = [Metric("../up", 1.0, T, 0)]
    for metrics, params in [(bad_value, []), changed_param, (bad_key, [])]:
        want = _error(client.log_batch, ref, metrics=metrics, params=params)
        got = _error(bulk.log_batch, client, t.store, new, metrics, params)
        assert got.replace(new, ref) == want
    t.assert_same()

    for run_id in (ref, new):
        client.delete_run(run_id)
    fresh = _points("loss", [50], [0.01], T)  # not stored yet: the bulk path's own check
    want = _error(client.log_batch, ref, metrics=fresh)
    got = _error(bulk.log_batch, client, t.store, new, fresh)
    assert got.replace(new, ref) == want
    assert "must be in the 'active' state" in got
    t.assert_same()


def test_tracked_runs_use_it_on_sql_stores_only(tmp_path):
    local = resolve_tracking(None, tmp_path / "mlruns")
    assert spool.guard(open_client(local), local)._sql_store is not None
    server = resolve_tracking("http://127.0.0.1:9", tmp_path / "mlruns")
    # (no server is asked: the client is only built)
    assert spool.guard(MlflowClient(tracking_uri=server.uri), server)._sql_store is None


def test_a_store_without_the_tables_is_left_to_mlflow(tmp_path):
    target = resolve_tracking(None, tmp_path / "mlruns")
    client = open_client(target)
    with sqlite3.connect(target.uri[len("sqlite:///") :]) as db:
        db.execute("DROP TABLE logged_model_metrics")
    assert bulk.sql_store(client) is None
