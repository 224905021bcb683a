"""Backends by name, imported lazily: choosing numpy never imports torch or tensorflow."""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "numpy": "gradtrack.backends.numpy_backend",
    "torch": "gradtrack.backends.torch_backend",
    "tensorflow": "gradtrack.backends.tensorflow_backend",
}


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (make_trainer, loss_and_grad)."""
    try:
        return importlib.import_module(_MODULES[name])
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(_MODULES)}") from None


BACKEND_NAMES = tuple(_MODULES)
