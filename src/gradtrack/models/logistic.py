"""Logistic regression with log-loss.

The default ("stable") form is mean(softplus(z) − y·z), which equals
−[y·log p + (1−y)·log(1−p)] with p = σ(z) but never takes log(0) or overflows
exp. ``loss_form=notebook`` selects the notebook's −[y·log(p+tol) + (1−y)·log(1−p+tol)].
"""

from __future__ import annotations

import numpy as np

from gradtrack.models.base import InitSpec, Params, draw_linear_params

_sum = np.add.reduce


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow: exp(−softplus(−z))."""
    return np.exp(-np.logaddexp(0.0, -z))


class Logistic:
    name = "logistic"
    uses_data = True

    def __init__(self, loss_form: str = "stable", tol: float = 1e-10):
        self.loss_form = loss_form
        self.tol = tol

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        return draw_linear_params(n_features, spec, rng)

    def loss(self, ops, params, X, y):
        z = ops.matvec(X, params["w"]) + params["b"]
        if self.loss_form == "notebook":
            p = ops.reciprocal(ops.exp(-z) + 1)
            tol = self.tol
            return -ops.mean(y * ops.log(p + tol) + (1 - y) * ops.log(1 - p + tol))
        return ops.mean(ops.softplus(z) - y * z)

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
            sp = np.logaddexp(0.0, z)  # softplus(z)
            loss = _sum(sp - y * z) / n
            # softplus' = σ(z) = exp(z − softplus(z)): reuses sp, never overflows
            dL_dz = (np.exp(z - sp) - y) / n
        # dz/dw = X, dz/db = 1 (np.add.reduce: np.sum without its Python wrapper)
        return loss, {"w": X.T @ dL_dz, "b": _sum(dL_dz)}

    @staticmethod
    def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
        return sigmoid(X @ params["w"] + params["b"])
