"""The numpy backend: the problem's hand-written gradient, the loop in plain numpy."""

from __future__ import annotations

import math

import numpy as np

from gradtrack.backends import sample_loop
from gradtrack.backends.base import EpochTrainer, StepRecord, Trainer
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


class NumpyTrainer(EpochTrainer):
    """The loop a practitioner would write: parameters updated in place, one call to
    the problem's hand-written gradient per step, nothing rebuilt per step.

    All parameters live in one flat vector (each parameter is a view into it), so the
    optimizer rule and the gradient norm are a handful of array operations per step
    however many parameters there are. Elementwise, the arithmetic is exactly
    :func:`gradtrack.optimizers.apply_update`'s.
    """

    device = "cpu"

    def __init__(self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype: str, plan):
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
        X = None if X is None else np.ascontiguousarray(X, dtype=self.dtype)
        y = None if y is None else np.ascontiguousarray(y, dtype=self.dtype)
        # Per-sample SGD hands a problem that takes rows one row and one scalar target
        # (numpy scalars, not 1-element arrays).
        full = X is None or plan is None or plan.full
        self.rows = bool(not full and plan.batch_size == 1 and getattr(problem, "takes_rows", 0))
        self._setup_loop(problem, X, y, plan)
        # Per-sample SGD of a model with a few scalar parameters: one generated loop
        # on scalars per chunk instead (backends/sample_loop.py), the same bits.
        self.per_sample = sample_loop.applies(problem, self.names, self._p, spec, dtype, plan)
        if self.per_sample:
            self._samples = (problem.sample_inputs(X), y)
            self._epochs = sample_loop.epochs_function(
                problem.sample_loss_and_grad, len(self.names), spec.name
            )
            self._hyper = sample_loop.hyper(spec)

    def _stepper(self):
        # Every lookup hoisted out of the hot loop.
        lg, params, layout, g, update = (
            self.problem.loss_and_grad,
            self._params,
            self._layout,
            self._g,
            self._update,
        )
        sqrt = math.sqrt

        def step(Xb, yb, t):
            loss, grads = lg(params, Xb, yb)
            for k, where in layout:
                g[where] = grads[k]
            update([g], t)
            return loss, sqrt(g @ g)

        return step

    def run(self, n_steps: int) -> StepRecord:
        with np.errstate(all="ignore"):  # divergence is detected from the losses
            if self.per_sample:
                return self._run_samples(n_steps)
            return super().run(n_steps)

    def _run_samples(self, n_steps: int) -> StepRecord:
        """``n_steps`` epochs of per-sample updates in the generated scalar loop."""
        xs, ys = self._samples
        if self.plan.shuffle:  # the general loop's orders, drawn for the whole chunk
            order = self.plan.orders(n_steps)
            XS, TS = xs[order], ys[order]
        else:
            XS, TS = [xs] * n_steps, [ys] * n_steps
        params = [p[()] for p in self._p]  # numpy scalars of the trainer's dtype
        slots = [[s[0][i] for i in range(len(params))] for s in self._slots]
        losses, norms, params, slots, self.t = self._epochs(
            XS, TS, params, slots, self.t, self._hyper
        )
        self._theta[:] = params
        for s, new in zip(self._slots, slots):
            s[0][:] = new
        return StepRecord(self._array(losses), self._array(norms))

    def _value(self):
        return float(self._p[0])

    @staticmethod
    def _mean(xs):
        tot = 0.0  # summed in order, in the loss's own precision
        for x in xs:
            tot += x
        return tot / len(xs)

    @staticmethod
    def _array(xs):
        return np.array(xs, dtype=np.float64)

    def params(self) -> Params:
        return {k: np.asarray(p, dtype=np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(
    problem, params0, X, y, *, spec, dtype="float32", plan=None, eager=False, device="auto"
) -> Trainer:
    """A trainer at ``params0`` (see backends/base.py); ``eager``: TensorFlow only."""
    if device not in ("auto", "cpu"):
        raise ValueError(f"backend=numpy runs on the CPU only; got device={device!r}")
    return NumpyTrainer(problem, params0, X, y, spec, dtype, plan)
