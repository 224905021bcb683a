"""Turn Hydra/OmegaConf composition errors into one-line messages naming key, problem and fix.

Hydra reports a bad command-line override with its own wording, a hint that is often
wrong for a structured schema ("use +optimizer.lrr=0.1") and exit status 1. gradtrack
treats these like every other input error: a readable message and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from gradtrack.config import Config

# Config groups with a folder of options under conf/ (model=linear, backend=torch, ...).
GROUPS = ("dataset", "model", "backend", "optimizer", "tracking", "experiment")


def _node(path: list[str]) -> Any | None:
    """The schema dataclass at ``path`` (["optimizer"] → OptimizerConfig), or None."""
    node: Any = Config
    for part in path:
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
    return node if dataclasses.is_dataclass(node) else None


def _type_name(path: list[str]) -> str | None:
    parent = _node(path[:-1])
    if parent is None:
        return None
    hint = typing.get_type_hints(parent).get(path[-1])
    if hint is None:
        return None
    text = getattr(hint, "__name__", None) or str(hint)
    if str(hint).startswith("list"):
        return f"a list, e.g. {'.'.join(path)}=[a,b] (or [] for none)"
    return {"float": "a number", "int": "a whole number", "bool": "true or false"}.get(
        text, str(hint).replace("typing.", "")
    )


# Keys that changed name, old → new: the old spelling gets a pointer, not a "did you mean".
# ``steps`` always counted epochs (with batch_size=1, 200 "steps" were 3,000 updates).
RENAMED = {"steps": "epochs", "progress_min_steps": "progress_min_epochs"}


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _plugin_options(group: str, options: list[str]) -> str:
    """``basic (hydra), optuna (gradtrack), ray_cluster (conf/)``: where each option comes from.

    Options registered in Hydra's ConfigStore (by Hydra or by a plugin found in the
    ``hydra_plugins`` namespace) carry their provider; the rest are files on the
    config search path.
    """
    from hydra.core.config_store import ConfigStore

    node: Any = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    out = []
    for name in options:
        provider = getattr(node.get(f"{name}.yaml"), "provider", None) if node else None
        out.append(f"{name} ({provider or 'conf/'})")
    return ", ".join(out)


def explain(exc: BaseException) -> str | None:
    """A user-facing message for a composition error, or None if ``exc`` is not one."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(exc, MissingConfigException):
        missing = exc.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        options = list(exc.options or [])
        if group.startswith("hydra/") and options:
            return (
                f"{group}={option}: there is no {group} option {option!r}. Installed "
                f"options: {_plugin_options(group, options)}.{_did_you_mean(option, options)} "
                f"(from Hydra, its plugins (pip packages such as hydra-joblib-launcher) and "
                f"files in conf/{group}/)"
            )
        if group and options:
            return (
                f"{group}={option}: there is no {group} option {option!r}. Available options in "
                f"'{group}': "
                f"{', '.join(options)}.{_did_you_mean(option, options)} "
                f"(each is a file in conf/{group}/)"
            )
        return f"{str(exc).splitlines()[0].rstrip('.')}. Check the config name on the command line."
    if isinstance(exc, OverrideParseException):
        return (
            f"could not parse a command-line override ({str(exc).splitlines()[0]}). "
            "Write overrides as key=value, lists as key=[a,b]; quote values with spaces."
        )
    if not isinstance(exc, ConfigCompositionException):
        return None
    cause = exc.__cause__
    key = getattr(cause, "full_key", None) or ""
    path = key.split(".") if key else []
    if key == "experiment" or str(exc).startswith("Could not override 'experiment'"):
        return "experiment: pick a named experiment with a plus sign: +experiment=<name>."
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and path:
        parent = _node(path[:-1])
        where = ".".join(path[:-1]) or "the top level"
        if parent is None:
            return f"{key}: unknown key. Check the spelling against conf/."
        if key in RENAMED:
            new = RENAMED[key]
            return (
                f"{key}: renamed to {new}; write {new}=N instead (it counts passes over the data)."
            )
        valid = [f.name for f in dataclasses.fields(parent)]
        if not path[:-1]:
            valid = sorted(set(valid) | {g for g in GROUPS if g != "experiment"})
        return (
            f"{key}: unknown key in {where}.{_did_you_mean(path[-1], valid)} "
            f"Valid keys: {', '.join(valid)}."
        )
    if isinstance(cause, ValidationError) and path:
        first = str(cause).splitlines()[0]
        want = _type_name(path)
        hint = f" {key} takes {want}." if want else ""
        return f"{key}: invalid value ({first}).{hint} Fix it on the command line."
    return f"{str(exc).splitlines()[0].rstrip('.')}. Check the overrides on the command line."
