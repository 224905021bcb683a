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


def test_kept_jobs_are_served_from_one_composition_equal_to_hydras(master):
    from omegaconf import OmegaConf

    from gradtrack.sweep_compose import ComposeMemo

    cfg, loader = master
    hydra_own = [type(loader).load_sweep_config(loader, cfg, list(j)) for j in JOBS]
    memo = ComposeMemo(loader)
    checked = [memo.keep(cfg, job) for job in JOBS]
    assert memo.composed == 2
    # The basic sweeper's check composes and drops; the launcher then takes the same
    # config and modifies it.
    first = memo(master_config=cfg, sweep_overrides=JOBS[0])
    assert _plain(first) == _plain(hydra_own[0])
    second = memo(cfg, JOBS[0])
    assert second is first
    second.hydra.job.num = 7
    second.optimizer.lr = 99.0  # what check_jobs validated is its own copy
    assert checked[0].optimizer.lr == hydra_own[0].optimizer.lr != 99.0
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


def test_the_main_process_keeps_what_a_forked_checker_shared(master):
    """A joblib sweep's jobs are composed in a forked child (sweep.ForkedCheck); the
    main process then keeps the child's shared compositions, so that the sweeper's check
    there composes nothing and reads no file."""
    from gradtrack.sweep_compose import ComposeMemo

    cfg, loader = master
    memo = ComposeMemo.install(loader)
    memo.hits_per_job = 1
    memo.share()
    checker = pickle.loads(pickle.dumps(loader)).load_sweep_config  # the child's memo
    for job in JOBS:
        checker.keep(cfg, job)
    assert memo.keep_shared(cfg, [*JOBS, ["optimizer.lr=0.3"]]) == len(JOBS)  # not shared
    for path in Path(memo.share_dir).iterdir():
        path.unlink()  # nothing left to read
    for job in JOBS:
        got = memo(cfg, list(job))
        assert _plain(got) == _plain(type(loader).load_sweep_config(loader, cfg, list(job)))
    assert memo.composed == 0 and memo.hits == len(JOBS) and not memo._kept
    del loader.__dict__["load_sweep_config"]  # leave Hydra's loader as it was


# Group choices (backend, optimizer, +experiment, a nested dataset default), value
# overrides of keys those groups set, a new key, and the same group set again later.
MIXED_JOBS = [
    ["+experiment=fit_linear_1d", "optimizer.lr=0.1"],
    ["+experiment=fit_linear_1d", "optimizer.lr=0.2", "epochs=7"],
    ["+experiment=fit_linear_1d", "backend=torch", "optimizer.lr=0.1"],
    ["+experiment=fit_linear", "optimizer=adam", "optimizer.lr=0.05"],
    ["+experiment=fit_logistic", "dataset=pima", "dataset.standardize=false"],
    ["+experiment=fit_linear_1d", "backend=tensorflow", "backend.dtype=float32"],
    ["+experiment=fit_linear_1d", "optimizer.lr=0.3", "tracking.enabled=false"],
    ["+experiment=fit_linear_1d", "backend=torch", "optimizer.lr=0.4", "seed=3"],
    ["optimizer=momentum", "optimizer.momentum=0.5", "hydra.job.chdir=true"],
    ["+experiment=fit_linear", "optimizer=adam", "optimizer.lr=0.06"],
]


def _flags(cfg) -> list:
    """Every node's struct/readonly flags, by path."""
    from omegaconf import DictConfig, ListConfig

    out, todo = [], [("", cfg)]
    while todo:
        path, node = todo.pop()
        out.append((path, node._get_flag("struct"), node._get_flag("readonly")))
        if node._is_none() or node._is_missing() or node._is_interpolation():
            continue
        keys = list(node.keys()) if isinstance(node, DictConfig) else []
        for k in keys:
            child = node._get_node(k)
            if isinstance(child, DictConfig | ListConfig):
                todo.append((f"{path}.{k}", child))
    return sorted(out)


