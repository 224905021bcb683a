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
    """``ConfigLoaderImpl.load_configuration`` (Hydra 1.3's signature), composing a
    single run once."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.kept: tuple[tuple, Any] | None = None  # (request, config) from get_mode
        self.reused = 0

    def __call__(
        self,
        loader,
        config_name,
        overrides,
        run_mode,
        from_shell=True,
        validate_sweep_overrides=True,
    ):
        from hydra.types import RunMode

        request = (config_name, tuple(overrides), from_shell)
        kept, self.kept = self.kept, None
        if run_mode == RunMode.RUN and kept is not None:
            cfg = _taken(kept, request)
            if cfg is not None:
                self.reused += 1
                return cfg
        cfg = self.original(
            loader, config_name, overrides, run_mode, from_shell, validate_sweep_overrides
        )
        if (
            run_mode == RunMode.MULTIRUN
            and not validate_sweep_overrides  # get_mode's request
            and _same_in_run_mode(cfg, overrides)
        ):
            self.kept = (request, cfg)  # get_mode only reads hydra.mode from it
        return cfg


def _taken(kept: tuple[tuple, Any], request: tuple) -> Any:
    """The kept config for a RUN request with the same overrides, plus at most
    ``hydra.mode=RUN`` (applied as Hydra's override applies it); else None."""
    from hydra.types import RunMode

    (name, before, shell), cfg = kept
    config_name, overrides, from_shell = request
    if (config_name, overrides[: len(before)], from_shell) != (name, before, shell):
        return None
    extra = list(overrides[len(before) :])
    if extra == [MODE_RUN] and cfg.hydra.mode is None:
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.overrides.hydra.append(MODE_RUN)
        extra = []
    return cfg if not extra else None


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

    def load_configuration(self, *args, **kwargs):
        return memo(self, *args, **kwargs)

    ConfigLoaderImpl.load_configuration = load_configuration
    try:
        yield memo
    finally:
        ConfigLoaderImpl.load_configuration = original
