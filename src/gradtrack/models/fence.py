"""The fence problem: minimise 750/x + 10x over x > 0 (optimum x = √75 ≈ 8.66).

A rectangle of area 750 with one side costing 10 per unit: the notebook's
"xy = 750, minimise x + 10y" cell.
"""

from __future__ import annotations

import numpy as np

from gradtrack.models import register
from gradtrack.models.base import ScalarProblem


@register
class Fence(ScalarProblem):
    name = "fence"
    minimum = float(np.sqrt(75.0))

    @classmethod
    def config_errors(cls, model) -> list[str]:
        if model.x0 > 0:
            return []
        return [
            f"model.x0: the fence problem 750/x + 10x is defined for x > 0, got {model.x0} "
            "(try model.x0=1)"
        ]

    def loss(self, ops, params, X, y):
        x = params["x"]
        # 750/x written as 750·(1/x): the same operations PyTorch records for 750/x.
        return ops.reciprocal(x) * 750 + x * 10

    def loss_and_grad(self, params, X, y):
        x = params["x"]
        r = 1 / x
        z = r * 750 + x * 10
        # d(750·r)/dr = 750; dr/dx = -r²; d(10x)/dx = 10
        dz_dr = 750
        dr_dx = -(r * r)
        dz_dx = dz_dr * dr_dx + 10
        return z, {"x": dz_dx}

    @staticmethod
    def curve(x: np.ndarray) -> np.ndarray:
        return 750.0 / x + 10.0 * x
