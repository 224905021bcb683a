"""The numpy backend: the problem's hand-written gradient, the loop in plain numpy."""

from __future__ import annotations

import math

import numpy as np

from gradtrack.backends.base import BatchPlan, StepRecord
from gradtrack.models.base import Params
from gradtrack.optimizers import OptimizerSpec, apply_update


class NumpyOps:
    """The array namespace the forward passes and optimizers use, in numpy."""

    tanh = staticmethod(np.tanh)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    sum = staticmethod(np.sum)
    mean = staticmethod(np.mean)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def softplus(z):
        return np.logaddexp(0, z)

    @staticmethod
    def reciprocal(a):
        return 1 / a

    @staticmethod
    def matvec(X, w):
        return X @ w


OPS = NumpyOps()
_add_reduce = np.add.reduce


def loss_and_grad(problem, params: Params, X, y, dtype: str = "float64"):
    """Loss and gradient from the problem's hand-written backward pass."""
    cast = {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
    Xc = None if X is None else np.asarray(X, dtype=dtype)
    yc = None if y is None else np.asarray(y, dtype=dtype)
    loss, grads = problem.loss_and_grad(cast, Xc, yc)
    return float(loss), {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}


class NumpyTrainer:
    def __init__(self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype: str, plan):
        self.problem = problem
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.names = list(params0)
        self._p = [np.asarray(params0[k], dtype=self.dtype).copy() for k in self.names]
        self._slots = [[np.zeros_like(p) for p in self._p] for _ in range(spec.n_slots)]
        self.X = None if X is None else np.ascontiguousarray(X, dtype=self.dtype)
        self.y = None if y is None else np.ascontiguousarray(y, dtype=self.dtype)
        self.plan: BatchPlan | None = plan
        self.t = 0

    def _batches(self):
        plan = self.plan
        if self.X is None or plan is None or plan.full:
            yield self.X, self.y
            return
        order, bs = plan.next_order(), plan.batch_size
        for start in range(0, plan.n, bs):
            if order is None:  # slices are views: no copy
                yield self.X[start : start + bs], self.y[start : start + bs]
            else:
                idx = order[start : start + bs]
                yield self.X[idx], self.y[idx]

    def _step(self, Xb, yb) -> tuple[float, float]:
        params = dict(zip(self.names, self._p))
        loss, grads = self.problem.loss_and_grad(params, Xb, yb)
        g = [np.asarray(grads[k], dtype=self.dtype) for k in self.names]
        self.t += 1
        self._p, self._slots = apply_update(OPS, self.spec, self._p, g, self._slots, self.t)
        # Same arithmetic as sqrt(sum(float(np.sum(gi * gi)))): np.sum on an ndarray *is*
        # np.add.reduce(axis=None), and math.sqrt / np.sqrt of a double are both exact
        # IEEE sqrt. Calling them directly skips ~2 µs of Python wrappers per parameter,
        # which is a large share of a step on small data (see benchmarks/).
        sq = 0.0
        for gi in g:
            sq += float(_add_reduce(gi * gi, axis=None))
        return loss, math.sqrt(sq)

    def run(self, n_steps: int) -> StepRecord:
        losses = np.empty(n_steps)
        norms = np.empty(n_steps)
        values = None if self.problem.uses_data else np.empty(n_steps)
        with np.errstate(all="ignore"):  # divergence is detected from the losses
            for i in range(n_steps):
                tot_l = tot_g = 0.0
                k = 0
                for Xb, yb in self._batches():
                    loss, gnorm = self._step(Xb, yb)
                    tot_l += loss
                    tot_g += gnorm
                    k += 1
                losses[i] = tot_l / k
                norms[i] = tot_g / k
                if values is not None:
                    values[i] = self._p[0]
        return StepRecord(losses, norms, values)

    def params(self) -> Params:
        return {k: np.asarray(p, dtype=np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(problem, params0, X, y, spec, dtype="float32", eager=False, plan=None):
    return NumpyTrainer(problem, params0, X, y, spec, dtype, plan)
