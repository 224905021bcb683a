"""Configs of the Optuna sweeper, registered in Hydra's ConfigStore.

``hydra/sweeper=optuna`` selects :class:`OptunaSweeperConf` (TPE by default);
``hydra/sweeper/sampler=random`` swaps the sampler. Registered on import, which
Hydra's plugin scan does for every app, so this module imports no Optuna.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it
# is in sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConfig:
    """optuna.samplers.TPESampler; constant_liar keeps a batch of parallel asks apart."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.gradtrack_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # _self_ first: the chosen sampler config fills `sampler` instead of being reset by it.
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])
    sampler: Any = MISSING
    # minimize or maximize the value the task returns (gradtrack: cfg.sweep_metric).
    direction: str = "minimize"
    # Optuna storage URL (e.g. sqlite:///optuna.db) to keep or resume a study; null = memory.
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 20
    # Trials asked (and launched) per batch; null = the launcher's n_jobs, else 1.
    n_jobs: int | None = None
    # Stop the search once more than this fraction of n_trials has failed (diverging
    # trials are normal in a search; 1.0 = only fail when no trial completes at all).
    max_failure_rate: float = 1.0
    # Search space as Hydra overrides, e.g. {optimizer.lr: "tag(log, interval(1e-3, 1))"};
    # sweep overrides on the command line are added to it.
    params: dict[str, str] | None = None


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="gradtrack")
cs.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="gradtrack")
cs.store(
    group="hydra/sweeper/sampler", name="random", node=RandomSamplerConfig, provider="gradtrack"
)
