"""f(x) = x² + 4x, minimised at x = -2 (the notebook's PyTorch and TensorFlow cells)."""

from __future__ import annotations

import numpy as np

from gradtrack.models import register
from gradtrack.models.base import ScalarProblem


@register
class Quadratic(ScalarProblem):
    name = "quadratic"
    minimum = -2.0

    def loss(self, ops, params, X, y):
        x = params["x"]
        # x·x is recorded before 4x and added second: with this order PyTorch and
        # TensorFlow both accumulate the gradient as (x + 4) + x, the float32
        # rounding the notebook's traces show. (x + x) + 4 drifts by one ulp.
        square = x * x
        linear = 4 * x
        return linear + square

    def loss_and_grad(self, params, X, y):
        x = params["x"]
        z = 4 * x + x * x
        # d(4x)/dx = 4 and d(x·x)/dx = x (first factor) + x (second factor),
        # accumulated in autograd's order.
        dz_dx = (x + 4) + x
        return z, {"x": dz_dx}

    @staticmethod
    def curve(x: np.ndarray) -> np.ndarray:
        return x * x + 4 * x
