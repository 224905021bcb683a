"""The numpy backend: the problem's hand-written gradient, the loop in plain numpy."""

from __future__ import annotations

import math

import numpy as np

from gradtrack.backends.base import BatchPlan, StepRecord, Trainer
from gradtrack.models.base import NUMPY_OPS, Params
from gradtrack.optimizers import OptimizerSpec, make_inplace_update

# The forward passes and optimizers in numpy use the models' own numpy namespace.
OPS = NUMPY_OPS


def loss_and_grad(problem, params: Params, X, y, dtype: str = "float64"):
    """Loss and gradient from the problem's hand-written backward pass."""
    cast = {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
    Xc = None if X is None else np.asarray(X, dtype=dtype)
    yc = None if y is None else np.asarray(y, dtype=dtype)
    loss, grads = problem.loss_and_grad(cast, Xc, yc)
    return float(loss), {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}


class NumpyTrainer:
    """The loop a practitioner would write: parameters updated in place, one call to
    the problem's hand-written gradient per step, nothing rebuilt per step.

    All parameters live in one flat vector (each parameter is a view into it), so the
    optimizer rule and the gradient norm are a handful of array operations per step
    however many parameters there are. Elementwise, the arithmetic is exactly
    :func:`gradtrack.optimizers.apply_update`'s.
    """

    device = "cpu"

    def __init__(self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype: str, plan):
        self.problem = problem
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.names = list(params0)
        shapes = [np.shape(params0[k]) for k in self.names]
        sizes = [int(np.prod(sh)) for sh in shapes]
        self._theta = np.empty(sum(sizes), dtype=self.dtype)
        self._p, self._layout, off = [], [], 0
        for k, sh, size in zip(self.names, shapes, sizes):
            self._theta[off : off + size] = np.ravel(params0[k])
            self._p.append(self._theta[off : off + size].reshape(sh))
            # Where the gradient goes in the flat buffer: an index for a 0-d one.
            self._layout.append((k, off if sh == () else slice(off, off + size)))
            off += size
        # One dict for the whole run: the arrays in it are updated in place.
        self._params = dict(zip(self.names, self._p))
        self._g = np.empty_like(self._theta)
        self._slots = [[np.zeros_like(self._theta)] for _ in range(spec.n_slots)]
        self._update = make_inplace_update(OPS, spec, [self._theta], self._slots)
        self.X = None if X is None else np.ascontiguousarray(X, dtype=self.dtype)
        self.y = None if y is None else np.ascontiguousarray(y, dtype=self.dtype)
        self.plan: BatchPlan | None = plan
        self.full = self.X is None or plan is None or plan.full
        # Per-sample SGD hands a problem that takes rows one row and one scalar target
        # (numpy scalars, not 1-element arrays).
        self._rows = not self.full and plan.batch_size == 1 and getattr(problem, "takes_rows", 0)
        # Unshuffled minibatches are the same views every epoch: slice them once.
        self._fixed = None
        if not self.full and not plan.shuffle:
            bs = plan.batch_size
            self._fixed = (
                list(zip(self.X, self.y))
                if self._rows
                else [(self.X[s : s + bs], self.y[s : s + bs]) for s in range(0, plan.n, bs)]
            )
        self.t = 0

    def _epoch_batches(self):
        if self._fixed is not None:
            return self._fixed
        order, bs = self.plan.next_order(), self.plan.batch_size
        if self._rows:
            return [(self.X[i], self.y[i]) for i in order]
        rows = (order[s : s + bs] for s in range(0, self.plan.n, bs))
        return [(self.X[idx], self.y[idx]) for idx in rows]

    def run(self, n_steps: int) -> StepRecord:
        losses = np.empty(n_steps)
        norms = np.empty(n_steps)
        values = None if self.problem.uses_data else np.empty(n_steps)
        # Every lookup hoisted out of the hot loop.
        lg, params, layout, g, update = (
            self.problem.loss_and_grad,
            self._params,
            self._layout,
            self._g,
            self._update,
        )
        t, X, y, full = self.t, self.X, self.y, self.full
        with np.errstate(all="ignore"):  # divergence is detected from the losses
            for i in range(n_steps):
                if full:
                    loss, grads = lg(params, X, y)
                    for k, where in layout:
                        g[where] = grads[k]
                    t += 1
                    update([g], t)
                    losses[i] = loss
                    norms[i] = math.sqrt(g @ g)
                else:
                    tot_l = tot_g = 0.0
                    batches = self._epoch_batches()
                    for Xb, yb in batches:
                        loss, grads = lg(params, Xb, yb)
                        for k, where in layout:
                            g[where] = grads[k]
                        t += 1
                        update([g], t)
                        tot_l += loss
                        tot_g += math.sqrt(g @ g)
                    losses[i] = tot_l / len(batches)
                    norms[i] = tot_g / len(batches)
                if values is not None:
                    values[i] = self._p[0]
        self.t = t
        return StepRecord(losses, norms, values)

    def params(self) -> Params:
        return {k: np.asarray(p, dtype=np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(
    problem,
    params0: Params,
    X,
    y,
    *,
    spec: OptimizerSpec,
    dtype: str = "float32",
    plan: BatchPlan | None = None,
    eager: bool = False,
    device: str = "auto",
) -> Trainer:
    """A trainer at ``params0``; ``eager`` matters to TensorFlow only."""
    if device not in ("auto", "cpu"):
        raise ValueError(f"backend=numpy runs on the CPU only; got device={device!r}")
    return NumpyTrainer(problem, params0, X, y, spec, dtype, plan)
