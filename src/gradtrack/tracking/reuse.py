"""Reuse: a run whose fingerprint matches a FINISHED run in the same store is not trained.

``reuse`` (config key, plumbing): ``true`` looks for a match, ``false`` always trains,
``null`` (the default, "auto") reuses inside a sweep (``gradtrack -m``, so a rerun
resumes it) and trains a plain single run. DVC stages (``GRADTRACK_DVC_STAGE`` set)
and runs asked to write local outputs (``output.*``) always train: they must write
their files.

The match is searched in the run's own experiment by the ``fingerprint`` tag. Only a
FINISHED run answers; a FAILED, KILLED or RUNNING one does not (the job trains). Of
several FINISHED matches, the sweep's own child wins (a resumed sweep), then the
earliest trained run. Inside a sweep whose parent has no child for the job yet, a
small *reference child* is recorded under the parent (tag ``reused_from``, the
original's metrics and loss curve copied), so the sweep summary lists every job.

Concurrency: nothing is locked. Two processes that start the same fingerprint at once
both find no FINISHED match, so both train (neither is skipped); each then tags itself
``duplicate_of`` the other(s). A reused answer is only ever a FINISHED run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gradtrack.tracking import fingerprint as fingerprints
from gradtrack.tracking.naming import ENV_OVERRIDES, job_key

REUSED_FROM = "reused_from"  # on a reference child: the run that trained this config
DUPLICATE_OF = "duplicate_of"  # on a run: FINISHED/RUNNING runs with the same fingerprint
CONCURRENT_WITH = "concurrent_with"  # on a run: same fingerprint RUNNING when it started
ENV_PARENT = "GRADTRACK_PARENT_RUN_ID"
ENV_INVOCATION = "GRADTRACK_SWEEP_INVOCATION"
INVOCATION_TAG = "sweep_invocation"
MAX_MATCHES = 100
# Final metrics copied onto a reference child (everything but per-step series).
_STEP_PREFIX = "Training/"


@dataclass
class Decision:
    """What :func:`decide` found: the fingerprint tags, and a result when reused."""

    fingerprint: str
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = False
    match: Any = None  # the FINISHED mlflow Run that answers, or None: train
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the run the caller reports (reference child or match)
    experiment_id: str | None = None
    lookup_seconds: float = 0.0


def enabled(cfg: Any) -> bool:
    """Whether this run may be answered from the store (see module docstring)."""
    from gradtrack.pipeline.lineage import STAGE_ENV

    if os.environ.get(STAGE_ENV) or not cfg.tracking.enabled:
        return False
    if cfg.output.metrics_path or cfg.output.losses_path:
        return False  # files to write: only a run that trains writes them
    setting = getattr(cfg, "reuse", None)
    if setting is not None:
        return bool(setting)
    return bool(os.environ.get(ENV_PARENT))


def _client_for(cfg: Any, root: Any):
    """(client, experiment_id) of an existing store and experiment, else (None, None).

    Looking never creates a store or an experiment: the run itself does that.
    """
    from pathlib import Path

    from gradtrack.config import resolve_path
    from gradtrack.tracking.store import open_client, resolve_tracking

    target = resolve_tracking(cfg.tracking.uri, resolve_path(root, cfg.tracking.root))
    if target.uri.startswith("sqlite:///") and not Path(target.uri[len("sqlite:///") :]).exists():
        return None, None
    client = open_client(target)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        return client, None
    return client, exp.experiment_id


def find_matches(client: Any, experiment_id: str, fp: str) -> list[Any]:
    """Runs of the experiment tagged with this fingerprint, earliest first."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.{fingerprints.TAG} = '{fp}'",
        max_results=MAX_MATCHES,
        order_by=["attributes.start_time ASC"],
    )


