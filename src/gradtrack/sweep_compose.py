"""Compose each job of a basic sweep once instead of three times.

A Hydra multirun composes every job's config three times in the launching process:
``gradtrack.sweep.check_jobs`` composes and validates them all before any run exists,
the basic sweeper composes them again (``validate_batch_is_legal``), and the basic
launcher composes each once more right before running it. Composition is Hydra's
defaults tree plus OmegaConf merges, ~0.1 s a job: two thirds of a small job's cost.

``ComposeMemo`` wraps the config loader's ``load_sweep_config``: ``keep`` composes a
job (check_jobs) and keeps the result, handing check_jobs a copy; later requests for the
same master config and overrides (the sweeper's check, which drops what it gets, then
the launcher, which modifies it: job id, output dir) get the kept config itself. Each
gets the master's resolver cache again, as Hydra's own ``load_sweep_config`` does, so
``${now:...}`` resolves to the same value as without the memo. An entry is dropped
after the requests its launcher makes (2 with the basic launcher; 1, the sweeper's,
when the launcher composes in worker processes). Any other request composes as usual.

Pickled (the joblib launcher sends the loader to its workers), the memo travels
without its configs. A launcher that composes each job again in a worker process
(joblib) would pay the composition twice per job, once serially in the main process.
So for those, ``share`` writes each kept composition to a private temporary folder
(pickled, a few ms), named by a hash of exactly what Hydra composes from (config name,
the master's Hydra overrides, the job's overrides); a worker on the same machine loads
it instead of composing. Where the folder cannot be read (a Ray worker on another
machine), the worker composes as usual. A joblib sweep's jobs are composed by a child
forked from the main process (gradtrack.sweep.ForkedCheck), with its own copy of the
memo: the main process then keeps what the child shared (``keep_shared``).

Composing itself is mostly work that every job of a sweep repeats identically: Hydra
reads and parses the config files, builds the defaults tree and merges the configs it
lists, and only then applies the job's value overrides (``optimizer.lr=0.1``). Value
overrides never change the defaults tree (Hydra decides which overrides are group
choices, ``backend=torch``, and which are values; see ``defaults_list.Overrides``). So
while the memo composes the sweep's jobs (``keep``), ``_DefaultsReuse`` keeps, per set of
group overrides (and search path), Hydra's defaults list and the config merged from it,
and a job with the same group overrides starts from a copy of that merged config. It
also keeps each config file as first loaded and each override as first parsed, and
hands out copies: Hydra reads and parses the primary config again for every job only to
look for its ``hydra.searchpath`` (~2.5 ms), and parses the master's and the job's
overrides again (~1 ms), though only one of them differs between jobs. The
rest is Hydra's own ``_load_configuration_impl``: value overrides, hydra.overrides,
choices, runtime fields. tests/test_sweep_compose.py compares the result with Hydra's
composition, group overrides included.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ComposeMemo:
    """Replaces ``loader.load_sweep_config`` on one ConfigLoader instance."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self.hits_per_job = 2  # the sweeper's check, then the (basic) launcher
        self._kept: dict[tuple[int, tuple[str, ...]], list] = {}  # key -> [config, hits]
        self.hits = 0
        self.composed = 0
        self.share_dir: str | None = None  # see share()
        self._defaults: _DefaultsReuse | None = None  # see keep()

    @classmethod
    def install(cls, loader: Any) -> ComposeMemo:
        """The memo on ``loader`` (installed on first use)."""
        memo = loader.__dict__.get("load_sweep_config")
        if not isinstance(memo, cls):
            memo = cls(loader)
            loader.load_sweep_config = memo
        return memo

    def _compose(
        self, master_config: DictConfig, sweep_overrides: list[str], reuse: bool = False
    ) -> DictConfig:
        self.composed += 1
        with _store_shared_by_copies():
            if not reuse:
                return type(self._loader).load_sweep_config(
                    self._loader, master_config, sweep_overrides
                )
            if self._defaults is None:
                self._defaults = _DefaultsReuse()
            with self._defaults.installed(self._loader):
                return type(self._loader).load_sweep_config(
                    self._loader, master_config, sweep_overrides
                )

    def share(self) -> None:
        """Also hand kept compositions to worker processes on this machine (files)."""
        if self.share_dir is None:
            self.share_dir = tempfile.mkdtemp(prefix="gradtrack-compose-")
            atexit.register(shutil.rmtree, self.share_dir, True)

    def keep(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """Compose a job, keep it for the next requests, and return a copy of its
        application config: everything but the ``hydra`` node (what check_jobs
        validates)."""
        cfg = self._compose(master_config, list(sweep_overrides), reuse=True)
        self._kept[(id(master_config), tuple(sweep_overrides))] = [cfg, 0]
        if self.share_dir is not None:
            path = self._shared_path(master_config, sweep_overrides)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, path)
        return app_config_copy(cfg)

    def keep_shared(self, master_config: DictConfig, jobs: list[list[str]]) -> int:
        """Keep the jobs' compositions that another process shared (the child that
        checked a joblib sweep's jobs, gradtrack.sweep.ForkedCheck), as ``keep`` would
        have kept them here; returns how many. The next requests here (the sweeper's
        check) then read nothing, and the reading happens while the main process waits
        for its workers anyway."""
        kept = 0
        for job in jobs:
            key = (id(master_config), tuple(job))
            if key not in self._kept:
                cfg = self._load_shared(master_config, list(job))
                if cfg is None:
                    continue
                self._kept[key] = [cfg, 0]
            kept += 1
        return kept

    def _shared_path(self, master_config: DictConfig, sweep_overrides: list[str]) -> Path:
        # The inputs of Hydra's load_sweep_config besides the config files themselves.
        what = [
            str(master_config.hydra.job.config_name),
            OmegaConf.to_container(master_config.hydra.overrides.hydra),
            list(sweep_overrides),
        ]
        digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]
        return Path(str(self.share_dir)) / f"{digest}.pkl"

    def _load_shared(self, master_config: DictConfig, sweep_overrides: list[str]):
        if self.share_dir is None:
            return None
        try:
            blob = self._shared_path(master_config, sweep_overrides).read_bytes()
        except OSError:  # another machine, or a job this process did not check
            return None
        return pickle.loads(blob)

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        entry = self._kept.get(key)
        if entry is None:
            cfg = self._load_shared(master_config, sweep_overrides)
            if cfg is None:
                return self._compose(master_config, list(sweep_overrides))
            self.hits += 1
            OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
            return cfg
        entry[1] += 1
        self.hits += 1
        # Every request gets the kept config itself (keep handed check_jobs a copy). With
        # the basic launcher the first request is the sweeper's check, which composes a
        # whole batch and drops each config unread (Sweeper.validate_batch_is_legal);
        # only then does the launcher take the config and modify it. A copy for the
        # check would be ~3.5 ms a job, before the first job starts.
        if entry[1] >= self.hits_per_job:
            del self._kept[key]  # the job's last request: the memo forgets it
        cfg = entry[0]
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def __getstate__(self) -> dict[str, Any]:
        return {
            "_loader": self._loader,
            "_kept": {},
            "hits": 0,
            "composed": 0,
            "hits_per_job": self.hits_per_job,
            "share_dir": self.share_dir,
            "_defaults": None,
        }


