"""The problems (model + loss), found by name. Only numpy is imported here.

The registry is the one list of models: every module in this package that
decorates a class with :func:`register` adds it, and :func:`register` also takes a
class from anywhere else. The config's valid ``model.name`` values and the
model/dataset rules come from it, so a new model is one module here plus one
``conf/model/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil

from gradtrack.models.base import KINDS, InitSpec, Ops, Params, Problem, Summary

# Modules of this package that hold no model.
_NOT_MODELS = {"base", "metrics"}
_REGISTRY: dict[str, type] = {}
_discovered = False


def register(cls: type) -> type:
    """Add a problem class under its ``name`` (a class decorator). Returns ``cls``."""
    name, kind = getattr(cls, "name", None), getattr(cls, "kind", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__}: a model class needs a name")
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if (kind == "scalar") == bool(getattr(cls, "uses_data", kind != "scalar")):
        raise ValueError(f"model {name!r}: uses_data must be {kind != 'scalar'} for kind {kind}")
    known = _REGISTRY.get(name)
    if known is not None and known is not cls:
        raise ValueError(
            f"model {name!r} is registered twice ({known.__module__}, {cls.__module__})"
        )
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        for info in pkgutil.iter_modules(__path__):
            if info.name not in _NOT_MODELS:
                importlib.import_module(f"{__name__}.{info.name}")
        _discovered = True


def model_names() -> tuple[str, ...]:
    """Every registered model name, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def model_class(name: str) -> type:
    """The problem class called ``name``; an unknown name lists the valid ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(model_names())}") from None


def get_problem(name: str, loss_form: str = "stable", tol: float = 1e-10) -> Problem:
    """The problem called ``name``, with the model options it takes (``options``)."""
    cls = model_class(name)
    given = {"loss_form": loss_form, "tol": tol}
    return cls(**{k: given[k] for k in getattr(cls, "options", ())})


__all__ = [
    "InitSpec",
    "Ops",
    "Params",
    "Problem",
    "Summary",
    "get_problem",
    "model_class",
    "model_names",
    "register",
]
