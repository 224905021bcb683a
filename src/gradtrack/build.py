"""From a config to the pieces of a run, built one way for ``gradtrack``,
``gradtrack-compare``, the tests and the benchmarks.

:func:`prepare` validates the config and loads the data (every input error surfaces
there); :func:`build_problem` draws the initial parameters; :func:`build_trainer`
hands both, the optimizer and the batch plan to the backend.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from gradtrack import config
from gradtrack.backends import get_backend
from gradtrack.backends.base import BatchPlan, Trainer
from gradtrack.data.load import Dataset, load_dataset
from gradtrack.models import InitSpec, Params, Problem, get_problem
from gradtrack.optimizers import OptimizerSpec


def prepare(cfg: config.Config) -> tuple[Path, Dataset]:
    """Validate the config and load the data: every input error surfaces here."""
    config.validate(cfg)
    root = config.project_root(cfg)
    ds = load_dataset(cfg.dataset, config.resolve_path(root, cfg.dataset.path), cfg.dataset.task)
    return root, ds


def optimizer_spec(o: config.OptimizerConfig) -> OptimizerSpec:
    return OptimizerSpec(
        name=o.name,
        lr=o.lr,
        momentum=o.momentum,
        beta1=o.beta1,
        beta2=o.beta2,
        eps=o.eps,
        clip_norm=o.clip_norm,
    )


def build_problem(cfg: config.Config, ds: Dataset) -> tuple[Problem, Params]:
    """The configured problem and its initial parameters, drawn in numpy from ``seed``."""
    m = cfg.model
    problem = get_problem(m.name, m.loss_form, m.tol)
    spec = InitSpec(m.init, m.init_scale, m.init_value, m.x0)
    return problem, problem.init_params(ds.n_features, spec, np.random.default_rng(cfg.seed))


def build_trainer(
    cfg: config.Config,
    ds: Dataset,
    *,
    backend: ModuleType | None = None,
    start: tuple[Problem, Params] | None = None,
) -> Trainer:
    """The configured backend's trainer at the configured start.

    ``backend`` (default: ``cfg.backend.name``'s module) and ``start`` (default:
    :func:`build_problem`) let the run reuse what it already has.
    """
    problem, params0 = start if start is not None else build_problem(cfg, ds)
    o = cfg.optimizer
    plan = None if ds.X is None else BatchPlan(ds.n_rows, o.batch_size, o.shuffle, cfg.seed)
    return (backend or get_backend(cfg.backend.name)).make_trainer(
        problem,
        params0,
        ds.X,
        ds.y,
        spec=optimizer_spec(o),
        dtype=cfg.backend.dtype,
        plan=plan,
        eager=cfg.backend.eager,
        device=cfg.backend.device,
    )
