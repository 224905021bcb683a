"""The TensorFlow backend: gradients from ``tf.GradientTape``.

By default a whole chunk of epochs runs inside one ``tf.function`` (a graph
``while`` loop), so Python dispatch is paid once per chunk instead of once per
operation; ``backend.eager=true`` runs the same code eagerly for debugging.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TF's start-up banner

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gradtrack.backends.base import BatchPlan, StepRecord  # noqa: E402
from gradtrack.models.base import Params  # noqa: E402
from gradtrack.optimizers import OptimizerSpec, apply_update  # noqa: E402

# Grappler's arithmetic rewrites reassociate sums (e.g. (x + 4) + x into 2x + 4),
# which changes float32 rounding: compiled and eager runs, and the other backends,
# would no longer produce bit-identical traces. The graphs are tiny; nothing is lost.
tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


class TFOps:
    tanh = staticmethod(tf.tanh)
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    sqrt = staticmethod(tf.sqrt)
    sum = staticmethod(tf.reduce_sum)
    mean = staticmethod(tf.reduce_mean)
    reciprocal = staticmethod(tf.math.reciprocal)
    softplus = staticmethod(tf.math.softplus)

    @staticmethod
    def maximum(a, b):
        return tf.maximum(a, tf.cast(b, a.dtype))

    @staticmethod
    def matvec(X, w):
        return tf.linalg.matvec(X, w)


OPS = TFOps()


def loss_and_grad(problem, params: Params, X, y, dtype: str = "float64"):
    """Loss and gradient from GradientTape at ``params``."""
    tv = {k: tf.Variable(np.asarray(v), dtype=dtype) for k, v in params.items()}
    Xt = None if X is None else tf.constant(X, dtype=dtype)
    yt = None if y is None else tf.constant(y, dtype=dtype)
    with tf.GradientTape() as tape:
        loss = problem.loss(OPS, tv, Xt, yt)
    grads = tape.gradient(loss, list(tv.values()))
    return float(loss.numpy()), {k: g.numpy().astype(np.float64) for k, g in zip(tv, grads)}


class TensorFlowTrainer:
    def __init__(self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype, plan, eager):
        self.problem = problem
        self.spec = spec
        self.dtype = tf.as_dtype(dtype)
        self.names = list(params0)
        self._p = [tf.Variable(np.asarray(params0[k]), dtype=self.dtype) for k in self.names]
        self._slots = [
            [tf.Variable(tf.zeros_like(p)) for p in self._p] for _ in range(spec.n_slots)
        ]
        self._t = tf.Variable(0.0, dtype=self.dtype)
        self.X = None if X is None else tf.constant(X, dtype=self.dtype)
        self.y = None if y is None else tf.constant(y, dtype=self.dtype)
        self.plan: BatchPlan | None = plan
        self.batched = not (self.X is None or plan is None or plan.full)
        self._loop = self._run_loop if eager else tf.function(self._run_loop, reduce_retracing=True)

    def _step(self, Xb, yb):
        params = dict(zip(self.names, self._p))
        with tf.GradientTape() as tape:
            loss = self.problem.loss(OPS, params, Xb, yb)
        grads = tape.gradient(loss, self._p)
        self._t.assign_add(1.0)
        gnorm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
        slots = [[s.read_value() for s in group] for group in self._slots]
        new, slots = apply_update(OPS, self.spec, self._p, grads, slots, self._t)
        for p, v in zip(self._p, new):
            p.assign(v)
        for group, values in zip(self._slots, slots):
            for s, v in zip(group, values):
                s.assign(v)
        return tf.cast(loss, tf.float64), tf.cast(gnorm, tf.float64)

    def _run_loop(self, n_steps, orders):
        losses = tf.TensorArray(tf.float64, size=n_steps)
        norms = tf.TensorArray(tf.float64, size=n_steps)
        values = tf.TensorArray(tf.float64, size=n_steps)
        for i in tf.range(n_steps):
            if self.batched:
                bs, n = self.plan.batch_size, self.plan.n
                tot_l = tf.constant(0.0, tf.float64)
                tot_g = tf.constant(0.0, tf.float64)
                for b in tf.range(self.plan.n_batches):
                    idx = orders[i, b * bs : tf.minimum((b + 1) * bs, n)]
                    loss, gnorm = self._step(tf.gather(self.X, idx), tf.gather(self.y, idx))
                    tot_l += loss
                    tot_g += gnorm
                k = tf.cast(self.plan.n_batches, tf.float64)
                loss, gnorm = tot_l / k, tot_g / k
            else:
                loss, gnorm = self._step(self.X, self.y)
            losses = losses.write(i, loss)
            norms = norms.write(i, gnorm)
            values = values.write(i, tf.cast(tf.reshape(self._p[0], [-1])[0], tf.float64))
        return losses.stack(), norms.stack(), values.stack()

    def run(self, n_steps: int) -> StepRecord:
        if self.batched:
            orders = tf.constant(self.plan.orders(n_steps), dtype=tf.int32)
        else:
            orders = tf.zeros((0, 0), dtype=tf.int32)
        losses, norms, values = self._loop(tf.constant(n_steps), orders)
        return StepRecord(
            losses.numpy(),
            norms.numpy(),
            None if self.problem.uses_data else values.numpy(),
        )

    def params(self) -> Params:
        return {k: p.numpy().astype(np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(problem, params0, X, y, spec, dtype="float32", eager=False, plan=None):
    return TensorFlowTrainer(problem, params0, X, y, spec, dtype, plan, eager)
