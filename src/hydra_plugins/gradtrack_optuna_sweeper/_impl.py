"""The search loop: ask a batch, launch it through Hydra's launcher, tell the results."""

from __future__ import annotations

import logging
import math
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.gradtrack_optuna_sweeper import _search_space
from hydra_plugins.gradtrack_optuna_sweeper.optuna_sweeper import (
    TrialsFailedError,
    check_settings,
)

log = logging.getLogger(__name__)


def trial_value(ret: JobReturn) -> tuple[float | None, str]:
    """(value, "") for a usable result, else (None, why the trial failed)."""
    if ret.status != JobStatus.COMPLETED:
        exc = ret._return_value
        text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {text}" if exc is not None else "the job failed"
    value = ret.return_value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, (
            f"the job returned {value!r}, not a number; the task must return the metric "
            "to optimise (gradtrack: set sweep_metric to a metric the run reports)"
        )
    if not math.isfinite(value):
        return None, f"the job returned a non-finite value ({value})"
    return value, ""


class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: Any,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int | None,
        max_failure_rate: float,
        params: Any,
    ) -> None:
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = (
            OmegaConf.to_container(params, resolve=False)
            if isinstance(params, DictConfig)
            else params
        )
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def batch_size(self) -> int:
        """hydra.sweeper.n_jobs, else the launcher's n_jobs (joblib), else 1."""
        if self.n_jobs is not None:
            return self.n_jobs
        assert self.config is not None
        launcher_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if isinstance(launcher_jobs, int) and launcher_jobs > 0:
            return launcher_jobs
        return 1

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        import optuna

        assert self.config is not None and self.hydra_context is not None
        problems = check_settings(self.direction, self.n_trials, self.n_jobs, self.max_failure_rate)
        try:
            space = _search_space.parse(arguments, self.params, self.hydra_context.config_loader)
        except _search_space.SearchSpaceError as exc:
            problems.append(str(exc))
        if problems:
            raise HydraException("Optuna sweeper: " + "; ".join(problems))
        if not space.params:
            log.warning("Optuna sweeper: no sweep override, every trial runs the same config")
        distributions = {p.key: p.distribution() for p in space.params}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from gradtrack.tracking import resume  # the sweep's study, kept and continued

        storage, study_name = resume.optuna_study(self.storage, self.study_name)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=self.sampler,
            direction=self.direction,
            load_if_exists=True,
        )
        batch = self.batch_size()
        log.info(
            f"Optuna {optuna.__version__} {type(study.sampler).__name__}: {self.n_trials} "
            f"trials, {self.direction}, batches of {batch}, search space: "
            + (", ".join(p.source for p in space.params) or "empty")
        )
        returns: list[list[JobReturn]] = []
        failed: list[str] = []
        done = resume.optuna_resume(study, log)  # up to n_trials in total
        while done < self.n_trials:
            trials = [study.ask(distributions) for _ in range(min(batch, self.n_trials - done))]
            jobs = [
                tuple(space.fixed + [p.override(t.params[p.key]) for p in space.params])
                for t in trials
            ]
            for trial, job in zip(trials, jobs):
                trial.set_user_attr("overrides", " ".join(job))
            self.validate_batch(jobs)
            results = self.launcher.launch(jobs, initial_job_idx=done)
            for trial, job, ret in zip(trials, jobs, results):
                value, why = trial_value(ret)
                if value is None:
                    trial.set_user_attr("error", why[:500])
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    failed.append(f"trial {trial.number} ({' '.join(job)}): {why}")
                    log.warning(f"Optuna trial {trial.number} failed: {why}")
                else:
                    study.tell(trial, value)
            returns.append(list(results))
            done += len(trials)
            too_many = len(failed) > self.max_failure_rate * self.n_trials
            if too_many or (done >= self.n_trials and len(failed) == done):
                self.report(study, space, completed=False)
                raise TrialsFailedError(
                    f"Optuna search stopped: {len(failed)} of {done} trials failed"
                    + (
                        f", more than hydra.sweeper.max_failure_rate={self.max_failure_rate} "
                        f"of {self.n_trials} trials"
                        if too_many
                        else ""
                    )
                    + f". First failure: {failed[0].rstrip('.')}. Narrow the search space "
                    "(e.g. a lower optimizer.lr bound) or fix the failing config."
                )
        self.report(study, space, completed=True)
        return returns

    def validate_batch(self, jobs: list[tuple[str, ...]]) -> None:
        assert self.hydra_context is not None and self.config is not None
        for overrides in jobs:
            self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def report(self, study: Any, space: _search_space.SearchSpace, completed: bool) -> None:
        """Log the best trial and write the result onto the parent run (also when the
        search stopped early: the trials so far are what the user needs to see)."""
        from hydra_plugins.gradtrack_optuna_sweeper import _report

        best = _report.best_trial(study)
        if best is None:
            log.warning("Optuna search: no trial completed")
        else:
            log.info(
                f"Optuna best trial {best.number}: value {best.value!r} "
                f"({best.user_attrs.get('overrides', '')})"
            )
        try:
            _report.to_parent_run(
                study, space, maximize=self.direction == "maximize", completed=completed
            )
        except Exception as exc:  # the trials already ran and are stored; say what is missing
            log.warning(
                f"Optuna search: could not write the result onto the sweep's parent run: "
                f"{type(exc).__name__}: {exc}"
            )
