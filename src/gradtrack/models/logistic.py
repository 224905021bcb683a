"""Logistic regression with log-loss.

The default ("stable") form is mean(softplus(z) − y·z), which equals
−[y·log p + (1−y)·log(1−p)] with p = σ(z) but never takes log(0) or overflows
exp. ``loss_form=notebook`` selects the notebook's −[y·log(p+tol) + (1−y)·log(1−p+tol)].
"""

from __future__ import annotations

import numpy as np

from gradtrack.models import register
from gradtrack.models.base import NUMPY_OPS, LinearPredictor
from gradtrack.models.metrics import accuracy

_sum = np.add.reduce


def log_loss(ops, z, y):
    """mean(softplus(z) − y·z): the log-loss of decision values ``z`` for 0/1 targets ``y``.

    The forward pass, the run's metrics and the scikit-learn baseline all use this.
    """
    return ops.mean(ops.softplus(z) - y * z)


@register
class Logistic(LinearPredictor):
    name = "logistic"
    kind = "classification"
    options = ("loss_form", "tol")

    def __init__(self, loss_form: str = "stable", tol: float = 1e-10):
        self.loss_form = loss_form
        self.tol = tol

    def loss(self, ops, params, X, y):
        z = ops.matvec(X, params["w"]) + params["b"]
        if self.loss_form == "notebook":
            p = ops.reciprocal(ops.exp(-z) + 1)
            tol = self.tol
            return -ops.mean(y * ops.log(p + tol) + (1 - y) * ops.log(1 - p + tol))
        return log_loss(ops, z, y)

    def loss_and_grad(self, params, X, y):
        n = X.shape[0]
        z = X @ params["w"] + params["b"]
        if self.loss_form == "notebook":
            p = 1 / (np.exp(-z) + 1)
            tol = self.tol
            loss = -np.mean(y * np.log(p + tol) + (1 - y) * np.log(1 - p + tol))
            dL_dp = -(y / (p + tol) - (1 - y) / (1 - p + tol)) / n
            dp_dz = p * (1 - p)
            dL_dz = dL_dp * dp_dz
        else:
            # log_loss written out: the gradient below reuses softplus(z)
            sp = np.logaddexp(0.0, z)
            loss = _sum(sp - y * z) / n
            # softplus' = σ(z) = exp(z − softplus(z)): reuses sp, never overflows
            dL_dz = (np.exp(z - sp) - y) / n
        # dz/dw = X, dz/db = 1 (np.add.reduce: np.sum without its Python wrapper)
        return loss, {"w": X.T @ dL_dz, "b": _sum(dL_dz)}

    def metrics(self, z, y):
        # The stable log-loss whatever loss_form trained: the baseline's loss.
        # Class 1 where σ(z) > ½, i.e. z > 0.
        return {"accuracy": accuracy(z > 0, y)}, float(log_loss(NUMPY_OPS, z, y))
