"""The search's result on the sweep's MLflow parent run: best params, plots, trial table.

The parent run is gradtrack's (``gradtrack.sweep.MlflowSweepCallback`` opens it before
the sweeper starts and ends it after). Without that callback, or with tracking off,
there is nothing to write to and the result is only logged.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def best_trial(study: Any) -> Any | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def _children(client: Any, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """Child run id per overrides string (the first such run, by start time)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=50_000,
    )
    out: dict[str, str] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        out.setdefault(r.data.tags.get("overrides", ""), r.info.run_id)
    return out


def plots(study: Any, folder: Path) -> dict[str, str]:
    """Optimization history and parameter importances as PNGs; {name: why not} for any skipped."""
    import optuna
    from optuna.visualization import matplotlib as vis

    from gradtrack.artifacts import _pyplot

    plt = _pyplot()
    skipped: dict[str, str] = {}
    drawers = {
        "optuna_history.png": lambda: vis.plot_optimization_history(study),
        # Seeded, so the same study always draws the same importances.
        "optuna_importance.png": lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        ),
    }
    for name, draw in drawers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw()
            fig = ax.figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            # e.g. importances need two completed trials with different values
            skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
            plt.close("all")
    return skipped


def to_parent_run(study: Any, space: Any, *, maximize: bool) -> None:
    """Write the search result onto the sweep's parent run, if there is one."""
    try:
        from gradtrack import sweep as gradtrack_sweep
    except ImportError:
        return
    sweep = gradtrack_sweep.active_sweep()
    if sweep is None or sweep.parent_run_id is None:
        return
    # Failed trials are part of a search (Optuna learns from them): they do not fail
    # the sweep; too many of them stop it before this point.
    sweep.failed_jobs_ok = True
    sweep.maximize = maximize
    import optuna
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    run_id = sweep.parent_run_id
    states = [t.state for t in study.trials]
    n_failed = sum(s == optuna.trial.TrialState.FAIL for s in states)
    tags = [
        RunTag("optuna_version", optuna.__version__),
        RunTag("optuna_sampler", type(study.sampler).__name__),
        RunTag("optuna_direction", "maximize" if maximize else "minimize"),
        RunTag("optuna_trials", str(len(states))),
        RunTag("optuna_failed_trials", str(n_failed)),
        RunTag("optuna_search_space", "; ".join(p.source for p in space.params)[:5000]),
    ]
    params, metrics = [], []
    best = best_trial(study)
    if best is not None:
        overrides = best.user_attrs.get("overrides", "")
        tags += [
            RunTag("optuna_best_trial", str(best.number)),
            RunTag("optuna_best_overrides", overrides[:5000]),
        ]
        child = _children(client, sweep.experiment_id, run_id).get(overrides)
        if child:
            tags.append(RunTag("optuna_best_run_id", child))
        params = [Param(f"best.{k}", str(v)[:6000]) for k, v in best.params.items()]
        metrics = [Metric("optuna/best_value", float(best.value), int(time.time() * 1000), 0)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study.trials_dataframe().to_csv(folder / "optuna_trials.csv", index=False)
        skipped = plots(study, folder) if best is not None else {}
        for name, why in skipped.items():
            tags.append(RunTag(f"optuna_skipped_{Path(name).stem}", why))
            log.warning(f"Optuna search: {name} not drawn: {why}")
        client.log_artifacts(run_id, str(folder))
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)
