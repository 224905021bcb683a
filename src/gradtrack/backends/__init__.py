"""Backends by name, imported lazily: choosing numpy never imports torch or tensorflow."""

from __future__ import annotations

import importlib
import os
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


def prepare_tensorflow() -> None:
    """Settings TensorFlow reads as it starts: call before anything imports it. A user's
    own setting of either wins.

    - ``TF_CPP_MIN_LOG_LEVEL=2`` hides its start-up banner.
    - ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow turns its oneDNN kernels on by default only
      on CPUs with AVX-512 VNNI/BF16 or AMX, and the two kernel sets round float32 sums
      differently. ``seed_logistic_tf``'s 100 losses differed in the last digits at 5
      steps on an AMD EPYC without those features, so ``dvc repro`` there changed a
      committed result. With the kernels on everywhere, that CPU reproduces the committed
      bytes (made on CPUs that have them on by default).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