def test_jobs_sharing_group_choices_compose_exactly_as_hydra_does(master):
    """Reusing the merged defaults across jobs changes nothing: every job's config,
    hydra node included, equals Hydra's own composition (values, flags, typed object),
    whatever group choices the jobs before it made."""
    from omegaconf import OmegaConf, open_dict

    from gradtrack.sweep_compose import ComposeMemo

    cfg, loader = master
    memo = ComposeMemo(loader)
    kept = [memo.keep(cfg, job) for job in MIXED_JOBS]
    assert memo._defaults.reused >= 4  # the same group choices came back
    for job, app in zip(MIXED_JOBS, kept):
        mine = memo(cfg, job)  # the whole config, as the sweeper gets it
        hydra_own = type(loader).load_sweep_config(loader, cfg, list(job))
        assert OmegaConf.to_yaml(mine) == OmegaConf.to_yaml(hydra_own), job
        assert _flags(mine) == _flags(hydra_own), job
        for c in (mine, hydra_own):
            with open_dict(c):
                del c["hydra"]
        assert "hydra" not in app and OmegaConf.to_yaml(app) == OmegaConf.to_yaml(hydra_own)
        assert _flags(app) == _flags(hydra_own), job
        assert OmegaConf.to_object(app) == OmegaConf.to_object(hydra_own), job
        assert OmegaConf.to_object(mine) == OmegaConf.to_object(hydra_own), job
    # A job's value override must not leak into the next job with the same groups.
    assert kept[0].optimizer.lr == 0.1 and kept[1].optimizer.lr == 0.2
    assert kept[0].epochs != 7 and kept[6].tracking.enabled is False
    # A bad value is refused as Hydra refuses it.
    with pytest.raises(Exception, match="optimizer.lr"):
        memo.keep(cfg, ["+experiment=fit_linear_1d", "optimizer.lr=fast"])
    with pytest.raises(Exception, match="optimizer.lr"):
        type(loader).load_sweep_config(
            loader, cfg, ["+experiment=fit_linear_1d", "optimizer.lr=fast"]
        )
    # Hydra's own functions are back in place afterwards.
    from hydra._internal import config_loader_impl, defaults_list
    from hydra._internal.config_repository import ConfigRepository
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert config_loader_impl.create_defaults_list is defaults_list.create_defaults_list
    assert "_compose_config_from_defaults_list" not in vars(loader)
    assert ConfigRepository.load_config.__module__ == ConfigRepository.__module__
    assert OverridesParser.parse_overrides.__module__ == OverridesParser.__module__


def test_a_sweeps_jobs_read_each_config_file_and_parse_each_override_once(master, monkeypatch):
    """Composing N jobs reads the primary config once, not N times, and parses an
    override shared by every job once; each job's config is still Hydra's."""
    from hydra._internal.core_plugins.file_config_source import FileConfigSource
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from gradtrack.sweep_compose import ComposeMemo

    reads: list[str] = []
    parses: list[str] = []
    read, parse = FileConfigSource.load_config, OverridesParser.parse_overrides

    def counted_read(source, config_path):
        reads.append(config_path)
        return read(source, config_path)

    def counted_parse(parser, overrides):
        parses.extend(overrides)
        return parse(parser, overrides)

    monkeypatch.setattr(FileConfigSource, "load_config", counted_read)
    monkeypatch.setattr(OverridesParser, "parse_overrides", counted_parse)
    cfg, loader = master
    jobs = [["+experiment=fit_linear_1d", f"optimizer.lr={i / 10}"] for i in range(1, 7)]
    memo = ComposeMemo(loader)
    kept = [memo.keep(cfg, job) for job in jobs]
    assert reads.count("config") == 1, reads
    assert parses.count("+experiment=fit_linear_1d") == 1
    assert [k.optimizer.lr for k in kept] == [i / 10 for i in range(1, 7)]
    assert OverridesParser.parse_overrides is counted_parse  # put back afterwards
    monkeypatch.undo()
    for job in (jobs[0], jobs[-1]):
        hydra_own = type(loader).load_sweep_config(loader, cfg, list(job))
        assert OmegaConf.to_yaml(memo(cfg, job)) == OmegaConf.to_yaml(hydra_own)


def test_the_app_config_copy_leaves_the_composed_config_whole(master):
    """keep hands check_jobs a copy without the hydra node, made without copying that
    node: the copy is the config minus hydra, and the composed config keeps its hydra
    node attached (its interpolations still resolve against it)."""
    import copy

    from omegaconf import OmegaConf, open_dict

    from gradtrack.sweep_compose import app_config_copy

    cfg, loader = master
    composed = type(loader).load_sweep_config(loader, cfg, list(JOBS[0]))
    composed.hydra.job.num = 3
    before = OmegaConf.to_yaml(composed)
    app = app_config_copy(composed)
    expected = copy.deepcopy(composed)
    with open_dict(expected):
        del expected["hydra"]
    assert OmegaConf.to_yaml(app) == OmegaConf.to_yaml(expected)
    assert _flags(app) == _flags(expected)
    assert OmegaConf.to_object(app) == OmegaConf.to_object(expected)
    app.optimizer.lr = 99.0  # the copy is no one else's
    assert OmegaConf.to_yaml(composed) == before
    assert composed.hydra._get_parent() is composed
    assert composed.hydra.sweep.subdir == "3"  # ${hydra.job.num}, found from the root


def test_compositions_share_the_config_store_and_put_hydra_back(master):
    """Copies of the structured config source made while the memo composes share the
    ConfigStore; Hydra's own deepcopy is back afterwards."""
    import copy

    from hydra._internal.core_plugins.structured_config_source import StructuredConfigSource

    from gradtrack.sweep_compose import _store_shared_by_copies

    source = StructuredConfigSource("schema", "structured://")
    with _store_shared_by_copies():
        shared = copy.deepcopy(source)
    assert shared is not source and shared.store is source.store
    assert shared.load_config("config_schema").config == source.load_config("config_schema").config
    assert "__deepcopy__" not in vars(StructuredConfigSource)
    assert copy.deepcopy(source).store is not source.store
