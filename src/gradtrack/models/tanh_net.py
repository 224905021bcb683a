"""The notebook's two-weight tanh network, with its forward-pass bug fixed.

    z1 = w1·x,  a1 = tanh(z1),  z2 = w2·a1 + b,  y = tanh(z2),  C = ½(y − t)²

The notebook's ``forward`` computed ``z2 = w1·a1 + b`` (w1 where w2 belongs), so
w2 never influenced a prediction while its gradient was still applied.
"""

from __future__ import annotations

import numpy as np

from gradtrack.models import register
from gradtrack.models.base import InitSpec, Params, Summary

_sum = np.add.reduce  # np.sum without its Python wrapper (per-sample steps are tiny)


def _total(a):
    """Sum over the batch; a single row's value is its own sum."""
    return _sum(a) if a.ndim else a


@register
class TanhNet:
    name = "tanh_net"
    kind = "regression"
    uses_data = True

    def init_params(self, n_features: int, spec: InitSpec, rng: np.random.Generator) -> Params:
        if spec.kind == "zeros":
            vals = [0.0, 0.0, 0.0]
        elif spec.kind == "constant":  # the notebook starts at w1 = w2 = b = 1
            vals = [spec.value] * 3
        else:
            vals = list(rng.standard_normal(3) * spec.scale)
        return {k: np.asarray(v, dtype=np.float64) for k, v in zip(("w1", "w2", "b"), vals)}

    def loss(self, ops, params, X, y):
        x = X[:, 0]
        z1 = params["w1"] * x
        a1 = ops.tanh(z1)
        z2 = params["w2"] * a1 + params["b"]
        out = ops.tanh(z2)
        d = out - y
        return ops.mean(d * d * 0.5)

    # loss_and_grad also takes a single row (X of shape (d,), y a scalar): per-sample
    # SGD then computes on numpy scalars, several times faster than on 1-row arrays
    # and bit-identical to them.
    takes_rows = True

    def loss_and_grad(self, params, X, y):
        x = X[..., 0]  # (n,) for a batch, 0-d for one row
        n = x.size
        z1 = params["w1"] * x
        a1 = np.tanh(z1)
        z2 = params["w2"] * a1 + params["b"]
        out = np.tanh(z2)
        d = out - y
        loss = _total(d * d * 0.5) / n
        dC_dout = d / n  # ½(y−t)² averaged over the batch
        dout_dz2 = 1 - out * out  # tanh' = 1 − tanh²
        dC_dz2 = dC_dout * dout_dz2
        dz2_da1 = params["w2"]
        da1_dz1 = 1 - a1 * a1
        dC_dz1 = dC_dz2 * dz2_da1 * da1_dz1
        return loss, {
            "w1": _total(dC_dz1 * x),  # dz1/dw1 = x
            "w2": _total(dC_dz2 * a1),  # dz2/dw2 = a1
            "b": _total(dC_dz2),  # dz2/db = 1
        }

    # Per-sample SGD (batch_size=1) hands one row's input and target as scalars (see
    # backends/sample_loop.py): numpy runs sample_loss_and_grad, loss_and_grad's
    # operations on that row, in one generated loop; PyTorch differentiates
    # sample_loss, loss's. Same operations in the same order (a mean or a division
    # over one row is exact), so the same bits as 1-row batches.
    sample_params = ("w1", "w2", "b")

    @staticmethod
    def sample_inputs(X):
        return X[:, 0]

    @staticmethod
    def sample_loss(ops, w1, w2, b, x, y):
        out = ops.tanh(w2 * ops.tanh(w1 * x) + b)
        d = out - y
        return d * d * 0.5

    @staticmethod
    def sample_loss_and_grad(w1, w2, b, x, y, tanh=np.tanh):
        a1 = tanh(w1 * x)
        out = tanh(w2 * a1 + b)
        d = out - y
        dC_dz2 = d * (1 - out * out)
        dC_dz1 = dC_dz2 * w2 * (1 - a1 * a1)
        return d * d * 0.5, dC_dz1 * x, dC_dz2 * a1, dC_dz2

    def summarise(self, params, values, ds) -> Summary:
        return Summary()  # final_loss says it all
