"""A local spool for a tracking server that goes away, and its delivery.

A run logging to a tracking server (http/https) sends through :class:`SpoolingClient`.
When the server stops answering, the run carries on and what it could not send goes
to a spool beside the project, ``<tracking.root>/.gradtrack-spool/<run_id>/``
(``mlruns/.gradtrack-spool/`` by default). Plain data, one folder per run:

* ``meta.json``: format, tracking URI, run id and name, experiment id, host, pid;
* ``ops.jsonl``: the calls, in order, one JSON object a line, each with an ``op``:
  ``log_batch`` (``metrics`` as ``[key, value, timestamp_ms, step]``, ``params`` and
  ``tags`` as ``[key, value]``), ``set_tag``, ``log_inputs`` (the dataset's fields and
  input tags), ``log_artifacts`` (``dir``, a copy under ``artifacts/``, and
  ``artifact_path``), the LoggedModel calls (``create_logged_model``, ``log_outputs``,
  ``log_model_artifacts``, ``finalize_logged_model``) and ``set_terminated``
  (``status``, ``end_time`` in ms). A metric linked to a model carries a fifth item,
  ``{"model_id", "dataset_name", "dataset_digest"}``. A model created while the server
  was away has a placeholder id (``m-spooled-...``, location ``spooled:/...``) until
  delivery creates it; ``ids.json`` maps placeholders to the ids the server gave, and
  the placeholders are replaced in the model's files before they are uploaded;
* ``delivered``: how many of those lines the server has (absent: none);
* ``lock``: flock'd by the process using the folder (the run writing it, or a delivery).

A spool is delivered, oldest operation first, by the run itself when the server is
back (a 1 s health probe at the next live send, at most every ``PROBE_EVERY_S``, and
one at the end of the run), by the next gradtrack run that opens that server, or by
``gradtrack-sync``. The count in ``delivered`` is written after each operation, so a
delivery cut short resends at most one operation; metric points carry their original
timestamps, and MLflow stores a point sent twice (same key, step, timestamp, value)
once. A folder is removed once all of it is delivered.

Outages are detected quickly: a live call is preceded by a 1 s health probe when
nothing was heard from the server for ``PROBE_EVERY_S``, and waits at most
``CALL_TIMEOUT_S`` (``ARTIFACT_TIMEOUT_S`` for uploads) whatever MLflow's own HTTP
timeouts and retries are; from the first failure on, the run only spools. A run
stopped by a signal gives every call what is left of ``hurry(seconds)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from gradtrack.interrupts import uninterrupted

log = logging.getLogger(__name__)

SPOOL_DIRNAME = ".gradtrack-spool"
FORMAT = 1
CALL_TIMEOUT_S = 5.0
ARTIFACT_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0
PROBE_EVERY_S = 10.0
OPS, META, DELIVERED, LOCK, IDS = "ops.jsonl", "meta.json", "delivered", "lock", "ids.json"
PLACEHOLDER = "m-spooled-"
# HTTP answers that mean "the server is not there right now" (a proxy in front of it).
_AWAY_STATUS = {502, 503, 504}
_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")

# Spool roots this process has seen (each run registers its own): a store opened here
# delivers the spooled runs found under them, and under the default root.
_roots: dict[str, None] = {}


def spool_root(tracking_root: Path) -> Path:
    return Path(tracking_root).resolve() / SPOOL_DIRNAME


def default_root() -> Path:
    """``<cwd>/mlruns/.gradtrack-spool``: the spool of the default ``tracking.root``."""
    return spool_root(Path.cwd() / "mlruns")


def remember(target) -> None:
    """Note a run's spool root, so opening its store delivers what waits there."""
    if getattr(target, "spool", None):
        _roots[str(target.spool)] = None


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class _TimedOut(Exception):
    pass


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the server did not answer (rather than refused the call)."""
    import requests

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _TimedOut | requests.ConnectionError | requests.Timeout):
            return True
        if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
            return True
        if isinstance(exc, requests.exceptions.RetryError):
            return True
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in _AWAY_STATUS:
            return True
        text = str(exc)
        # mlflow wraps transport errors as MlflowException("API request to ... failed
        # with exception ...") without chaining the cause.
        if type(exc).__name__ == "MlflowException" and (
            "failed with exception" in text or "failed with timeout exception" in text
        ):
            return True
        if any(f"error code {s} " in text for s in _AWAY_STATUS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def server_answers(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One GET /health: does a server answer at ``uri`` (a 5xx from a proxy is no)?"""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code not in _AWAY_STATUS
    except (OSError, ValueError):
        return False


