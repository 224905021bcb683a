"""What every problem provides: parameters, a forward loss, a hand-written gradient,
and what it reports when training ends.

The forward ``loss`` is written once against a tiny array namespace (``ops``), so
numpy, PyTorch and TensorFlow evaluate the very same expression; backends differ
only in how they obtain the gradient. ``loss_and_grad`` is the numpy backend's
hand-written backward pass, one line per chain-rule factor. ``summarise`` turns the
learned parameters into the run's model metrics (r2, accuracy, final_x, ...) and,
for linear predictors, coefficients in original feature units.

A problem's ``kind`` says what data it trains on: ``scalar`` (none), ``regression``
or ``classification`` (a dataset of that task). The config checks derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from gradtrack.data.load import Dataset

Params = dict[str, np.ndarray]
KINDS = ("scalar", "regression", "classification")


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


class NumpyOps:
    """The array namespace in numpy: the numpy backend's, and the one metrics use."""

    tanh, exp, log, sqrt, sum, mean, maximum = map(
        staticmethod, (np.tanh, np.exp, np.log, np.sqrt, np.sum, np.mean, np.maximum)
    )

    @staticmethod
    def softplus(z):
        return np.logaddexp(0, z)

    @staticmethod
    def reciprocal(a):
        return 1 / a

    @staticmethod
    def matvec(X, w):
        return X @ w


NUMPY_OPS = NumpyOps()


@dataclass
class Summary:
    """What a problem reports about its learned parameters."""

    metrics: dict[str, float] = field(default_factory=dict)
    coef: np.ndarray | None = None  # linear predictors: original feature units
    intercept: float | None = None
    # The model's loss at (coef, intercept) on the raw rows: compared with the
    # scikit-learn baseline's loss (baseline/loss_gap).
    raw_loss: float | None = None


class Problem(Protocol):
    name: ClassVar[str]
    kind: ClassVar[str]  # one of KINDS
    # The problem needs a data matrix (False for the scalar functions).
    uses_data: ClassVar[bool]

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        """Initial parameters, ordered; scalars are 0-d float64 arrays."""
        ...

    def loss(self, ops: Ops, params: dict[str, Any], X: Any, y: Any) -> Any:
        """The scalar training loss, built from ``ops`` only."""
        ...

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray) -> tuple[Any, Params]:
        """The loss and the hand-written gradient in numpy."""
        ...

    def summarise(self, params: Params, values: np.ndarray | None, ds: Dataset) -> Summary:
        """Model metrics (and coefficients) from the learned ``params`` and the data.

        ``values`` holds x after each step for scalar problems (None otherwise). A
        problem may also define ``config_errors(model_config) -> list[str]`` for
        settings only it can judge (the config check calls it), and, when its
        parameters are a few scalars, the per-sample members that
        backends/sample_loop.py describes (per-sample SGD on scalars).
        """
        ...


class ScalarProblem:
    """A function of one number ``x`` minimised from ``model.x0``; no data."""

    kind = "scalar"
    uses_data = False
    minimum: float

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        return {"x": np.asarray(spec.x0, dtype=np.float64)}

    def summarise(self, params, values, ds) -> Summary:
        return Summary({"final_x": float(values[-1])})


class LinearPredictor:
    """z = Xw + b on the features: weights ``w`` (n_features,) and bias ``b``.

    Reports its coefficients in original units (standardization and target scale
    undone), which the run logs as an MLflow model and checks against scikit-learn.
    Subclasses say which metrics ``metrics(z, y)`` the fit earns.
    """

    uses_data = True

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        return draw_linear_params(n_features, spec, rng)

    @staticmethod
    def decision(params: Params, X: np.ndarray) -> np.ndarray:
        """Xw + b."""
        return X @ params["w"] + params["b"]

    def summarise(self, params, values, ds) -> Summary:
        from gradtrack.data.load import to_original_units

        coef, intercept = to_original_units(ds, params["w"], float(params["b"]))
        z = self.decision({"w": coef, "b": intercept}, ds.X_raw)
        metrics, raw_loss = self.metrics(z, ds.y_raw)
        return Summary(metrics, coef, intercept, raw_loss)

    def metrics(self, z: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], float]:
        """(metrics, loss) of the original-units decision values ``z`` against ``y``."""
        raise NotImplementedError


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