def choose(runs: list[Any], parent: str | None, overrides: str | None = None) -> Any:
    """The FINISHED run that answers: this job's own child in the sweep, then a trained
    run (not a reference), then a reference child; earliest first within each."""
    done = [r for r in runs if r.info.status == "FINISHED"]
    if not done:
        return None

    def rank(r: Any) -> tuple:
        return (
            not is_own_child(r, parent, overrides),
            REUSED_FROM in r.data.tags,
            r.info.start_time or 0,
        )

    return min(done, key=rank)


def is_own_child(run: Any, parent: str | None, overrides: str | None) -> bool:
    """Whether ``run`` is the sweep's child for this very job (a resumed sweep), which
    answers as it is. Another job's child with the same fingerprint (jobs that differ
    only in plumbing, e.g. ``log_every=1,10``) answers through a reference child, or
    the summary would find no run for this job."""
    tags = run.data.tags
    return (
        parent is not None
        and tags.get("mlflow.parentRunId") == parent
        and (overrides is None or job_key(tags.get("overrides", "")) == job_key(overrides))
    )


def decide(cfg: Any, root: Any, plain: dict[str, Any], data_digest: str | None) -> Decision:
    """Fingerprint the run and, with reuse on, look for a FINISHED match.

    When one answers, prints which run and its results, and (in a sweep, when the
    parent has no child for it yet) records a reference child. Never raises for a
    store problem: the run then simply trains (and reports the store itself).
    """
    fp = fingerprints.fingerprint(plain, data_digest)
    d = Decision(fp, fingerprints.tags(fp, data_digest), enabled(cfg))
    if not d.enabled:
        return d
    t0 = time.perf_counter()
    try:
        client, exp_id = _client_for(cfg, root)
        runs = find_matches(client, exp_id, fp) if exp_id else []
    except Exception as exc:  # the run reports an unusable store itself
        print(f"gradtrack: reuse lookup skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        return d
    d.lookup_seconds = time.perf_counter() - t0
    parent = os.environ.get(ENV_PARENT) or None
    overrides = os.environ.get(ENV_OVERRIDES) or None
    match = choose(runs, parent, overrides)
    if match is None:
        busy = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
        if busy:
            d.tags[CONCURRENT_WITH] = ",".join(busy)[:5000]
        return d
    d.match, d.experiment_id = match, exp_id
    d.metrics = dict(match.data.metrics)
    d.run_id = match.info.run_id
    original = match.data.tags.get(REUSED_FROM, match.info.run_id)
    if parent and not is_own_child(match, parent, overrides):
        d.run_id = record_reference(client, exp_id, parent, match, original, d.tags)
    _announce(cfg, match, original, d)
    return d


def _announce(cfg: Any, match: Any, original: str, d: Decision) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((match.info.start_time or 0) / 1000))
    name = match.data.tags.get("mlflow.runName", "")
    print(
        f"gradtrack: reused FINISHED run {original} ({name}, {when}): same fingerprint "
        f"{d.fingerprint[:12]} (config, data, code, frameworks); not trained again. "
        "reuse=false trains anyway."
    )
    if d.run_id != match.info.run_id:
        print(f"gradtrack: recorded as run {d.run_id} under this sweep (tag {REUSED_FROM})")