def bounded(fn, timeout: float):
    """``fn()`` in a worker thread, waited for at most ``timeout`` seconds.

    MLflow's HTTP timeout and retries (tens of seconds) cannot be set per call; this
    caps the wait whatever they are. A call that runs over is left to finish on its
    own (a daemon thread; a late success only stores again what the spool resends).
    The worker blocks SIGINT/SIGTERM, so the kernel delivers them to the main thread,
    which stays interruptible while it waits.
    """
    box: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name="gradtrack-send", daemon=True)
    sigs = {signal.SIGINT, signal.SIGTERM}
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs) if main else None
    try:
        worker.start()  # inherits the blocked mask
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if not done.wait(max(timeout, 0.0)):
        raise _TimedOut(f"no answer within {timeout:.1f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- the spool folder of one run -----------------------------------------------------------


def _lock(path: Path, wait: bool):
    """An open file flock'd exclusively, or None if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; deliveries are not guarded there
        return open(path, "a+")  # noqa: SIM115 - the caller closes it
    fh = open(path, "a+")  # noqa: SIM115 - the caller closes it
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        fh.close()
        return None
    return fh


class RunSpool:
    """Writes one run's spool folder; holds its lock until ``release``."""

    def __init__(self, root: Path, uri: str, run_id: str, experiment_id: str | None, name: str):
        self.dir = Path(root) / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.dir / LOCK, wait=True)
        meta = self.dir / META
        if not meta.exists():
            _write_atomic(
                meta,
                json.dumps(
                    {
                        "format": FORMAT,
                        "tracking_uri": uri,
                        "run_id": run_id,
                        "run_name": name,
                        "experiment_id": experiment_id,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    },
                    indent=1,
                ),
            )
        self._ops = open(self.dir / OPS, "a", encoding="utf-8")  # noqa: SIM115

    def append(self, op: dict) -> None:
        self._ops.write(json.dumps(op, separators=(",", ":"), allow_nan=False) + "\n")
        self._ops.flush()

    def copy_artifacts(self, local_dir: str) -> str:
        done = self.dir / "artifacts"
        rel = f"artifacts/{len(list(done.iterdir())) if done.exists() else 0:04d}"
        shutil.copytree(local_dir, self.dir / rel)
        return rel

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._ops.flush()
            os.fsync(self._ops.fileno())  # the spool outlives this process
            self._ops.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_ops(run_dir: Path) -> list[dict]:
    """The spooled operations; a last line cut short by a crash is ignored."""
    ops = []
    try:
        lines = (run_dir / OPS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for i, line in enumerate(lines):
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{run_dir / OPS}: line {i + 1} is not JSON") from None
    return ops


def delivered_count(run_dir: Path) -> int:
    try:
        return int((run_dir / DELIVERED).read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def read_meta(run_dir: Path) -> dict:
    return json.loads((run_dir / META).read_text())


def spooled_runs(root: Path) -> list[Path]:
    """Run folders under a spool root (those with a meta.json), oldest first."""
    if not Path(root).is_dir():
        return []
    dirs = [d for d in Path(root).iterdir() if (d / META).is_file()]
    return sorted(dirs, key=lambda d: (d / META).stat().st_mtime)


# -- delivery -----------------------------------------------------------------------------


@dataclass
class Delivery:
    run_id: str
    sent: int  # operations delivered now
    left: int  # operations still in the spool
    status: str | None  # the end status spooled, if any
    error: str | None = None  # why delivery stopped early
    busy: bool = False  # another process holds the folder (its run is still going)
    ids: dict | None = None  # placeholder -> id the server gave (models made while away)


def _metric_row(m) -> list:
    row = [m.key, m.value, m.timestamp, m.step]
    link = {
        f: getattr(m, f, None)
        for f in ("model_id", "dataset_name", "dataset_digest")
        if getattr(m, f, None)
    }
    return [*row, link] if link else row


def _metric(row: list, run_id: str, ids: dict):
    from mlflow.entities import Metric

    k, v, ts, step = row[:4]
    if len(row) < 5:
        return Metric(k, v, ts, step)
    link = dict(row[4])
    if link.get("model_id"):
        link["model_id"] = ids.get(link["model_id"], link["model_id"])
    return Metric(k, v, ts, step, run_id=run_id, **link)


def _read_ids(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / IDS).read_text())
    except FileNotFoundError:
        return {}


def _replace_in_files(folder: Path, ids: dict) -> None:
    """Put the server's model id and location where the placeholders were written."""
    for f in folder.rglob("*"):
        if not f.is_file() or f.stat().st_size > 10_000_000:
            continue
        data = f.read_bytes()
        new = data
        for old, real in ids.items():
            new = new.replace(old.encode(), str(real).encode())
        if new != data:
            f.write_bytes(new)


def _send_op(client, run_id: str, run_dir: Path, op: dict, ids: dict) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag

    kind = op["op"]

    def real(model_id: str) -> str:
        return ids.get(model_id, model_id)

    if kind == "log_batch":
        client.log_batch(
            run_id,
            metrics=[_metric(row, run_id, ids) for row in op.get("metrics", [])],
            params=[Param(k, v) for k, v in op.get("params", [])],
            tags=[RunTag(k, v) for k, v in op.get("tags", [])],
            synchronous=True,
        )
    elif kind == "set_tag":
        client.set_tag(run_id, op["key"], op["value"])
    elif kind == "log_inputs":
        client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    dataset=Dataset(**d["dataset"]),
                    tags=[InputTag(key=k, value=v) for k, v in d["tags"]],
                )
                for d in op["datasets"]
            ],
        )
    elif kind == "log_artifacts":
        client.log_artifacts(run_id, str(run_dir / op["dir"]), op.get("artifact_path"))
    elif kind == "set_terminated":
        client.set_terminated(run_id, status=op["status"], end_time=op.get("end_time"))
    elif kind == "create_logged_model":
        if op["placeholder"] in ids:
            return  # created before a crash cut the delivery short
        lm = client.create_logged_model(
            op["experiment_id"],
            name=op.get("name"),
            source_run_id=op.get("source_run_id"),
            tags=op.get("tags"),
            params=op.get("params"),
            model_type=op.get("model_type"),
        )
        ids[op["placeholder"]] = lm.model_id
        ids[op["location"]] = lm.artifact_location
        _write_atomic(run_dir / IDS, json.dumps(ids))
    elif kind == "log_outputs":
        from mlflow.entities import LoggedModelOutput

        outs = [LoggedModelOutput(real(m), step=st) for m, st in op["models"]]
        client.log_outputs(run_id, outs)
    elif kind == "log_model_artifacts":
        _replace_in_files(run_dir / op["dir"], ids)
        client.log_model_artifacts(real(op["model_id"]), str(run_dir / op["dir"]))
    elif kind == "finalize_logged_model":
        from mlflow.entities import LoggedModelStatus

        client.finalize_logged_model(real(op["model_id"]), LoggedModelStatus(op["status"]))
    else:
        raise ValueError(f"{run_dir / OPS}: unknown operation {kind!r}")


