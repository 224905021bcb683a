"""Resuming a sweep: the same ``gradtrack -m ...`` reopens the same parent run.

A sweep is identified by its *sweep fingerprint* (tag ``sweep_fingerprint`` on the
parent): for the basic sweeper, the sorted fingerprints of its jobs (so a changed job
list, changed data or changed code is a new sweep, and the order of the sweep values
is not) plus the sweeper and sweep metric; for a sweeper that picks its jobs as it
goes (Optuna), the command's overrides, the sweeper's settings and the code version.

On a rerun the latest parent with that fingerprint is reopened (status RUNNING again,
owner tags of this process, ``sweep_invocations`` + 1) unless its owner is alive and
still running it, in which case a new parent is made (two live invocations never share
one). Its jobs then run with reuse on, so a job with a FINISHED child under the parent
is answered from it and only the others train.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gradtrack.tracking import fingerprint as fingerprints

INVOCATIONS_TAG = "sweep_invocations"
COUNT_TAGS = {
    "reused": "sweep_jobs_reused",
    "run": "sweep_jobs_run",
    "failed": "sweep_jobs_failed",
    "stopped": "sweep_jobs_stopped",
    "not_run": "sweep_jobs_not_run",
}


def dataset_key(obj: Any) -> str:
    """What a job's data is read from: its dataset settings and the file they name
    (jobs with the same key read the same data)."""
    from gradtrack.config import project_root, resolve_path

    path = resolve_path(project_root(obj), obj.dataset.path)
    return json.dumps([repr(obj.dataset), str(path)])


def job_fingerprints(typed: list[Any], data_digests: dict[str, str | None]) -> list[str]:
    """Each job's run fingerprint, computed exactly as the job will, from the digest of
    its data by ``dataset_key`` (sweep.check_jobs reads each distinct dataset once)."""
    return [fingerprints.of_config(obj, data_digests[dataset_key(obj)]) for obj in typed]


def sweep_fingerprint(
    config: Any, typed: list[Any], expanded: bool, data_digests: dict[str, str | None]
) -> str:
    """The sweep's identity (module docstring). ``expanded``: ``typed`` is the full job
    list (basic sweeper); otherwise only validation samples of a search.
    ``data_digests``: see job_fingerprints."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    extra = {
        "sweeper": str(sweeper.get("_target_", "")),
        "metric": str(OmegaConf.select(config, "sweep_metric", default="final_loss")),
    }
    if expanded:
        return fingerprints.sweep_fingerprint(job_fingerprints(typed, data_digests), extra)
    task = sorted(str(o) for o in OmegaConf.to_container(config.hydra.overrides.task))
    task = [o for o in task if o.split("=", 1)[0] not in _budget_overrides()]
    sweeper = {k: v for k, v in sweeper.items() if k not in OPTUNA_BUDGET_KEYS}
    return fingerprints.digest_of(
        {
            "task": task,
            "sweeper": fingerprints.canonical(sweeper),
            "code": fingerprints.code_version(),
            **extra,
        }
    )


def _budget_overrides() -> set[str]:
    return {f"hydra.sweeper.{k}" for k in OPTUNA_BUDGET_KEYS}


def find_parent(client: Any, experiment_id: str, sfp: str) -> Any:
    """The latest parent of this sweep that may be reopened, or None."""
    from gradtrack.tracking.owner import ALIVE, owner_state

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{fingerprints.SWEEP_TAG} = '{sfp}' and tags.sweep_role = 'parent'",
        max_results=20,
        order_by=["attributes.start_time DESC"],
    )
    for r in runs:
        if r.info.status == "RUNNING" and owner_state(r.data.tags) == ALIVE:
            continue  # another live invocation runs it: never share a parent
        return r
    return None


def reopen(client: Any, run: Any) -> None:
    """Mark a previous parent RUNNING again, owned by this process."""
    from mlflow.entities import RunTag

    from gradtrack.tracking.owner import GONE_TAG, owner_tags

    n = int(run.data.tags.get(INVOCATIONS_TAG, "1") or 1) + 1
    tags = {**owner_tags(), INVOCATIONS_TAG: str(n)}
    client.log_batch(
        run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True
    )
    client.update_run(run.info.run_id, status="RUNNING")
    if GONE_TAG in run.data.tags:  # ended by stale-run detection; its owner is us now
        client.delete_tag(run.info.run_id, GONE_TAG)


def new_invocation() -> str:
    return uuid.uuid4().hex[:12]


def count_tags(counts: dict[str, int]) -> dict[str, str]:
    return {COUNT_TAGS[k]: str(v) for k, v in counts.items()}


# -- the Optuna sweeper: one study per sweep, kept beside the tracking store ---------

# Sweeper settings that do not make a search another search: a rerun with a larger
# n_trials (or other parallelism) continues the same study.
OPTUNA_BUDGET_KEYS = ("n_trials", "n_jobs", "max_failure_rate")
OPTUNA_DB = "optuna.db"


def optuna_study(storage: str | None, study_name: str | None) -> tuple[str | None, str | None]:
    """(storage, study_name) for this sweep's study.

    With gradtrack tracking the sweep (a parent run with a sweep fingerprint), an unset
    study name becomes ``gradtrack-<sweep fingerprint>``, and an unset storage, for the
    embedded SQLite store, ``sqlite:///<tracking root>/optuna.db``: rerunning the same
    search then continues its study. Otherwise the settings are returned unchanged.
    """
    from pathlib import Path

    from gradtrack.sweep import active_sweep

    sweep = active_sweep()
    sfp = getattr(sweep, "sweep_fingerprint", None)
    if sweep is None or not sfp:
        return storage, study_name
    uri = sweep.tracking_uri or ""
    if storage is None and uri.startswith("sqlite:///"):
        storage = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).parent / OPTUNA_DB)
    if storage is not None and study_name is None:
        study_name = f"gradtrack-{sfp[:16]}"
    return storage, study_name


def optuna_resume(study, log) -> int:
    """Trials a previous invocation finished (COMPLETE, FAIL or PRUNED); trials it left
    RUNNING (interrupted) are marked FAIL and not counted."""
    import optuna

    TS = optuna.trial.TrialState
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TS.RUNNING or t.state == TS.WAITING:
            study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted")
            study.tell(t.number, state=TS.FAIL, skip_if_finished=True)
        elif t.state in (TS.COMPLETE, TS.FAIL, TS.PRUNED):
            done += 1
    if done:
        log.info(f"Optuna study {study.study_name}: continuing after {done} finished trials")
    return done
