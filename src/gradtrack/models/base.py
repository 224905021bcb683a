"""What every problem provides: parameters, a forward loss, and a hand-written gradient.

The forward ``loss`` is written once against a tiny array namespace (``ops``), so
numpy, PyTorch and TensorFlow evaluate the very same expression; backends differ
only in how they obtain the gradient. ``loss_and_grad`` is the numpy backend's
hand-written backward pass, one line per chain-rule factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Params = dict[str, np.ndarray]


class Ops(Protocol):
    """The few array operations a forward pass may use (``OPS`` in backends/*_backend.py)."""

    def tanh(self, a: Any) -> Any: ...
    def exp(self, a: Any) -> Any: ...
    def log(self, a: Any) -> Any: ...
    def softplus(self, a: Any) -> Any: ...
    def reciprocal(self, a: Any) -> Any: ...
    def mean(self, a: Any) -> Any: ...
    def matvec(self, X: Any, w: Any) -> Any: ...


@dataclass(frozen=True)
class InitSpec:
    """How data-model parameters start (drawn once, in numpy, for every backend)."""

    kind: str = "normal"  # normal | zeros | constant
    scale: float = 1.0
    value: float = 1.0
    x0: float = 0.0


class Problem(Protocol):
    name: str
    # The problem needs a data matrix (False for the scalar functions).
    uses_data: bool

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        """Initial parameters, ordered; scalars are 0-d float64 arrays."""
        ...

    def loss(self, ops: Ops, params: dict[str, Any], X: Any, y: Any) -> Any:
        """The scalar training loss, built from ``ops`` only."""
        ...

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray) -> tuple[Any, Params]:
        """The loss and the hand-written gradient in numpy."""
        ...


def draw_linear_params(n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
    """Weights ``w`` (n_features,) and bias ``b`` for the linear and logistic models."""
    if spec.kind == "zeros":
        w, b = np.zeros(n_features), np.zeros(())
    elif spec.kind == "constant":
        w, b = np.full(n_features, spec.value), np.full((), spec.value)
    else:
        w = rng.standard_normal(n_features) * spec.scale
        b = np.asarray(rng.standard_normal() * spec.scale)
    return {"w": w.astype(np.float64), "b": np.asarray(b, dtype=np.float64)}
