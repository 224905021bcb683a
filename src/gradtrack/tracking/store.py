"""Where runs go: the embedded SQLite store under mlruns/, or a tracking server."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradtrack.errors import TrackingError

log = logging.getLogger(__name__)

# An unreachable server should fail in seconds, not after minutes of MLflow's retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# MLflow's usage telemetry posts to an outside address from a background thread: off
# unless the user turns it on (offline clusters, and no share of every run's cost).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
PREFLIGHT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TrackingTarget:
    uri: str  # tracking URI
    artifact_root: str | None  # artifact location for new experiments (local store only)
    # Where a run keeps what a tracking server could not take (http/https only; see
    # tracking/spool.py): <tracking.root>/.gradtrack-spool.
    spool: str | None = None


def resolve_tracking(uri: str | None, root_dir: Path) -> TrackingTarget:
    """An explicit URI wins; otherwise SQLite at <root_dir>/mlflow.db, artifacts beside it.

    The path is absolute, so Hydra's per-run working directories never scatter stores.
    """
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # sqlite:///relative.db: pin it to an absolute path now.
            rel = uri[len("sqlite:///") :]
            uri = "sqlite:///" + str(Path(rel).resolve())
        spool = None
        if uri.startswith(("http://", "https://")):
            from gradtrack.tracking.spool import spool_root

            spool = str(spool_root(root_dir))
        return TrackingTarget(uri=uri, artifact_root=None, spool=spool)
    root_dir = root_dir.resolve()
    return TrackingTarget(
        uri=f"sqlite:///{root_dir / 'mlflow.db'}",
        artifact_root=(root_dir / "artifacts").as_uri(),
    )


def check_server(uri: str, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail in seconds, with a plain message, when nothing answers at an http(s) URI.

    Only a connection failure counts: a server behind a proxy may answer /health with
    an HTTP error and still serve the tracking API.
    """
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking.uri={uri}: unreachable, no MLflow tracking server answers there "
            f"({reason}). Start one (mlflow server --host 127.0.0.1 --port PORT "
            "--backend-store-uri sqlite:///mlflow.db), fix tracking.uri, use tracking=local "
            "for the embedded store, or tracking.enabled=false to train without tracking."
        ) from exc


def ensure_experiment(client, name: str, target: TrackingTarget) -> str:
    """Create (or find) the experiment; raises TrackingError if the store is unusable."""
    if target.uri.startswith(("http://", "https://")):
        check_server(target.uri)
    if target.uri.startswith("sqlite:///"):
        _check_writable(Path(target.uri[len("sqlite:///") :]))
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=target.artifact_root)
    except TrackingError:
        raise
    except Exception as exc:  # mlflow raises many types for an unreachable store
        if exp_created_concurrently := _lookup(client, name):
            return exp_created_concurrently
        raise TrackingError(
            f"tracking store {target.uri}: unreachable or unusable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Start the server or fix "
            "tracking.uri; use tracking.enabled=false to train without tracking."
        ) from exc


def _lookup(client, name: str) -> str | None:
    try:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else None
    except Exception:
        return None


# -- opening a store -------------------------------------------------------------------
#
# A new SQLite store is created by the first MlflowClient that touches it: building
# the client builds mlflow's SqlAlchemyStore, whose constructor creates the tables and
# runs every alembic migration, unlocked. Several processes doing that at once on a
# fresh store crash each other and can leave it half-migrated. So a new store is born
# once, under a file lock beside it, in a temporary file renamed into place only when
# complete and verified: the path either does not exist or holds a whole store.
#
# A tracking server (http/https) migrated its own database when it started; nothing
# to lock here. A database URI used directly (postgresql://, mysql://) cannot be
# locked across hosts: mlflow creates it on first use, so create it once first
# (`mlflow db upgrade URI`, or start the server on it) before a parallel sweep.


# How often one process looks for runs left RUNNING by dead processes, per store and
# experiment. The search reads every run of the experiment on this host (SQLite has no
# index on a run's status): 2.6 ms in an experiment of 640 runs, 17 ms at 6,400. Each
# job of a sweep opens the store, so scanning at every open made a job's cost grow
# with the store (a 640-job sweep into 6,400 runs: 11 s of scans). Once a minute per
# process keeps a long-lived process (a notebook, a sweep worker) finding runs that
# died since, and costs a sweep next to nothing.
STALE_SCAN_SECONDS = 60.0
_last_stale_scan: dict[tuple[str, str], float] = {}  # (uri, experiment id) -> monotonic


