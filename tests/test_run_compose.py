"""A single run's config is composed once (gradtrack/run_compose.py), and comes out
exactly as Hydra's own second composition would."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf


@pytest.fixture
def hydra_app():
    """A Hydra instance made the way ``@hydra.main`` makes gradtrack's."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from gradtrack.cli import CONF_DIR
    from gradtrack.config import register_configs

    register_configs()
    search_path = create_automatic_config_search_path(None, None, CONF_DIR)
    app = Hydra.create_main_hydra2(task_name="gradtrack", config_search_path=search_path)
    yield app
    GlobalHydra.instance().clear()


def _as_hydra_runs(app, overrides: list[str]):
    """What ``Hydra.run`` composes after ``get_mode`` (``_run_app``'s steps)."""
    from hydra.types import RunMode

    overrides = list(overrides)
    if app.get_mode(config_name="config", overrides=overrides) is None:
        overrides.append("hydra.mode=RUN")
    return app.compose_config("config", overrides, run_mode=RunMode.RUN)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["+experiment=fit_linear"],
        ["+experiment=fit_logistic", "backend=torch", "optimizer=adam", "optimizer.lr=0.01"],
        ["model=quadratic", "epochs=20", "hydra.run.dir=/tmp/elsewhere", "seed=3"],
        ["+experiment=seed_fence", "tracking.enabled=false", "hydra/job_logging=disabled"],
    ],
    ids=["defaults", "experiment", "groups-and-values", "hydra-override", "logging-group"],
)
def test_composed_once_equals_hydras_second_composition(hydra_app, overrides):
    from gradtrack import run_compose

    hydra_way = _plain(_as_hydra_runs(hydra_app, overrides))
    with run_compose.once() as memo:
        once = _as_hydra_runs(hydra_app, overrides)
    assert memo.reused == 1
    assert _plain(once) == hydra_way
    assert once.hydra.mode.name == "RUN" and once.hydra.overrides.hydra[-1] == "hydra.mode=RUN"


@pytest.mark.parametrize(
    "overrides",
    [["optimizer.lr=0.1,0.2"], ["epochs=range(1,3)"], ["model=???"]],
    ids=["choice-sweep", "range-sweep", "group-left-unchosen"],
)
def test_what_run_mode_refuses_is_composed_by_hydra_and_reported_as_usual(hydra_app, overrides):
    """MULTIRUN mode (get_mode's) accepts sweeps and skips an unchosen group; RUN mode
    refuses both. Such a composition is never kept, so Hydra's own error comes out."""
    from hydra.errors import ConfigCompositionException

    from gradtrack import run_compose

    with run_compose.once() as memo, pytest.raises(ConfigCompositionException):
        _as_hydra_runs(hydra_app, overrides)
    assert memo.reused == 0


def test_any_other_request_composes_as_usual(hydra_app):
    from hydra.types import RunMode

    from gradtrack import run_compose

    with run_compose.once() as memo:
        hydra_app.get_mode(config_name="config", overrides=["epochs=5"])
        other = hydra_app.compose_config("config", ["epochs=6"], run_mode=RunMode.RUN)
        again = _as_hydra_runs(hydra_app, ["epochs=5"])
    assert memo.reused == 1  # only the last pair
    assert other.epochs == 6 and again.epochs == 5