def deliver_run(client, run_dir: Path, call=None, lock=True, deadline=None) -> Delivery:
    """Send a run's spooled operations from where the last delivery stopped.

    ``call(fn, timeout)`` runs each send (default: directly); with ``deadline``
    (``time.monotonic()``) it stops once that has passed. The folder is removed once
    everything is delivered. Stops at the first failure and says why.
    """
    run_dir = Path(run_dir)
    held = _lock(run_dir / LOCK, wait=False) if lock else None
    run_id = run_dir.name
    if lock and held is None:
        return Delivery(run_id, 0, -1, None, busy=True)
    try:
        ops = read_ops(run_dir)
        ids = _read_ids(run_dir)
        start = done = delivered_count(run_dir)
        status = next((o["status"] for o in reversed(ops) if o["op"] == "set_terminated"), None)
        error = None
        for op in ops[start:]:
            if deadline is not None and time.monotonic() > deadline:
                error = "no time left"
                break
            try:
                if call is None:
                    _send_op(client, run_id, run_dir, op, ids)
                else:
                    timeout = ARTIFACT_TIMEOUT_S if "artifacts" in op["op"] else CALL_TIMEOUT_S
                    if deadline is not None:
                        timeout = min(timeout, deadline - time.monotonic())
                    call(lambda op=op: _send_op(client, run_id, run_dir, op, ids), timeout)
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                break
            done += 1
            _write_atomic(run_dir / DELIVERED, str(done))
        left = len(ops) - done
        if not left:
            _remove(run_dir)
        return Delivery(run_id, done - start, left, status, error, ids=ids)
    finally:
        if held is not None:
            held.close()