def open_store(target: TrackingTarget, experiment: str):
    """(client, experiment_id): the store opened (created safely if new), the
    experiment found or created, and runs left RUNNING by dead processes ended (at most
    once every STALE_SCAN_SECONDS in a process)."""
    client = open_client(target)
    experiment_id = ensure_experiment(client, experiment, target)
    key = (target.uri, experiment_id)
    last = _last_stale_scan.get(key)
    if last is None or time.monotonic() - last >= STALE_SCAN_SECONDS:
        end_stale_runs(client, [experiment_id])
        _last_stale_scan[key] = time.monotonic()
    return client, experiment_id


def open_client(target: TrackingTarget):
    """An MlflowClient on ``target``; a new SQLite store is created exactly once."""
    from mlflow.tracking import MlflowClient

    if target.uri.startswith("sqlite:///"):
        db = Path(target.uri[len("sqlite:///") :])
        _check_writable(db)
        if not _store_exists(db):
            _create_sqlite_store(db)
        else:
            plan_metric_queries(db)  # a store made by MLflow itself, or before this
        _use_wal(db)
    return MlflowClient(tracking_uri=target.uri)


# -- the query plan for one run's metric history ----------------------------------------
#
# MLflow reads one run's history of one metric (a sweep summary's loss curves, the UI's
# charts) with ``WHERE run_uuid = ? AND key = ?``. Without statistics SQLite's planner
# answers it from the metrics table's primary key, which starts with ``key`` and covers
# every column, so it reads every point of that key in the whole store: 0.7 ms a
# history in a store of 64 runs, 7.7 ms at 640 runs, and a sweep's summary (one history
# per job) grew with the square of its job count. With statistics it takes MLflow's
# ``(run_uuid, key, step)`` index: 0.17 ms at 640 runs, whatever the store's size.
# ANALYZE measures whole tables and a new store is empty, so gradtrack writes the shape
# of the data instead, as SQLite allows (https://sqlite.org/lang_analyze.html): each
# index's row count, then rows per distinct value of its first 1, 2, ... columns. Far
# fewer points share a run than share a key. A store that has statistics for its
# metrics table already (a real ANALYZE) is left as it is.
METRICS_INDEX_STATS = {
    "index_metrics_run_uuid_key_step": "1000000 1000 100 1",  # run_uuid, key, step
    "index_metrics_run_uuid": "1000000 1000",  # run_uuid
    "sqlite_autoindex_metrics_1": "1000000 100000 10 1 1 1 1",  # the primary key
}


def plan_metric_queries(db: Path) -> bool:
    """Give the store's metrics table planner statistics unless it has some (see
    above); True if they were written. Never fails the caller: a store that is busy
    gets them from a later open."""
    import sqlite3

    try:
        con = sqlite3.connect(db, timeout=1.0, isolation_level=None)
    except sqlite3.Error as exc:
        log.debug("could not open %s to plan its metric queries: %s", db, exc)
        return False
    try:
        return _write_metric_stats(con)
    except sqlite3.Error as exc:  # locked by a writer, read-only, not a store
        log.debug("could not write planner statistics to %s: %s", db, exc)
        return False
    finally:
        con.close()


