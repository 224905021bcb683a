"""Compose a single run's config once instead of twice.

For ``gradtrack ...`` (no ``-m``) Hydra composes the whole config two times: first
in ``Hydra.get_mode``, only to read ``hydra.mode`` (in MULTIRUN mode, sweep checks
off), then again in ``Hydra.run`` (RUN mode, with ``hydra.mode=RUN`` appended when
the config does not set a mode). Composition is Hydra's defaults tree and OmegaConf
merges, ~70 ms: a sixth of an untracked scalar run's whole process.

``once()`` wraps ``ConfigLoaderImpl.load_configuration`` for the duration of the
command and keeps get_mode's composition when the RUN composition would come out the
same: no override sweeps (in RUN mode those are errors or choices) and no group left
unchosen (MULTIRUN mode skips a missing ``???`` default, RUN mode reports it). The
next RUN request for the same config name and overrides, plus at most
``hydra.mode=RUN``, takes it, with that override applied as Hydra applies it. Any other
request composes as usual, and the kept composition is dropped.
tests/test_run_compose.py checks the result against Hydra's own RUN composition.
"""

from __future__ import annotations

import contextlib
from typing import Any

MODE_RUN = "hydra.mode=RUN"


class _Once:
    def __init__(self, original: Any) -> None:
        self.original = original
        self.kept: tuple[tuple, Any] | None = None  # ((config name, overrides), config)
        self.reused = 0

    def __call__(self, loader, config_name, overrides, run_mode, *args, **kwargs):
        from hydra.types import RunMode

        validate = kwargs.get("validate_sweep_overrides", args[1] if len(args) > 1 else True)
        from_shell = kwargs.get("from_shell", args[0] if args else True)
        key = (config_name, tuple(overrides), from_shell)
        kept, self.kept = self.kept, None
        if run_mode == RunMode.RUN and kept is not None:
            (name, before, shell), cfg = kept
            extra = list(overrides[len(before) :])
            if (name, tuple(overrides[: len(before)]), shell) == (config_name, before, from_shell):
                if extra == [MODE_RUN] and cfg.hydra.mode is None:
                    cfg.hydra.mode = RunMode.RUN  # what Hydra's override sets
                    cfg.hydra.overrides.hydra.append(MODE_RUN)
                    extra = []
                if not extra:
                    self.reused += 1
                    return cfg
        cfg = self.original(loader, config_name, overrides, run_mode, *args, **kwargs)
        if run_mode == RunMode.MULTIRUN and not validate and _same_in_run_mode(cfg, overrides):
            self.kept = (key, cfg)  # get_mode only reads hydra.mode from it
        return cfg


def _same_in_run_mode(cfg: Any, overrides: list[str]) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra reports it when it composes
        return False
    if any(o.is_sweep_override() for o in parsed):
        return False
    from omegaconf import OmegaConf

    choices = cfg.hydra.runtime.choices  # a skipped group's choice is missing (???)
    return not any(OmegaConf.is_missing(choices, k) for k in choices)


@contextlib.contextmanager
def once():
    """For the duration: a single run's config is composed once (see module doc)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl.load_configuration
    memo = _Once(original)

    def load_configuration(self, config_name, overrides, run_mode, *args, **kwargs):
        return memo(self, config_name, overrides, run_mode, *args, **kwargs)

    ConfigLoaderImpl.load_configuration = load_configuration
    try:
        yield memo
    finally:
        ConfigLoaderImpl.load_configuration = original