def _remove(run_dir: Path) -> None:
    for name in (OPS, DELIVERED, IDS, META):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / "artifacts", ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def deliver_pending(client, roots: list[Path] | None = None) -> list[Delivery]:
    """Deliver every spooled run meant for ``client``'s server; never fails the caller.

    Runs whose folder is held by a live process are left to it.
    """
    uri = str(client.tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return []
    out = []
    if roots is None:
        roots = [Path(r) for r in _roots] + [default_root()]
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        for run_dir in spooled_runs(root):
            try:
                if not _same_uri(read_meta(run_dir).get("tracking_uri", ""), uri):
                    continue
                d = deliver_run(client, run_dir)
            except Exception as exc:  # a bad spool must not stop a run from starting
                log.warning("spooled run %s: not delivered (%s)", run_dir, exc)
                continue
            if d.busy:
                continue
            if d.left:
                log.warning(
                    "spooled run %s: %d operations delivered, %d left (%s)",
                    d.run_id,
                    d.sent,
                    d.left,
                    d.error,
                )
            else:
                log.info("spooled run %s delivered (%d operations)", d.run_id, d.sent)
            out.append(d)
    return out


# -- the seam TrackedRun calls through -----------------------------------------------------


def _say(msg: str) -> None:
    print(f"gradtrack: {msg}", file=sys.stderr, flush=True)


class SpoolingClient:
    """The MlflowClient calls of one run, sent to the server or, while it is away, spooled.

    Without a spool root (a local store) every call goes straight to the client.
    Anything else (``create_run``, searches) passes through unchanged.
    """

    def __init__(self, client, target, experiment_id: str | None = None, run_name: str = ""):
        self._client = client
        self.uri = target.uri
        self.root = Path(target.spool) if getattr(target, "spool", None) else None
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.spooling = False
        self.spool: RunSpool | None = None
        self.status: str | None = None  # the end status the run set
        self._deadline: float | None = None
        self._last_contact = time.monotonic()  # the store was just opened
        self._last_probe = 0.0
        self._run_id: str | None = None
        self._ids: dict = {}  # placeholder -> real id, for models delivered mid-run
        # A SQL store used in this process takes metric points in bulk (tracking/bulk.py).
        self._sql_store = None
        if self.root is None:
            from gradtrack.tracking import bulk

            self._sql_store = bulk.sql_store(client)

    def __getattr__(self, name):
        return getattr(self._client, name)

    # -- the calls TrackedRun makes ---------------------------------------------------------
    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        def op():
            return {
                "op": "log_batch",
                "metrics": [_metric_row(m) for m in metrics],
                "params": [[p.key, p.value] for p in params],
                "tags": [[t.key, t.value] for t in tags],
            }

        if self._sql_store is not None and synchronous:
            from gradtrack.tracking import bulk

            return self._call(
                run_id,
                lambda: bulk.log_batch(
                    self._client, self._sql_store, run_id, metrics, params, tags, synchronous
                ),
                op,
            )
        if any(getattr(m, "model_id", None) in self._ids for m in metrics):
            metrics = [_metric(_metric_row(m), run_id, self._ids) for m in metrics]
        return self._call(
            run_id,
            lambda: self._client.log_batch(
                run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous
            ),
            op,
        )

    def set_tag(self, run_id, key, value):
        return self._call(
            run_id,
            lambda: self._client.set_tag(run_id, key, value),
            lambda: {"op": "set_tag", "key": key, "value": str(value)},
        )

    def set_terminated(self, run_id, status=None, end_time=None):
        end_time = end_time or int(time.time() * 1000)
        self.status = status
        return self._call(
            run_id,
            lambda: self._client.set_terminated(run_id, status=status, end_time=end_time),
            lambda: {"op": "set_terminated", "status": status, "end_time": end_time},
        )

    def log_inputs(self, run_id, datasets=None, **kwargs):
        def op():
            return {
                "op": "log_inputs",
                "datasets": [
                    {
                        "dataset": {f: getattr(d.dataset, f) for f in _DATASET_FIELDS},
                        "tags": [[t.key, t.value] for t in d.tags],
                    }
                    for d in datasets or []
                ],
            }

        return self._call(
            run_id, lambda: self._client.log_inputs(run_id, datasets=datasets, **kwargs), op
        )

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        return self._call(
            run_id,
            lambda: self._client.log_artifacts(run_id, local_dir, artifact_path),
            lambda: {
                "op": "log_artifacts",
                "dir": self.spool.copy_artifacts(local_dir),
                "artifact_path": artifact_path,
            },
            ARTIFACT_TIMEOUT_S,
        )

    # MLflow 3 LoggedModels. Created while the server is away, a model gets a
    # placeholder id; delivery creates it and puts the real id in its place.
    def create_logged_model(self, experiment_id, name=None, source_run_id=None, **kwargs):
        ph = f"{PLACEHOLDER}{uuid.uuid4().hex}"
        loc = f"spooled:/{ph}"
        value = self._call(
            source_run_id or self._run_id,
            lambda: self._client.create_logged_model(
                experiment_id, name=name, source_run_id=source_run_id, **kwargs
            ),
            lambda: {
                "op": "create_logged_model",
                "placeholder": ph,
                "location": loc,
                "experiment_id": experiment_id,
                "name": name,
                "source_run_id": source_run_id,
                **{k: kwargs.get(k) for k in ("tags", "params", "model_type")},
            },
        )
        if value is not None:
            return value
        return types.SimpleNamespace(model_id=ph, artifact_location=loc, name=name)

    def log_outputs(self, run_id, models):
        from mlflow.entities import LoggedModelOutput

        models = [LoggedModelOutput(self._ids.get(m.model_id, m.model_id), m.step) for m in models]
        return self._call(
            run_id,
            lambda: self._client.log_outputs(run_id, models),
            lambda: {"op": "log_outputs", "models": [[m.model_id, m.step] for m in models]},
        )

    def log_model_artifacts(self, model_id, local_dir, artifact_path=None):
        if model_id in self._ids:  # made while away, delivered since: files say so
            _replace_in_files(Path(local_dir), self._ids)
            model_id = self._ids[model_id]
        return self._call(
            self._run_id,
            lambda: self._client.log_model_artifacts(model_id, local_dir, artifact_path),
            lambda: {
                "op": "log_model_artifacts",
                "model_id": model_id,
                "dir": self.spool.copy_artifacts(local_dir),
            },
            ARTIFACT_TIMEOUT_S,
        )

    def finalize_logged_model(self, model_id, status):
        model_id = self._ids.get(model_id, model_id)
        return self._call(
            self._run_id,
            lambda: self._client.finalize_logged_model(model_id, status),
            lambda: {
                "op": "finalize_logged_model",
                "model_id": model_id,
                "status": getattr(status, "value", status),
            },
        )

    # -- control ------------------------------------------------------------------------------
    def hurry(self, seconds: float) -> None:
        """From now on every call shares ``seconds`` in all; after that, it is spooled."""
        self._deadline = time.monotonic() + seconds

    def _left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _call(self, run_id, send, op, timeout: float = CALL_TIMEOUT_S):
        if self.root is None:
            # A local store's call is short; a signal raised inside SQLAlchemy's commit
            # could leave the SQLite file locked for the run's own ending (tens of
            # seconds of busy waits), so it waits for the call to return.
            with uninterrupted():
                return send()
        self._run_id = run_id or self._run_id
        left = self._left()
        if not self.spooling:
            if left is not None and left <= 0:
                self._start_spooling(run_id, "no time left before the run must end")
            elif time.monotonic() - self._last_contact >= PROBE_EVERY_S and not self._probe(left):
                self._start_spooling(run_id, "no answer to a health check")
        elif left is None and time.monotonic() - self._last_probe >= PROBE_EVERY_S:
            self._recover()
        if self.spooling:
            self.spool.append(op())
            return None
        try:
            value = bounded(send, timeout if left is None else min(timeout, left))
        except BaseException as exc:
            if isinstance(exc, Exception) and not is_outage(exc):
                raise
            # A signal during the call: whether the server got it is unknown; spooled,
            # it is resent (harmlessly) later, and the rest of this ending run spools.
            self._start_spooling(run_id, _reason(exc))
            self.spool.append(op())
            if not isinstance(exc, Exception):
                raise
            return None
        self._last_contact = time.monotonic()
        return value

    def _probe(self, left: float | None = None) -> bool:
        self._last_probe = time.monotonic()
        timeout = PROBE_TIMEOUT_S if left is None else max(min(PROBE_TIMEOUT_S, left), 0.01)
        ok = server_answers(self.uri, timeout)
        if ok:
            self._last_contact = time.monotonic()
        return ok

    def _start_spooling(self, run_id: str, why: str) -> None:
        if self.spool is None:
            self.spool = RunSpool(self.root, self.uri, run_id, self.experiment_id, self.run_name)
        if not self.spooling:
            self.spooling = True
            _say(
                f"the tracking server {self.uri} is not answering ({why}); training goes on, "
                f"results are kept in {self.spool.dir} until it is back"
            )

    def _recover(self) -> bool:
        """Probe the server; if it is back, deliver the spool so far and go live again."""
        left = self._left()
        if not self._probe(left):
            return False
        d = deliver_run(
            self._client,
            self.spool.dir,
            call=bounded,
            lock=False,
            deadline=None if left is None else self._deadline,
        )
        self._ids.update(d.ids or {})
        if d.left:
            return False
        self.spool.release()
        self.spool = None
        self.spooling = False
        _say(f"the tracking server {self.uri} is back; {d.sent} spooled operations delivered")
        return True

    @contextlib.contextmanager
    def ending(self):
        """Around the end of a run: then deliver the spool if the server is back, or say
        where it is. Ending on an error (or a signal held meanwhile) waits for nothing."""
        try:
            yield
        except BaseException:
            self._deadline = time.monotonic()
            self.close()
            raise
        self.close()

    def close(self) -> None:
        """Deliver the spool if the server is back (within ``hurry``), else say where it is."""
        if self.spool is None:
            return
        status = self.status or "without an end status"
        try:
            left = self._left()
            if left is None or left > 0:
                with contextlib.suppress(Exception):
                    if self._recover():
                        return
            n = len(read_ops(self.spool.dir)) - delivered_count(self.spool.dir)
            root = self.spool.dir.parent
            _say(
                f"run {self.spool.dir.name} ended {status}, but the tracking server {self.uri} "
                f"is not answering: {n} operations are kept in {self.spool.dir}. The next "
                f"gradtrack run against that server delivers them, or now: "
                f"gradtrack-sync --spool {root}"
            )
        finally:
            if self.spool is not None:
                self.spool.release()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(exc, Exception):
        return "stopped by a signal"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def guard(client, target, experiment_id: str | None = None, run_name: str = "") -> SpoolingClient:
    """The seam: ``client`` for one run, spooling when ``target`` is a server that goes away."""
    return SpoolingClient(client, target, experiment_id, run_name)