def _write_metric_stats(con) -> bool:
    def exists(kind: str, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?"
        return con.execute(sql, (kind, name)).fetchone() is not None

    def planned() -> bool:
        if not exists("table", "sqlite_stat1"):
            return False
        sql = "SELECT 1 FROM sqlite_stat1 WHERE tbl = 'metrics' LIMIT 1"
        return con.execute(sql).fetchone() is not None

    if planned() or not exists("index", "index_metrics_run_uuid_key_step"):
        return False  # planned already, or not MLflow's schema: leave it to SQLite
    con.execute("BEGIN IMMEDIATE")
    try:
        if planned():  # another process wrote them while we waited
            con.execute("ROLLBACK")
            return False
        con.execute("ANALYZE sqlite_master")  # creates sqlite_stat1, reads no table
        for index, stat in METRICS_INDEX_STATS.items():
            if exists("index", index):
                con.execute(
                    "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('metrics', ?, ?)",
                    (index, stat),
                )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True


# -- many runs' histories of one metric at once -----------------------------------------
#
# A sweep's summary draws every job's loss curve. MLflow's client reads one history per
# call, each a query that builds an ORM object per point: 64 jobs of 200 points took
# 0.45 s, at the end of the sweep. A store in a database (SQLite, PostgreSQL) is read
# in one query per HISTORY_RUNS_PER_QUERY runs instead, plain rows; a server is asked
# run by run, as MLflow's client does.
HISTORY_RUNS_PER_QUERY = 500  # bound variables per statement stay far below any limit


def metric_histories(client, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value), ...] of its ``key`` history, in the order MLflow's
    ``get_metric_history`` gives (timestamp, step, value); a run without one is left out.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not callable(getattr(store, "ManagedSessionMaker", None)):  # not a database store
        out = {}
        for run_id in run_ids:
            points = client.get_metric_history(run_id, key)
            if points:
                out[run_id] = [(m.step, m.value) for m in points]
        return out
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import select

    out: dict[str, list[tuple[int, float]]] = {}
    ids = list(dict.fromkeys(run_ids))
    for i in range(0, len(ids), HISTORY_RUNS_PER_QUERY):
        query = (
            select(SqlMetric.run_uuid, SqlMetric.step, SqlMetric.value, SqlMetric.is_nan)
            .where(
                SqlMetric.key == key, SqlMetric.run_uuid.in_(ids[i : i + HISTORY_RUNS_PER_QUERY])
            )
            .order_by(SqlMetric.run_uuid, SqlMetric.timestamp, SqlMetric.step, SqlMetric.value)
        )
        with store.ManagedSessionMaker() as session:
            for run_id, step, value, is_nan in session.execute(query):
                # as MLflow's SqlMetric.to_mlflow_entity: a NaN is stored as 0 and a flag
                out.setdefault(run_id, []).append((step, float("nan") if is_nan else value))
    return out


# -- commits without a disk flush each -------------------------------------------------
#
# MLflow commits every call (a run's create, each batch, its inputs, model, end: ~20 a
# run), and SQLite's default rollback journal flushes the disk (fsync) several times
# per commit: ~10 ms each on this machine, over half of a small sweep job's tracking
# cost. In WAL mode with synchronous=NORMAL a commit is an append to the -wal file and
# the disk is flushed only at checkpoints. A process that crashes or is killed loses
# nothing committed; a power cut can lose the last commits but never corrupts the
# store (SQLite's documented guarantee). Readers no longer block the writer, which
# parallel sweep jobs on one store also like. WAL needs the store on a local disk
# (not NFS); set GRADTRACK_SQLITE_WAL=0 to keep SQLite's rollback journal there.
ENV_WAL = "GRADTRACK_SQLITE_WAL"
WAL_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
# A store being created is a temporary file, renamed into place once it is whole: its
# migration needs no flush per commit (~100 commits), only one before the rename.
CREATING_PRAGMAS = ("PRAGMA journal_mode=MEMORY", "PRAGMA synchronous=OFF")
# SQLite file (absolute path) -> pragmas for this process's new connections to it.
_PRAGMAS: dict[str, tuple[str, ...]] = {}


def wal_enabled() -> bool:
    return os.environ.get(ENV_WAL, "1").strip().lower() not in ("0", "false", "no", "off")


def _use_wal(db: Path) -> None:
    """Put ``db`` in WAL mode (persistent, once) and make this process's MLflow
    connections to it commit with synchronous=NORMAL."""
    if wal_enabled():
        _set_pragmas(db, WAL_PRAGMAS)


def _set_pragmas(db: Path, pragmas: tuple[str, ...] | None) -> None:
    import sqlalchemy

    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _on_connect):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _on_connect)
    for path in {str(db.absolute()), str(db.resolve())}:  # SQLite may name either
        if pragmas:
            _PRAGMAS[path] = pragmas
        else:
            _PRAGMAS.pop(path, None)


