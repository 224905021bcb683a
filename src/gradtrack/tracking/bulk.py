"""A run's batch of metric points into MLflow's SQL store, one statement per table.

MLflow's ``SqlAlchemyStore.log_batch`` builds one ORM object per point, flushes them
through the session's unit of work, loads and updates ``latest_metrics`` through the
ORM too, validates every point, and opens five sessions for one batch: ~23 ms of a
fit_linear_1d job's flush (400 points, 40 params, 14 tags, 10 model metrics). This
module writes exactly the same rows with SQLAlchemy Core ``executemany`` through
MLflow's own table objects, in one transaction of the store's own managed session:
``params``, ``metrics``, ``latest_metrics`` (the newest point per key by MLflow's rule:
step, then timestamp, then value), ``logged_model_metrics`` for points linked to a
LoggedModel, and ``tags`` (~5 ms).

It is used only for a ``SqlAlchemyStore`` of MLflow's own class running in this
process on SQLite or PostgreSQL; an http(s) tracking server keeps the spooling path.
Everything unusual goes through MLflow's own code, so the stored rows never differ:

* a batch that is not plainly valid is validated by MLflow (same checks, same
  messages) before anything is written;
* a point already stored (a batch sent twice: the spool relies on MLflow storing it
  once), two points that are one row once NaN/inf are sanitized, any other key
  violation, a param whose value changes, or the run name tag rolls the transaction
  back, and the store's ``_log_params``, ``_log_metrics``, ``_log_model_metrics`` and
  ``_set_tags`` write the batch as ``log_batch`` would (or raise its error);
* batches larger than one MLflow request, asynchronous logging, other databases, store
  subclasses (which may scope their queries) and a schema without the tables and
  columns written here take the client's ``log_batch``.
"""

from __future__ import annotations

import weakref

# Tables (and their columns) the fast path writes; a store whose schema lacks one of
# them is left to MLflow.
_NEEDED = {
    "params": {"key", "value", "run_uuid"},
    "tags": {"key", "value", "run_uuid"},
    "metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "logged_model_metrics": {
        "model_id",
        "metric_name",
        "metric_timestamp_ms",
        "metric_step",
        "metric_value",
        "experiment_id",
        "run_id",
        "dataset_uuid",
        "dataset_name",
        "dataset_digest",
    },
}
# The store's own methods this module calls (MLflow 3.17's SqlAlchemyStore).
_STORE_METHODS = (
    "ManagedSessionMaker",
    "engine",
    "sanitize_metric_value",
    "_get_run",
    "_check_run_is_active",
    "_run_with_deadlock_retry",
    "_log_params",
    "_log_metrics",
    "_log_model_metrics",
    "_set_tags",
)
_KEY_CHUNK = 500  # keys per latest_metrics lookup, as MLflow chunks them
_schema_ok: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> bool


def sql_store(client):
    """The ``SqlAlchemyStore`` behind ``client`` when the fast path may write to it, else None."""
    try:
        from mlflow.store.db.db_types import POSTGRES, SQLITE
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:
        return None
    # Exactly MLflow's class: a subclass (workspace-aware stores) may scope its queries.
    if type(store) is not SqlAlchemyStore or store.db_type not in (SQLITE, POSTGRES):
        return None
    if not all(hasattr(store, name) for name in _STORE_METHODS):
        return None  # another MLflow release: its own log_batch
    return store if _has_schema(store.engine) else None


def _has_schema(engine) -> bool:
    ok = _schema_ok.get(engine)
    if ok is None:
        import sqlalchemy

        try:
            inspector = sqlalchemy.inspect(engine)
            ok = all(
                cols <= {c["name"] for c in inspector.get_columns(table)}
                for table, cols in _NEEDED.items()
            )
        except Exception:
            ok = False
        _schema_ok[engine] = ok
    return ok


