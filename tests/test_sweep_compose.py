"""The sweep's compose memo: each job composed once, copies handed out, shared by file
with worker processes, exactly what Hydra itself composes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

CONF = str(Path(__file__).resolve().parents[1] / "conf")
JOBS = [["+experiment=fit_linear_1d", f"optimizer.lr={lr}"] for lr in ("0.1", "0.2")]


@pytest.fixture
def master():
    """A real Hydra multirun master config and its config loader."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gradtrack.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[], return_hydra_config=True)
        yield cfg, GlobalHydra.instance().config_loader()


def _plain(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=False)


def test_kept_jobs_are_served_as_copies_of_hydras_own_composition(master):
    from omegaconf import OmegaConf

    from gradtrack.sweep_compose import ComposeMemo

    cfg, loader = master
    hydra_own = [type(loader).load_sweep_config(loader, cfg, list(j)) for j in JOBS]
    memo = ComposeMemo(loader)
    for job in JOBS:
        memo.keep(cfg, job)
    assert memo.composed == 2
    first = memo(master_config=cfg, sweep_overrides=JOBS[0])  # the sweeper's check
    second = memo(cfg, JOBS[0])  # the launcher, which modifies its copy
    assert first is not second and _plain(first) == _plain(hydra_own[0])
    second.hydra.job.num = 7
    assert memo.composed == 2 and memo.hits == 2
    assert _plain(memo(cfg, JOBS[1])) == _plain(hydra_own[1])
    # After its two requests a job's entry is gone: a third composes again.
    third = memo(cfg, JOBS[0])
    assert memo.composed == 3 and OmegaConf.is_missing(third.hydra.job, "num")


def test_a_worker_loads_the_shared_composition_instead_of_composing(master):
    """A joblib worker gets the loader pickled: no kept configs travel, the worker reads
    the job's file from the shared folder, and that equals Hydra's composition."""
    from gradtrack.sweep_compose import ComposeMemo

    cfg, loader = master
    memo = ComposeMemo.install(loader)
    memo.hits_per_job = 1
    memo.share()
    for job in JOBS:
        memo.keep(cfg, job)
    worker_loader = pickle.loads(pickle.dumps(loader))
    worker_master = pickle.loads(pickle.dumps(cfg))
    worker_memo = worker_loader.load_sweep_config
    assert isinstance(worker_memo, ComposeMemo) and not worker_memo._kept
    got = worker_loader.load_sweep_config(worker_master, list(JOBS[1]))
    assert worker_memo.composed == 0 and worker_memo.hits == 1
    assert _plain(got) == _plain(type(loader).load_sweep_config(loader, cfg, list(JOBS[1])))
    # A job nobody checked is composed as usual.
    other = worker_loader.load_sweep_config(worker_master, ["optimizer.lr=0.3"])
    assert worker_memo.composed == 1 and other.optimizer.lr == 0.3
    del loader.__dict__["load_sweep_config"]  # leave Hydra's loader as it was
