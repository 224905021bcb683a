"""Linear regression with mean squared error.

The notebook computed the residual as ``y - XW + b``: the bias enters with the
wrong sign, so it learned −b. Here the prediction is ``Xw + b`` and the residual
``(Xw + b) − y``.
"""

from __future__ import annotations

import numpy as np

from gradtrack.models import register
from gradtrack.models.base import LinearPredictor
from gradtrack.models.metrics import mean_squared_error, r2_score

_sum = np.add.reduce


@register
class Linear(LinearPredictor):
    name = "linear"
    kind = "regression"

    def loss(self, ops, params, X, y):
        r = ops.matvec(X, params["w"]) + params["b"] - y
        return ops.mean(r * r)

    def loss_and_grad(self, params, X, y):
        n = X.shape[0]
        r = X @ params["w"] + params["b"] - y
        loss = (r @ r) / n  # mean(r²), as one dot product
        dL_dr = r * (2 / n)  # d mean(r²)/dr
        # dr/dw = X, dr/db = 1 (np.add.reduce: np.sum without its Python wrapper)
        return loss, {"w": X.T @ dL_dr, "b": _sum(dL_dr)}

    def metrics(self, z, y):
        # The MSE is final_loss in original units: the baseline's loss, not logged.
        return {"r2": r2_score(y, z)}, mean_squared_error(y, z)
