"""Compose each job of a basic sweep once instead of three times.

A Hydra multirun composes every job's config three times in the launching process:
``gradtrack.sweep.check_jobs`` composes and validates them all before any run exists,
the basic sweeper composes them again (``validate_batch_is_legal``), and the basic
launcher composes each once more right before running it. Composition is Hydra's
defaults tree plus OmegaConf merges, ~0.1 s a job: two thirds of a small job's cost.

``ComposeMemo`` wraps the config loader's ``load_sweep_config``: ``keep`` composes a
job (check_jobs) and keeps the result; later requests for the same master config and
overrides (the sweeper's check, then the launcher) each get a deep copy of it (~0.01 s;
the launcher modifies its config: job id, output dir). Each copy gets the master's
resolver cache again, as Hydra's own ``load_sweep_config`` does, so ``${now:...}``
resolves to the same value as without the memo. An entry is dropped after the requests
its launcher makes (2 with the basic launcher; 1, the sweeper's, when the launcher
composes in worker processes). Any other request composes as usual.

Pickled (the joblib launcher sends the loader to its workers), the memo travels
without its configs. A launcher that composes each job again in a worker process
(joblib) would pay the composition twice per job, once serially in the main process.
So for those, ``share`` writes each kept composition to a private temporary folder
(pickled, a few ms), named by a hash of exactly what Hydra composes from (config name,
the master's Hydra overrides, the job's overrides); a worker on the same machine loads
it instead of composing. Where the folder cannot be read (a Ray worker on another
machine), the worker composes as usual.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
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

    @classmethod
    def install(cls, loader: Any) -> ComposeMemo:
        """The memo on ``loader`` (installed on first use)."""
        memo = loader.__dict__.get("load_sweep_config")
        if not isinstance(memo, cls):
            memo = cls(loader)
            loader.load_sweep_config = memo
        return memo

    def _compose(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        self.composed += 1
        return type(self._loader).load_sweep_config(self._loader, master_config, sweep_overrides)

    def share(self) -> None:
        """Also hand kept compositions to worker processes on this machine (files)."""
        if self.share_dir is None:
            self.share_dir = tempfile.mkdtemp(prefix="gradtrack-compose-")
            atexit.register(shutil.rmtree, self.share_dir, True)

    def keep(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """Compose a job, keep it for the next requests, and return a copy of it."""
        cfg = self._compose(master_config, list(sweep_overrides))
        self._kept[(id(master_config), tuple(sweep_overrides))] = [cfg, 0]
        if self.share_dir is not None:
            path = self._shared_path(master_config, sweep_overrides)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, path)
        return copy.deepcopy(cfg)

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
        if entry[1] >= self.hits_per_job:
            del self._kept[key]
        self.hits += 1
        cfg = copy.deepcopy(entry[0])
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
        }
