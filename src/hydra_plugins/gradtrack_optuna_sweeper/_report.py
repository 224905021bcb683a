"""The search's result on the sweep's MLflow parent run: best params, plots, trial table.

The parent run is gradtrack's (``gradtrack.sweep.MlflowSweepCallback`` opens it before
the sweeper starts and ends it after). Without that callback, or with tracking off,
there is nothing to write to and the result is only logged.
"""

from __future__ import annotations

import logging
import math
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


def _target(study: Any) -> tuple[Any, str]:
    """Plot log10(value) when values are positive and span orders of magnitude.

    A search over lr has trials that blow the loss up to 1e250 without diverging to
    inf; on a linear axis they flatten every other trial to zero, and they overflow
    fANOVA's variances.
    """
    import optuna

    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if values and min(values) > 0 and max(values) / min(values) > 1e3:
        return (lambda t: math.log10(t.value)), "log10(objective value)"
    return None, "Objective Value"


def history(study: Any, plt: Any) -> Any:
    """Each trial's value, the best so far, and where trials failed (Optuna's own
    history plot drops the best-so-far line as soon as the axis is transformed)."""
    import optuna

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    if not done:
        raise ValueError("no completed trial")
    xs, ys = [t.number for t in done], [t.value for t in done]
    best, running = [], None
    for y in ys:
        running = y if running is None else (max if maximize else min)(running, y)
        best.append(running)
    label = f"objective ({'maximize' if maximize else 'minimize'})"
    final = best[-1]
    if min(ys) > 0 and max(ys) / min(ys) > 1e3:
        # log10 values, not a log axis: matplotlib's log ticks overflow near 1e300
        ys, best = [math.log10(y) for y in ys], [math.log10(b) for b in best]
        label = f"log10 {label}"
    fig, ax = plt.subplots()
    ax.plot(xs, ys, "o", label="trial value")
    ax.step(xs, best, where="post", color="C1", label="best so far")
    if failed:
        top = ax.get_ylim()[1]
        ax.plot(failed, [top] * len(failed), "x", color="C3", label=f"failed ({len(failed)})")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(f"Optuna optimization history: best {final:.10g}")
    ax.legend(fontsize=8)
    return ax


def plots(study: Any, folder: Path) -> dict[str, str]:
    """Optimization history and parameter importances as PNGs; {name: why not} for any skipped."""
    import optuna
    from optuna.visualization import matplotlib as vis

    from gradtrack.plot_render import pyplot

    plt = pyplot()
    target, name = _target(study)
    # Seeded, so the same study always gives the same importances.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)

    def importances() -> Any:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        if not all(math.isfinite(v) for v in found.values()):
            raise ValueError(f"importances are not finite: {found}")
        return vis.plot_param_importances(
            study, evaluator=evaluator, target=target, target_name=name
        )

    drawers = {
        "optuna_history.png": lambda: history(study, plt),
        "optuna_importance.png": importances,
    }
    skipped: dict[str, str] = {}
    for file, draw in drawers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw()
            fig = ax.figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            fig.savefig(folder / file, dpi=100)
            plt.close(fig)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            # e.g. importances need two completed trials with different values
            skipped[file] = f"{type(exc).__name__}: {exc}"[:300]
            plt.close("all")
    return skipped


def to_parent_run(study: Any, space: Any, *, maximize: bool, completed: bool = True) -> None:
    """Write the search result onto the sweep's parent run, if there is one.

    ``completed``: the search ran all its trials (its failed trials then do not fail
    the sweep); False when it stopped because too many trials failed.
    """
    try:
        from gradtrack import sweep as gradtrack_sweep
    except ImportError:
        return
    sweep = gradtrack_sweep.active_sweep()
    if sweep is None or sweep.parent_run_id is None:
        return
    # Failed trials are part of a search (a diverging lr is an answer too): they fail
    # the sweep only when too many of them stopped it.
    sweep.failed_jobs_ok = completed
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