def log_batch(client, store, run_id, metrics=(), params=(), tags=(), synchronous=True):
    """``client.log_batch(...)`` with the metric points written in bulk to ``store``.

    ``store`` is ``sql_store(client)``. What MlflowClient and its tracking client do
    before the store is called (values to float, the active model's id on unlinked
    points, params as text) is done the same way here. Returns the path that wrote the
    batch: ``"bulk"``, ``"mlflow"`` (MLflow's store methods) or ``"client"`` (the
    client's own ``log_batch``).
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking.fluent import get_active_model_id
    from mlflow.tracking.metric_value_conversion_utils import (
        convert_metric_value_to_float_if_possible,
    )
    from mlflow.utils.validation import (
        MAX_ENTITIES_PER_BATCH,
        MAX_METRICS_PER_BATCH,
        MAX_PARAMS_TAGS_PER_BATCH,
    )

    if (
        not synchronous
        or not metrics
        or len(metrics) > MAX_METRICS_PER_BATCH
        or len(params) > MAX_PARAMS_TAGS_PER_BATCH
        or len(tags) > MAX_PARAMS_TAGS_PER_BATCH
        or len(metrics) + len(params) + len(tags) > MAX_ENTITIES_PER_BATCH
    ):
        # Nothing to gain, or MLflow would split it into several requests.
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)
        return "client"
    active_model = get_active_model_id()
    metrics = [
        m
        # The same point: MLflow would copy it unchanged.
        if type(m) is Metric
        and type(m.value) is float
        and (m.model_id or active_model) is m.model_id
        else Metric(
            key=m.key,
            value=convert_metric_value_to_float_if_possible(m.value),
            timestamp=m.timestamp,
            step=m.step,
            dataset_name=m.dataset_name,
            dataset_digest=m.dataset_digest,
            model_id=m.model_id or active_model,
            run_id=m.run_id,
        )
        for m in metrics
    ]
    params = [Param(key=p.key, value=str(p.value)) for p in params]
    return store_log_batch(store, run_id, metrics, params, tags)


def store_log_batch(store, run_id, metrics, params, tags) -> str:
    """``store.log_batch(run_id, metrics, params, tags)``, the metrics in bulk.

    Returns which path wrote the batch: ``"bulk"``, or ``"mlflow"`` when the fast
    transaction was rolled back and MLflow's own methods wrote it.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
    from mlflow.utils.validation import (
        _validate_batch_log_data,
        _validate_batch_log_limits,
        _validate_param_keys_unique,
        _validate_run_id,
    )

    _validate_run_id(run_id)
    if not _plain(metrics):
        _validate_batch_log_data(metrics, [], [])  # MLflow's error for the first bad point
    _, params, tags = _validate_batch_log_data([], params, tags)
    _validate_batch_log_limits(metrics, params, tags)
    _validate_param_keys_unique(params)
    try:
        experiment_id = store._run_with_deadlock_retry(_write, store, run_id, metrics, params, tags)
        if experiment_id is not None:
            return "bulk"
        # MLflow's log_batch, step by step (each checks the run is there and active).
        store._log_params(run_id, params)
        store._log_metrics(run_id, metrics)
        with store.ManagedSessionMaker() as session:
            experiment_id = store._get_run(run_uuid=run_id, session=session).experiment_id
        store._log_model_metrics(run_id, metrics, experiment_id=experiment_id)
        store._set_tags(run_id, tags)
        return "mlflow"
    except MlflowException:
        raise
    except Exception as exc:
        raise MlflowException(exc, INTERNAL_ERROR) from exc


def _plain(metrics) -> bool:
    """True when MLflow's validation passes every point, checked in a fraction of its
    time: float values, non-negative int timestamps, int steps, and each distinct key
    validated once by MLflow itself. (False: MLflow validates them all.)"""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric

    keys = set()
    for m in metrics:
        ts = m.timestamp
        if not (
            type(m.key) is str
            and type(m.value) is float
            and type(ts) is int
            and ts >= 0
            and type(m.step) is int
        ):
            return False
        keys.add(m.key)
    try:
        for key in keys:
            _validate_metric(key, 0.0, 0, 0)
    except MlflowException:
        return False
    return True


class _Unusual(Exception):
    """The batch needs MLflow's own handling (see ``_write``)."""


def _write(store, run_id, metrics, params, tags):
    """The batch in one transaction, as MLflow's ``_log_params``, ``_log_metrics``,
    ``_log_model_metrics`` and ``_set_tags`` would write it (validated input).

    Returns the run's experiment id, or None with nothing written when the batch needs
    MLflow's own code: a param whose value changes (MLflow raises its error), the run
    name tag (MLflow updates the run too), a key violation (a point already stored:
    MLflow stores it once; two points that are one row once NaN/inf are sanitized; a
    model that does not exist).
    """
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlLoggedModelMetric,
        SqlMetric,
        SqlParam,
        SqlTag,
    )
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    if any(t.key == MLFLOW_RUN_NAME for t in tags):
        return None
    sanitize = store.sanitize_metric_value
    # The run's points: one row per distinct Metric, in batch order (as _log_metrics).
    rows = []
    seen = set()
    for m in metrics:
        if m not in seen:
            is_nan, value = sanitize(m.value)
            rows.append(
                {
                    "run_uuid": run_id,
                    "key": m.key,
                    "value": value,
                    "timestamp": m.timestamp,
                    "step": m.step,
                    "is_nan": is_nan,
                }
            )
        seen.add(m)
    linked = []  # (metric, stored value) of points linked to a model (_log_model_metrics)
    seen = set()
    for m in metrics:
        if m.model_id is None or m in seen:
            continue
        seen.add(m)
        linked.append((m, sanitize(m.value)[1]))

    with store.ManagedSessionMaker(read_only=False) as session:
        run = store._get_run(run_uuid=run_id, session=session)
        store._check_run_is_active(run)
        experiment_id = run.experiment_id
        try:
            if params:
                _insert_params(session, SqlParam.__table__, run_id, params)
            if rows:
                session.execute(sqlalchemy.insert(SqlMetric.__table__), rows)
                _update_latest(session, SqlLatestMetric.__table__, run_id, rows)
            if linked:
                session.execute(
                    sqlalchemy.insert(SqlLoggedModelMetric.__table__),
                    [
                        {
                            "model_id": m.model_id,
                            "metric_name": m.key,
                            "metric_timestamp_ms": m.timestamp,
                            "metric_step": m.step,
                            "metric_value": value,
                            "experiment_id": experiment_id,
                            "run_id": run_id,
                            "dataset_uuid": None,
                            "dataset_name": m.dataset_name,
                            "dataset_digest": m.dataset_digest,
                        }
                        for m, value in linked
                    ],
                )
            if tags:
                _set_tags(session, SqlTag.__table__, run_id, tags)
            session.commit()
            return experiment_id
        except (sqlalchemy.exc.IntegrityError, _Unusual):
            session.rollback()
            return None