def _copy_config(cfg: DictConfig, leave_out: Any = None) -> DictConfig:
    """A deep copy made by pickling: OmegaConf pickles a config whole (values, flags,
    types, parents), in about half the time ``copy.deepcopy`` takes (1.7 against 3.2 ms
    for a composed gradtrack config). ``leave_out``, a node of ``cfg``, is not copied:
    an empty config stands in its place (the caller deletes it)."""
    if leave_out is None:  # no persistent_id to call for every object
        return pickle.loads(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
    buf = io.BytesIO()
    _LeavingOut(buf, leave_out).dump(cfg)
    buf.seek(0)
    return _StandingIn(buf).load()


class _LeavingOut(pickle.Pickler):
    """Pickles one object (``leave_out``) by reference only, as a persistent id."""

    def __init__(self, file: io.BytesIO, leave_out: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._leave_out = leave_out

    def persistent_id(self, obj: Any) -> str | None:
        return "left out" if obj is self._leave_out else None


class _StandingIn(pickle.Unpickler):
    """Puts an empty config where _LeavingOut left an object out."""

    def persistent_load(self, pid: Any) -> DictConfig:
        return OmegaConf.create({})


def app_config_copy(cfg: DictConfig) -> DictConfig:
    """A copy of a composed config without its ``hydra`` node.

    The hydra node is most of a composed config (launcher, sweeper, logging, help
    texts, runtime), so it is left out of the copy instead of being copied and then
    deleted (0.6 against 1.2 ms a job copied whole with ``deepcopy``). ``cfg`` itself
    is not touched: its hydra node stays attached to it (the tests check it).
    """
    from omegaconf import open_dict

    hydra = cfg._get_node("hydra") if "hydra" in cfg else None
    out = _copy_config(cfg, leave_out=hydra)
    if hydra is not None:
        with open_dict(out):
            del out["hydra"]
    return out


@contextlib.contextmanager
def _store_shared_by_copies():
    """For the duration: a copy of Hydra's structured config source shares the
    ConfigStore instead of copying it.

    Every composition copies the loader's config repository
    (``CachingConfigRepository``, so that re-initialising its sources leaves the
    loader's alone), and with it the structured source's ``store``: the process's
    ConfigStore singleton, every registered schema and plugin config (~9 ms a job).
    Sources made anew (``initialize_sources``) use the singleton itself, and the store
    hands out copies of what it loads, so sharing it changes no composition.
    """
    from hydra._internal.core_plugins.structured_config_source import StructuredConfigSource

    def shallow(self, memo):
        new = copy.copy(self)  # provider and path (strings), and the same store
        memo[id(self)] = new
        return new

    had = "__deepcopy__" in vars(StructuredConfigSource)
    if had:  # someone else's: leave it
        yield
        return
    StructuredConfigSource.__deepcopy__ = shallow
    try:
        yield
    finally:
        del StructuredConfigSource.__deepcopy__


class _DefaultsReuse:
    """Hydra's defaults list and merged config, per set of group overrides (see above).

    ``installed`` puts it in Hydra's way for one composition: the module's
    ``create_defaults_list`` and the loader's ``_compose_config_from_defaults_list``.
    """

    def __init__(self) -> None:
        self._lists: dict[tuple, Any] = {}  # key -> DefaultsList
        self._configs: dict[tuple, DictConfig] = {}  # key -> merged config (pristine)
        self._loaded: dict[tuple, Any] = {}  # (sources, config path) -> ConfigResult
        self._parsed: dict[str, Any] = {}  # override line -> Override (pristine)
        self._key: tuple | None = None  # the composition under way
        self.reused = 0

    @contextlib.contextmanager
    def installed(self, loader: Any):
        from hydra._internal import config_loader_impl
        from hydra._internal.config_repository import ConfigRepository
        from hydra.core.override_parser.overrides_parser import OverridesParser

        original = config_loader_impl.create_defaults_list
        config_loader_impl.create_defaults_list = functools.partial(
            self._create_defaults_list, original
        )
        loader._compose_config_from_defaults_list = functools.partial(
            self._compose_from, type(loader)._compose_config_from_defaults_list.__get__(loader)
        )
        load_config, parse_overrides = ConfigRepository.load_config, OverridesParser.parse_overrides
        ConfigRepository.load_config = lambda repo, config_path: self._load_config(
            load_config, repo, config_path
        )
        OverridesParser.parse_overrides = lambda parser, overrides: self._parse_overrides(
            parse_overrides, parser, overrides
        )
        try:
            yield
        finally:
            config_loader_impl.create_defaults_list = original
            del loader._compose_config_from_defaults_list
            ConfigRepository.load_config = load_config
            OverridesParser.parse_overrides = parse_overrides
            self._key = None

    def _load_config(self, original, repo, config_path: str) -> Any:
        """A config file (or schema) as Hydra's repository loads it; a copy after the
        first time. Hydra modifies what it loads (defaults lists, merges), so the kept
        result is never handed out."""
        key = (tuple((s.provider, s.path) for s in repo.get_sources()), config_path)
        if key not in self._loaded:
            self._loaded[key] = original(repo, config_path=config_path)
        return copy.deepcopy(self._loaded[key])

    def _parse_overrides(self, original, parser, overrides: list[str]) -> list:
        """Hydra's parse of each override, a copy after the first time."""
        if parser.config_loader is not None:  # a parser that can list config groups
            return original(parser, overrides=overrides)
        out = []
        for line in overrides:
            if line not in self._parsed:
                self._parsed[line] = original(parser, overrides=[line])[0]
            out.append(copy.deepcopy(self._parsed[line]))
        return out

    def _create_defaults_list(
        self, original, repo, config_name, overrides_list, prepend_hydra, skip_missing
    ):
        from hydra._internal.defaults_list import DefaultsList, Overrides

        self._key = None
        try:  # Hydra's own split of the overrides into group choices and values
            values = Overrides(repo=repo, overrides_list=list(overrides_list)).config_overrides
        except Exception:  # Hydra reports it, composing as usual
            return original(
                repo=repo,
                config_name=config_name,
                overrides_list=overrides_list,
                prepend_hydra=prepend_hydra,
                skip_missing=skip_missing,
            )
        plain = {id(o) for o in values if not o.get_key_element().startswith("hydra.")}
        key = (
            config_name,
            prepend_hydra,
            skip_missing,
            tuple((s.provider, s.path) for s in repo.get_sources()),
            tuple(o.input_line for o in overrides_list if id(o) not in plain),
        )
        self._key = key
        known = self._lists.get(key)
        if known is None:
            known = self._lists[key] = original(
                repo=repo,
                config_name=config_name,
                overrides_list=overrides_list,
                prepend_hydra=prepend_hydra,
                skip_missing=skip_missing,
            )
            return known
        return DefaultsList(
            defaults=known.defaults,
            defaults_tree=known.defaults_tree,
            config_overrides=values,
            overrides=known.overrides,  # (only its known_choices are read later)
        )

    def _compose_from(self, original, defaults, repo) -> DictConfig:
        key, self._key = self._key, None
        if key is None:
            return original(defaults=defaults, repo=repo)
        merged = self._configs.get(key)
        if merged is None:
            cfg = original(defaults=defaults, repo=repo)
            self._configs[key] = _copy_config(cfg)
            return cfg
        self.reused += 1
        return _copy_config(merged)
