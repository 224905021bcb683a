"""The Hydra Sweeper plugin class: thin, so Hydra's plugin scan stays cheap."""

from __future__ import annotations

from typing import Any

from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

DIRECTIONS = ("minimize", "maximize")


class TrialsFailedError(CompactHydraException):
    """More trials failed than hydra.sweeper.max_failure_rate allows: the search stops."""


def check_settings(
    direction: str, n_trials: int, n_jobs: int | None, max_failure_rate: float
) -> list[str]:
    """Problems with the sweeper's own settings, each naming the key and the fix."""
    problems = []
    if direction not in DIRECTIONS:
        problems.append(
            f"hydra.sweeper.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}"
        )
    if n_trials < 1:
        problems.append(f"hydra.sweeper.n_trials: must be >= 1, got {n_trials}")
    if n_jobs is not None and n_jobs < 1:
        problems.append(f"hydra.sweeper.n_jobs: must be >= 1 (or null), got {n_jobs}")
    if not 0 <= max_failure_rate <= 1:
        problems.append(
            f"hydra.sweeper.max_failure_rate: must be in [0, 1], got {max_failure_rate}"
        )
    return problems


class OptunaSweeper(Sweeper):
    """Asks Optuna for ``n_jobs`` trials at a time, launches them, tells the results."""

    def __init__(
        self,
        sampler: Any,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int | None,
        max_failure_rate: float,
        params: dict[str, str] | None,
    ) -> None:
        from hydra_plugins.gradtrack_optuna_sweeper._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(
            sampler=sampler,
            direction=direction,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            params=params,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)

    @staticmethod
    def validation_jobs(config: DictConfig) -> list[list[str]]:
        """Override lists that cover every bound and choice of the search space.

        Called before launch (gradtrack.sweep composes and validates each), so a bound
        that no config accepts fails before any trial. Raises ValueError naming the
        key for a malformed search space or sweeper setting.
        """
        from hydra.core.global_hydra import GlobalHydra

        from hydra_plugins.gradtrack_optuna_sweeper import _search_space

        s = config.hydra.sweeper
        problems = check_settings(s.direction, s.n_trials, s.n_jobs, s.max_failure_rate)
        arguments = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        params = OmegaConf.to_container(s.params, resolve=False) if s.params else None
        loader = GlobalHydra.instance().config_loader()
        try:
            space = _search_space.parse(arguments, params, loader)
        except _search_space.SearchSpaceError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return space.corner_jobs()