def _insert_params(session, table, run_id, params) -> None:
    """``_log_params``: new keys inserted, a known key with its known value skipped."""
    import sqlalchemy

    query = sqlalchemy.select(table.c.key, table.c.value).where(table.c.run_uuid == run_id)
    known = dict(session.execute(query).all())
    if any(p.key in known and known[p.key] != p.value for p in params):
        raise _Unusual  # MLflow raises "Changing param values is not allowed"
    new = [
        {"run_uuid": run_id, "key": p.key, "value": p.value} for p in params if p.key not in known
    ]
    if new:
        session.execute(sqlalchemy.insert(table), new)


def _set_tags(session, table, run_id, tags) -> None:
    """``_set_tags`` (without the run name tag): a key's last value, updated or inserted."""
    import sqlalchemy

    last = {t.key: t.value for t in tags}
    query = sqlalchemy.select(table.c.key).where(
        table.c.run_uuid == run_id, table.c.key.in_(list(last))
    )
    known = set(session.execute(query).scalars())
    new = [{"run_uuid": run_id, "key": k, "value": v} for k, v in last.items() if k not in known]
    if new:
        session.execute(sqlalchemy.insert(table), new)
    _update_by_key(session, table, run_id, {k: {"value": v} for k, v in last.items() if k in known})


def _newer(a, b) -> bool:
    """MLflow's rule: ``a`` is strictly more recent than ``b`` by (step, timestamp, value)."""
    return (a["step"], a["timestamp"], a["value"]) > (b["step"], b["timestamp"], b["value"])


def _update_latest(session, table, run_id, rows) -> None:
    """``_update_latest_metrics_if_necessary`` for the rows just inserted, in Core."""
    import sqlalchemy

    keys = sorted({r["key"] for r in rows})
    stored = {}
    for i in range(0, len(keys), _KEY_CHUNK):
        # One locking read (MLflow reads the keys first, then locks the rows it found, to
        # avoid MySQL's gap locks; this path runs on SQLite and PostgreSQL only).
        query = (
            sqlalchemy.select(
                table.c.key, table.c.value, table.c.timestamp, table.c.step, table.c.is_nan
            )
            .where(table.c.run_uuid == run_id, table.c.key.in_(keys[i : i + _KEY_CHUNK]))
            .order_by(table.c.run_uuid, table.c.key)
            .with_for_update()
        )
        for key, value, timestamp, step, is_nan in session.execute(query):
            stored[key] = {"value": value, "timestamp": timestamp, "step": step, "is_nan": is_nan}
    new = {}
    changed = {}
    for r in rows:
        key = r["key"]
        old = stored.get(key)
        if old is None:
            if key not in new or _newer(r, new[key]):
                new[key] = r
        elif _newer(r, old):
            stored[key] = changed[key] = r
    if new:
        session.execute(sqlalchemy.insert(table), list(new.values()))
    columns = ("value", "timestamp", "step", "is_nan")
    _update_by_key(
        session, table, run_id, {k: {c: r[c] for c in columns} for k, r in changed.items()}
    )


def _update_by_key(session, table, run_id, rows: dict[str, dict]) -> None:
    """Set the given columns of the run's row for each key: ``{key: {column: value}}``
    (every key with the same columns), in one executemany."""
    import sqlalchemy

    if not rows:
        return
    columns = list(next(iter(rows.values())))
    session.execute(
        sqlalchemy.update(table)
        .where(
            table.c.run_uuid == sqlalchemy.bindparam("b_run"),
            table.c.key == sqlalchemy.bindparam("b_key"),
        )
        .values({c: sqlalchemy.bindparam(f"b_{c}") for c in columns}),
        [
            {"b_run": run_id, "b_key": k, **{f"b_{c}": v for c, v in values.items()}}
            for k, values in rows.items()
        ],
    )
