"""One MLflow run: buffered metrics, honest end status, nothing non-finite stored."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gradtrack.errors import DivergedError, TrackingError
from gradtrack.interrupts import Terminated, acknowledge
from gradtrack.tracking import spool
from gradtrack.tracking.owner import owner_tags
from gradtrack.tracking.store import TrackingTarget, open_store, signals_held

# A run stopped by a signal sends what it can in this long, then ends KILLED: schedulers
# follow SIGTERM with SIGKILL after a grace period, and a run must never outlive it
# as RUNNING. (With the default budget everything fits easily.)
KILLED_FLUSH_SECONDS = 0.5
# ... and every call to a tracking server, the end status included, within this long
# (what does not make it is spooled: tracking/spool.py).
KILLED_EXIT_SECONDS = 1.0
# MLflow's log_batch accepts at most 1000 metrics, 100 params and 100 tags per call,
# and 1000 entities in all.
MAX_BATCH = 1000
# Rows of the training frame MLflow infers the dataset schema from.
SCHEMA_ROWS = 100
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100


class NullRun:
    """Tracking disabled: the same interface, nothing recorded."""

    run_id: str | None = None
    experiment_id: str | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_step_metrics(self, start_step: int, series: dict[str, np.ndarray]) -> None: ...
    def log_step_points(
        self, steps: np.ndarray, series: dict[str, np.ndarray], send: bool = True
    ) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None: ...
    def log_input(self, ds) -> None: ...
    def log_model(self, spec, name, params, metrics, step) -> str | None: ...
    def flush(self, deadline: float | None = None) -> int:
        return 0

    def artifacts_are_local(self) -> bool:
        return False


class TrackedRun:
    """An MLflow run driven through ``MlflowClient`` with metrics sent in batches."""

    def __init__(
        self,
        target: TrackingTarget,
        experiment: str,
        run_name: str,
        flush_every: int,
        tags: dict[str, str] | None = None,
    ):
        self.tags = dict(tags or {})  # set when the run is created (mlflow.user, source)
        self.model_id: str | None = None
        self._dataset: tuple[str, str] | None = None  # (name, digest) of the logged input
        self.target = target
        spool.remember(target)  # opening the store delivers what a past run spooled there
        client, self.experiment_id = open_store(target, experiment)
        # Every call of the run goes through this seam: to the server, or to the local
        # spool while a tracking server is away (tracking/spool.py).
        self.client = spool.guard(client, target, self.experiment_id, run_name)
        self.run_name = run_name
        self.flush_every = flush_every
        self.run_id: str | None = None
        self.artifact_uri: str | None = None  # set when the run is created
        self._pending = _PointQueue()
        # Params and tags wait for the next batch too: one store round trip carries
        # them with the metrics (the fixed cost of a run is mostly round trips).
        self._pending_params: list = []
        self._pending_tags: list = []
        self._pending_metrics: list = []  # ready Metric objects (the model's), sent first
        self._metric_cls = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        from mlflow.entities import Metric

        self._metric_cls = Metric
        parent = os.environ.get("GRADTRACK_PARENT_RUN_ID")
        tags = {**self.tags, "mlflow.runName": self.run_name, **owner_tags()}
        if parent:
            tags["mlflow.parentRunId"] = parent
            # Parent and children both carry sweep_id; this tells the jobs apart in a
            # search (tags.sweep_role = 'child').
            tags["sweep_role"] = "child"
            # Set per job by gradtrack.sweep: which sweep, and this job's overrides.
            for tag, var in (
                ("sweep_id", "GRADTRACK_SWEEP_ID"),
                ("overrides", "GRADTRACK_JOB_OVERRIDES"),
                ("sweep_invocation", "GRADTRACK_SWEEP_INVOCATION"),
            ):
                if os.environ.get(var):
                    tags[tag] = os.environ[var]
        try:
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.run_name)
        except Exception as exc:
            raise TrackingError(
                f"tracking store {self.target.uri}: could not create a run ({exc})."
            ) from exc
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        return self

    def artifacts_are_local(self) -> bool:
        """Whether this run's artifacts are files on this machine (logging one is a copy,
        not an upload without a deadline)."""
        from urllib.parse import urlparse

        uri = self.artifact_uri
        return bool(uri) and urlparse(uri).scheme in ("", "file")

    def __exit__(self, exc_type, exc, tb) -> bool:
        from mlflow.entities import RunTag

        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt | Terminated):
            status = "KILLED"
            acknowledge()  # the signal's exception arrived (not lost in a GC callback)
        else:
            status = "FAILED"
        tags = {}
        if status == "FAILED":
            tags["error"] = f"{exc_type.__name__}: {exc}"[:5000]
        if status == "KILLED":
            tags["killed_by"] = "SIGTERM" if issubclass(exc_type, Terminated) else "SIGINT"
        if isinstance(exc, DivergedError):
            tags["diverged"] = "true"
            tags["diverged_at_step"] = str(exc.step)
            tags["last_finite_step"] = str(exc.last_finite_step)
        # A second Ctrl-C / SIGTERM while we write the end status would leave the run
        # RUNNING; hold such signals until the run is closed (they fire right after).
        # (Afterwards the seam delivers what a server outage spooled if it is back.)
        with self.client.ending(), signals_held():
            try:
                if tags:
                    # Status tags go first: they ride in the first batch the flush sends.
                    self._pending_tags[:0] = [RunTag(k, str(v)) for k, v in tags.items()]
                if status == "KILLED":
                    self.client.hurry(KILLED_EXIT_SECONDS)
                    unsent = self.flush(deadline=time.monotonic() + KILLED_FLUSH_SECONDS)
                    if unsent:
                        self.client.set_tag(self.run_id, "metric_points_not_sent", str(unsent))
                else:
                    self.flush()
            except Exception:
                # A failing store must not hide the error that ended the run.
                if exc_type is None:
                    status = "FAILED"
                    raise
            finally:
                # Always end the run, even if the last flush failed: never leave it RUNNING.
                try:
                    self.client.set_terminated(self.run_id, status=status)
                except Exception:
                    if exc_type is None:
                        raise
        return False

    # -- logging -----------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Queue params; they go out with the next batch (``flush``)."""
        from mlflow.entities import Param

        self._pending_params += [Param(k, _param_str(v)) for k, v in params.items()]

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Queue tags; they go out with the next batch (``flush``)."""
        from mlflow.entities import RunTag

        self._pending_tags += [RunTag(k, str(v)) for k, v in tags.items()]

    def log_step_metrics(self, start_step: int, series: dict[str, np.ndarray]) -> None:
        """Buffer per-step series (step numbers start at ``start_step``); non-finite values are skipped."""
        n = len(next(iter(series.values()))) if series else 0
        self.log_step_points(np.arange(start_step, start_step + n), series)

    def log_step_points(
        self, steps: np.ndarray, series: dict[str, np.ndarray], send: bool = True
    ) -> None:
        """Buffer the values of each series at the given step numbers (non-finite ones are
        skipped); with ``send``, a full buffer is sent now, otherwise at the run's end."""
        ts = int(time.time() * 1000)
        steps = np.asarray(steps, dtype=np.int64)
        for key, values in series.items():
            self._pending.add(key, steps, np.asarray(values, dtype=np.float64), ts)
        if send and self._pending.size >= self.flush_every:
            self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Queue metric values (non-finite ones are skipped); sent with the next batch."""
        ts = int(time.time() * 1000)
        at = np.array([step], dtype=np.int64)
        for k, v in metrics.items():
            self._pending.add(k, at, np.array([float(v)]), ts)
        if self._pending.size >= self.flush_every:
            self.flush()

    def flush(self, deadline: float | None = None) -> int:
        """Send everything queued, in as few ``log_batch`` calls as MLflow's limits allow.

        With a ``deadline`` (``time.monotonic()``), stop once it has passed and drop the
        rest; returns the number of metric points dropped.
        """
        while (
            self._pending.size
            or self._pending_params
            or self._pending_tags
            or self._pending_metrics
        ):
            if deadline is not None and time.monotonic() > deadline and not self.client.spooling:
                dropped = self._pending.clear() + len(self._pending_metrics)
                self._pending_metrics.clear()
                return dropped  # (spooling takes the rest in milliseconds)
            params = self._pending_params[:MAX_BATCH_PARAMS]
            tags = self._pending_tags[:MAX_BATCH_TAGS]
            ready = self._pending_metrics[: MAX_BATCH - len(params) - len(tags)]
            room = MAX_BATCH - len(params) - len(tags) - len(ready)
            metrics = ready + self._pending.take(room, self._metric_cls)
            if metrics or params or tags:
                self.client.log_batch(
                    self.run_id, metrics=metrics, params=params, tags=tags, synchronous=True
                )
            del self._pending_params[: len(params)]
            del self._pending_tags[: len(tags)]
            del self._pending_metrics[: len(ready)]
        return 0

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_input(self, ds) -> None:
        """Record the training data as an MLflow dataset input (lineage in the UI)."""
        import warnings

        import mlflow.data
        import pandas as pd
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source = str(ds.path) if ds.path is not None else f"gradtrack://{ds.name}"
        # from_pandas visits every cell in Python (its digest maps type() over the whole
        # frame, its schema checks each value for NaN): ~10 s and ~100 MB on a 50 MB
        # file. The loaded frame is float64 without NaN, so the first rows give the same
        # schema; the digest is the file's sha256 and the profile counts every row.
        # Only those rows become a DataFrame (as ``ds.frame`` makes it): a frame of every
        # row copies X (~36 MB on a 50 MB file).
        head = pd.DataFrame(ds.X_raw[:SCHEMA_ROWS], columns=ds.feature_names)
        head[ds.target] = ds.y_raw[:SCHEMA_ROWS]
        rows, width = len(ds.X_raw), ds.X_raw.shape[1] + 1  # the features and the target
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                head,
                source=source,
                name=ds.name,
                targets=ds.target,
                digest=ds.digest[:16] if ds.digest else None,
            )
        sample = dataset._to_mlflow_entity()
        entity = Dataset(
            name=sample.name,
            digest=sample.digest,
            source_type=sample.source_type,
            source=sample.source,
            schema=sample.schema,
            profile=json.dumps({"num_rows": rows, "num_elements": rows * width}),
        )
        tag = InputTag(key="mlflow.data.context", value="training")
        inputs = [DatasetInput(dataset=entity, tags=[tag])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except Exception:
            # Jobs of a sweep logging the same new dataset at once race on its unique key
            # (the store looks it up, then inserts it; seen on PostgreSQL). The one that
            # lost finds it on a second try and only links it to this run.
            self.client.log_inputs(self.run_id, datasets=inputs)
        self._dataset = (entity.name, entity.digest)

    def log_model(self, spec, name: str, params: dict[str, Any], metrics, step: int) -> str:
        """Log ``spec`` (a LinearModelSpec) as an MLflow 3 LoggedModel output of this run.

        ``metrics`` (the run's final values, at ``step``) are logged here, once, to the
        run and to the model together, linked to the training dataset: the Models tab
        shows them. Returns the model id; a failure marks the model FAILED and raises.
        """
        import tempfile

        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

        from gradtrack.tracking.model import write_model_dir

        lm = self.client.create_logged_model(
            self.experiment_id,
            name=name,
            source_run_id=self.run_id,
            params={k: _param_str(v) for k, v in params.items()},
            model_type=spec.kind,
        )
        try:
            self.client.log_outputs(self.run_id, [LoggedModelOutput(lm.model_id, step=step)])
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model"
                write_model_dir(path, spec, lm.model_id, self.run_id, lm.artifact_location)
                self.client.log_model_artifacts(lm.model_id, str(path))
            ds_name, ds_digest = self._dataset or (None, None)
            ts = int(time.time() * 1000)
            items = [
                Metric(
                    k,
                    float(v),
                    ts,
                    step,
                    model_id=lm.model_id,
                    dataset_name=ds_name,
                    dataset_digest=ds_digest,
                    run_id=self.run_id,
                )
                for k, v in metrics.items()
                if math.isfinite(float(v))
            ]
            # Sent before the model is READY, in the same batch as what the run queued
            # (params, tags, step points): one store round trip fewer per run.
            self._pending_metrics[:0] = items
            self.flush()
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        self.model_id = lm.model_id
        return lm.model_id


class _PointQueue:
    """Metric points waiting to be sent, kept as arrays until a batch takes them.

    Queueing a chunk is O(1) whatever its length; the MLflow ``Metric`` objects are
    made a batch at a time, so a flush cut short by a deadline never pays for points
    it does not send.
    """

    def __init__(self) -> None:
        self._chunks: collections.deque = collections.deque()
        self.size = 0

    def add(self, key: str, steps: np.ndarray, values: np.ndarray, ts: int) -> None:
        if len(steps):
            self._chunks.append([key, steps, values, ts, 0])
            self.size += len(steps)

    def take(self, n: int, metric_cls) -> list:
        """Up to ``n`` points as Metric objects, oldest first; non-finite values skipped."""
        out: list = []
        while self._chunks and len(out) < n:
            chunk = self._chunks[0]
            key, steps, values, ts, offset = chunk
            m = min(n - len(out), len(steps) - offset)
            sl = slice(offset, offset + m)
            for step, v in zip(steps[sl].tolist(), values[sl].tolist()):
                if math.isfinite(v):
                    out.append(metric_cls(key, v, ts, step))
            chunk[4] += m
            self.size -= m
            if chunk[4] >= len(steps):
                self._chunks.popleft()
        return out

    def clear(self) -> int:
        """Drop every queued point; returns how many there were."""
        dropped, self.size = self.size, 0
        self._chunks.clear()
        return dropped


def _param_str(value: Any) -> str:
    """Stable text for a param: floats by repr (1e-06 however it was written)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_param_str(v) for v in value) + "]"
    return str(value)[:6000]


def open_run(
    enabled: bool,
    target: TrackingTarget | None,
    experiment: str,
    run_name: str,
    flush_every: int = 1000,
    tags: dict[str, str] | None = None,
):
    """A tracker for this run; connecting (and failing clearly) happens here, before training.

    ``tags`` are set when the run is created (MLflow's context tags: source, user, note).
    """
    if not enabled:
        return NullRun()
    return TrackedRun(target, experiment, run_name, flush_every, tags)