def store_size(db: Path) -> int:
    """Bytes of the SQLite store ``db`` holding every commit: in WAL mode, committed
    pages wait in the -wal file until a checkpoint, so checkpoint them in first."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    return db.stat().st_size


def _on_connect(dbapi_conn, _record) -> None:
    """Every new SQLAlchemy connection of this process: the pragmas for our stores."""
    import sqlite3

    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    row = None
    try:
        row = dbapi_conn.execute("PRAGMA database_list").fetchone()
        pragmas = _PRAGMAS.get(row[2]) if row else None
        # journal_mode=WAL is a no-op once the store is in WAL mode; while another
        # process holds a lock the switch fails, and the store keeps its journal
        # until a later connection.
        for pragma in pragmas or ():
            dbapi_conn.execute(pragma).fetchall()
    except sqlite3.Error as exc:
        log.debug("could not set pragmas on %s: %s", row, exc)


def end_stale_runs(client, experiment_ids: list[str]) -> None:
    """End runs of this machine whose process is gone; never fails the caller.

    One search (RUNNING runs owned by this host) per open: a small fixed cost.
    """
    from gradtrack.tracking.owner import end_dead_runs

    try:
        for dead in end_dead_runs(client, experiment_ids):
            log.warning(
                "run %s (%s) was left RUNNING by process %s, which is gone: ended FAILED",
                dead.run_id,
                dead.name,
                dead.pid,
            )
    except Exception as exc:  # a scan that fails must not stop a run from starting
        log.warning("could not check for runs left by dead processes: %s", exc)


def _check_writable(db: Path) -> None:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"tracking store {db.parent}: cannot create the directory ({exc}). "
            "Set tracking.root to a writable folder."
        ) from exc
    if (db.exists() and not os.access(db, os.W_OK)) or not os.access(db.parent, os.W_OK):
        raise TrackingError(
            f"tracking store {db}: not writable. Fix its permissions or set "
            "tracking.root to a writable folder."
        )


def _store_exists(db: Path) -> bool:
    # gradtrack only ever renames a finished store into place, so one that exists is
    # whole (a 0-byte file is what a bare sqlite connect leaves: not a store yet).
    try:
        return db.stat().st_size > 0
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def store_lock(db: Path):
    """Exclusive lock on ``<db>.lock``, held by one process at a time (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent first use is not protected there
        yield
        return
    with open(f"{db}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, even on kill -9
        yield


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT/SIGTERM for the duration; each one that arrived is raised again after.

    Python-level handlers, not a blocked signal mask: numpy's BLAS and other native
    threads do not share the main thread's mask, so the kernel hands a blocked
    SIGTERM to one of them and the process dies on the spot. A Python handler runs
    in the main thread whichever thread received the signal. Only the main thread
    can install handlers; elsewhere this holds nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(arrived):  # each kind once, in arrival order
            signal.raise_signal(s)


def _create_sqlite_store(db: Path) -> None:
    """Create, migrate and verify a new store at ``db``, once across processes."""
    with store_lock(db):
        if _store_exists(db):
            return  # another process created it while we waited
        log.info("creating the tracking store %s", db)
        tmp = db.with_name(f"{db.name}.creating-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        # Ctrl-C / SIGTERM during the migration waits until it is done: a slow exit
        # beats a store no client can open.
        with signals_held():
            try:
                _set_pragmas(tmp, CREATING_PRAGMAS)
                try:
                    _migrate_and_verify(f"sqlite:///{tmp}")
                finally:
                    _set_pragmas(tmp, None)
                plan_metric_queries(tmp)
                _seal(tmp, wal=wal_enabled())
                os.replace(tmp, db)
                _fsync_dir(db.parent)
            finally:
                tmp.unlink(missing_ok=True)


def _seal(db: Path, wal: bool) -> None:
    """Make a finished store durable before it is renamed into place (its migration
    ran unflushed), in WAL mode when asked (which only a quiet file can switch to)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        if wal:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise TrackingError(f"tracking store {db}: could not switch to WAL ({mode})")
    finally:
        con.close()
    fd = os.open(db, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _migrate_and_verify(uri: str) -> None:
    """Every mlflow table at the newest alembic revision, checked with a query."""
    import sqlalchemy
    from mlflow.store.db import utils

    engine = utils.create_sqlalchemy_engine(uri)
    try:
        utils._initialize_tables(engine)  # create_all + alembic upgrade to head
        utils._verify_schema(engine)  # raises unless the revision is head
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT count(*) FROM experiments")).scalar_one()
    finally:
        engine.dispose()


def default_tracking_uri() -> str:
    """The embedded store ``gradtrack`` writes by default, relative to the cwd."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"


def store_command(
    prog: str,
    uri: str | None,
    missing_hint: str,
    body: Callable[[str], int],
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a store-reading command's ``body(uri)``: the CLIs' shared opening and errors.

    ``uri`` defaults to the embedded store under the cwd. A missing SQLite file is
    refused (opening it would silently create an empty store) and a server is checked
    before ``body`` runs; ``errors`` (with gradtrack's and MLflow's) print
    ``<prog>: error: ...`` and give exit status 2.
    """
    uri = uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        print(f"{prog}: error: no tracking store at {uri}; {missing_hint}", file=sys.stderr)
        return 2
    from mlflow.exceptions import MlflowException

    from gradtrack.errors import GradtrackError

    try:
        if uri.startswith(("http://", "https://")):
            check_server(uri)
        return body(uri)
    except (*errors, GradtrackError, MlflowException) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