def record_reference(
    client: Any, exp_id: str, parent: str, match: Any, original: str, fp_tags: dict
) -> str:
    """A FINISHED child of ``parent`` standing for ``match``: its final metrics and
    loss curve copied, tagged ``reused_from``. Returns its run id."""
    from mlflow.entities import Metric, Param, RunTag

    from gradtrack.tracking.owner import owner_tags

    src = match.data.tags
    tags = {
        **{k: v for k, v in src.items() if not k.startswith(("mlflow.", "owner_"))},
        **fp_tags,
        **owner_tags(),
        "mlflow.parentRunId": parent,
        "mlflow.runName": src.get("mlflow.runName", "reused"),
        "sweep_role": "child",
        REUSED_FROM: original,
    }
    tags.pop(DUPLICATE_OF, None)
    tags.pop(CONCURRENT_WITH, None)
    for tag, var in (
        ("sweep_id", "GRADTRACK_SWEEP_ID"),
        ("overrides", ENV_OVERRIDES),
        (INVOCATION_TAG, ENV_INVOCATION),
    ):
        if os.environ.get(var):
            tags[tag] = os.environ[var]
    run = client.create_run(exp_id, tags=tags, run_name=tags["mlflow.runName"])
    rid = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, 0)
            for k, v in match.data.metrics.items()
            if not k.startswith(_STEP_PREFIX)
        ]
        for key in [k for k in match.data.metrics if k.startswith(_STEP_PREFIX)]:
            hist = client.get_metric_history(match.info.run_id, key)
            metrics += [Metric(key, m.value, m.timestamp, m.step) for m in hist]
        params = [Param(k, v) for k, v in match.data.params.items()]
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i : i + 100], synchronous=True)
        for i in range(0, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[i : i + 1000], synchronous=True)
        client.log_batch(
            rid,
            tags=[RunTag("mlflow.note.content", f"Reused: the result of run {original}.")],
        )
        # The original's LoggedModel is this child's output too: the sweep can register
        # it (register_best) and the UI shows it, though this child trained nothing.
        models = getattr(getattr(match, "outputs", None), "model_outputs", None) or []
        if models:
            from mlflow.entities import LoggedModelOutput

            client.log_outputs(rid, [LoggedModelOutput(m.model_id, m.step) for m in models])
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    return rid


def mark_duplicates(cfg: Any, root: Any, run_id: str | None, fp: str) -> dict[str, str]:
    """Tags for a run that trained with reuse on: the other FINISHED or RUNNING runs
    with its fingerprint (a concurrent start trained it too). {} when there are none."""
    if run_id is None:
        return {}
    try:
        client, exp_id = _client_for(cfg, root)
        runs = find_matches(client, exp_id, fp) if exp_id else []
    except Exception:
        return {}
    others = [
        r.info.run_id
        for r in runs
        if r.info.run_id != run_id
        and r.info.status in ("FINISHED", "RUNNING")
        and REUSED_FROM not in r.data.tags
    ]
    return {DUPLICATE_OF: ",".join(others)[:5000]} if others else {}


def result_of(d: Decision):
    """The RunResult the CLI and Hydra get for a reused run (metrics, ids; no arrays)."""
    import numpy as np

    from gradtrack.record import RunResult

    empty = np.zeros(0)
    return RunResult(
        losses=empty,
        grad_norms=empty,
        values=None,
        params={},
        metrics=dict(d.metrics),
        run_id=d.run_id,
        experiment_id=d.experiment_id,
        reused_from=d.match.data.tags.get(REUSED_FROM, d.match.info.run_id),
    )


# -- sweeps: counts for the parent ---------------------------------------------------


def sweep_counts(rows: list[Any], invocation: str | None) -> dict[str, int]:
    """reused / run / failed / stopped / not_run jobs of this invocation of a sweep.

    A FINISHED row counts as run when this invocation created it by training, as
    reused when it is a reference child or was finished by an earlier invocation. A
    KILLED one (Ctrl-C, SIGTERM) was stopped, not failed.
    """
    counts = {"reused": 0, "run": 0, "failed": 0, "stopped": 0, "not_run": 0}
    for r in rows:
        if r.status == "NO_RUN":  # interrupted before it started (or failed before a run)
            counts["not_run"] += 1
        elif r.status == "KILLED":
            counts["stopped"] += 1
        elif r.status != "FINISHED":
            counts["failed"] += 1
        elif r.reused or (invocation and r.invocation != invocation):
            counts["reused"] += 1
        else:
            counts["run"] += 1
    return counts


def mark_rows(rows: list[Any], invocation: str | None) -> None:
    """Fill ``row.reused`` for the summary table: the run it stands for, or
    ``earlier`` for a job a previous invocation of the same sweep finished."""
    for r in rows:
        if r.reused or r.status != "FINISHED":
            continue
        if invocation and r.invocation and r.invocation != invocation:
            r.reused = "earlier"
