"""The TensorFlow backend: gradients from ``tf.GradientTape``.

By default a whole chunk of epochs runs inside one ``tf.function`` (a graph
``while`` loop), so Python dispatch is paid once per chunk instead of once per
operation; ``backend.eager=true`` runs the same code eagerly for debugging.
"""

from __future__ import annotations

import time
from typing import Any

from gradtrack.backends import prepare_tensorflow

prepare_tensorflow()  # before the import: its log level and kernels

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gradtrack.backends.base import BatchPlan, StepRecord, Trainer  # noqa: E402
from gradtrack.models.base import Params  # noqa: E402
from gradtrack.optimizers import Hyper, OptimizerSpec, update_steps  # noqa: E402

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


# Compiled chunk loops shared by every trainer in the process (a Hydra sweep with the
# basic launcher runs its jobs here one after another), keyed by everything that
# shapes the graph. Hyperparameters, the chunk length, the data, the parameters and
# the optimizer state are all inputs, so a cache hit computes exactly what a fresh
# trace would.
_LOOPS: dict[tuple, Any] = {}
_TRACES = 0


def trace_count() -> int:
    """How many times a chunk loop has been traced in this process."""
    return _TRACES


def clear_cache() -> None:
    """Forget every compiled loop (the next run traces afresh)."""
    _LOOPS.clear()


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when TensorFlow sees a GPU, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend.device={device!r}: valid: auto, cpu, cuda")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise ValueError("backend.device=cuda: TensorFlow sees no GPU; use auto or cpu")
    return "cuda" if device != "cpu" and gpus else "cpu"


_TF_DEVICE = {"cpu": "/CPU:0", "cuda": "/GPU:0"}


def _problem_key(problem) -> tuple:
    # The forward pass is Python traced into the graph: its class and settings
    # (e.g. the logistic loss form and tol) decide the graph.
    return (type(problem), tuple(sorted(vars(problem).items())))


class _ChunkLoop:
    """``n_steps`` epochs of one problem and optimizer kind, as one graph-able function.

    The parameters, the optimizer state and the step count live in the trainer's
    ``tf.Variable``s, updated in place as a hand-written TF loop would: a chunk neither
    carries them through the graph's while loop nor copies them in and out. The
    variables are arguments, not captures, so one trace serves every trainer of the
    same shapes. Everything else that changes between runs or chunks (chunk length,
    data, hyperparameters) comes in as a tensor too.
    """

    def __init__(self, problem, spec: OptimizerSpec, names, plan, batched: bool):
        self.problem, self.spec, self.names = problem, spec, list(names)
        self.batched = batched
        self.bs = plan.batch_size if batched else 0
        self.n = plan.n if batched else 0
        self.n_batches = plan.n_batches if batched else 1
        self.shuffle = batched and plan.shuffle

    def __call__(self, n_steps, orders, X, y, params, slots, t, hyper):
        global _TRACES
        if not tf.executing_eagerly():  # this Python runs once per trace
            _TRACES += 1
        # A tensor the loop body takes from outside is a loop input, passed on every
        # iteration; unstacking the numbers in the body is one op per step. Measured:
        # in the body for momentum and Adam (2 and 6 numbers), outside for sgd (lr).
        if self.spec.name == "sgd" and self.spec.clip_norm <= 0:
            outer = Hyper.from_list(tf.unstack(hyper))
            hp = lambda: outer  # noqa: E731
        else:
            hp = lambda: Hyper.from_list(tf.unstack(hyper))  # noqa: E731
        f64 = tf.float64
        zero = tf.constant(0.0, f64)
        scalar = not self.problem.uses_data
        even = self.batched and not self.shuffle and self.n % self.bs == 0
        if even:  # sequential equal batches: one gather per batch, no index arithmetic
            Xs = tf.reshape(X, [self.n_batches, self.bs, *X.shape[1:]])
            ys = tf.reshape(y, [self.n_batches, self.bs, *y.shape[1:]])
        # The step count before this chunk; step k of the chunk (0-based) is t0 + k + 1,
        # exact in either float dtype (it is a whole number).
        t0 = t.read_value()

        def step_t(k):
            # Only Adam reads the step count: other rules build no op for it.
            return t0 + tf.cast(k + 1, t0.dtype) if self.spec.name == "adam" else None

        def batch(i, b, tot_l, tot_g):
            if even:
                Xb, yb = tf.gather(Xs, b), tf.gather(ys, b)
            else:
                lo, hi = b * self.bs, tf.minimum((b + 1) * self.bs, self.n)
                if self.shuffle:
                    idx = orders[i, lo:hi]
                    Xb, yb = tf.gather(X, idx), tf.gather(y, idx)
                else:  # sequential rows: a slice, no gather
                    Xb, yb = X[lo:hi], y[lo:hi]
            loss, gnorm = self._step(Xb, yb, params, slots, step_t(i * self.n_batches + b), hp())
            return i, b + 1, tot_l + loss, tot_g + gnorm

        def epoch(i, losses, norms, *values):
            if self.batched:
                _, _, tot_l, tot_g = tf.while_loop(
                    lambda i, b, *_: b < self.n_batches,
                    batch,
                    (i, tf.constant(0), zero, zero),
                )
                k = tf.constant(float(self.n_batches), f64)
                loss, gnorm = tot_l / k, tot_g / k
            else:
                loss, gnorm = self._step(X, y, params, slots, step_t(i), hp())
            losses = losses.write(i, loss)
            norms = norms.write(i, gnorm)
            if scalar:
                value = tf.cast(tf.reshape(params[0], [-1])[0], f64)
                return i + 1, losses, norms, values[0].write(i, value)
            return i + 1, losses, norms

        # Explicit while loops, no AutoGraph: converting this Python on every first
        # trace cost more than the trace itself.
        ta = lambda: tf.TensorArray(f64, size=n_steps, element_shape=[])  # noqa: E731
        init = (tf.constant(0), ta(), ta(), *([ta()] if scalar else []))
        _, losses, norms, *values = tf.while_loop(lambda i, *_: i < n_steps, epoch, init)
        t.assign_add(tf.cast(n_steps * self.n_batches, t.dtype))
        out_values = values[0].stack() if scalar else tf.zeros([0], f64)
        return losses.stack(), norms.stack(), out_values

    def _step(self, Xb, yb, params, slots, t, hp):
        # The variables themselves go into the loss: the tape watches them (trainable)
        # and each use reads the current value, as in a hand-written loop.
        with tf.GradientTape() as tape:
            loss = self.problem.loss(OPS, dict(zip(self.names, params)), Xb, yb)
        grads = tape.gradient(loss, params)
        # One op per parameter (a scalar's square needs no reduction).
        sq = [g * g if g.shape.rank == 0 else tf.reduce_sum(g * g) for g in grads]
        gnorm = tf.sqrt(tf.add_n(sq))
        # The shared rule, in place: p.assign_sub(step) rounds exactly like p - step.
        steps, new_slots = update_steps(OPS, self.spec, grads, slots, t, hp)
        for group, values in zip(slots, new_slots):
            for var, value in zip(group, values):
                var.assign(value)
        for var, step in zip(params, steps):
            var.assign_sub(step)
        return tf.cast(loss, tf.float64), tf.cast(gnorm, tf.float64)


def _compiled_loop(problem, spec, names, plan, batched, dtype, X, y, params, slots, t, device):
    """The process-wide compiled loop for this graph, traced on first use only."""
    key = (
        _problem_key(problem),
        spec.name,
        spec.clip_norm > 0,
        dtype.name,
        batched,
        (plan.batch_size, plan.n_batches, plan.shuffle) if batched else None,
        tuple(X.shape),
        tuple(y.shape),
        tuple((k, tuple(p.shape)) for k, p in zip(names, params)),
        len(slots),
        device,
    )
    fn = _LOOPS.get(key)
    if fn is None:
        spec_of = lambda a: tf.TensorSpec(a.shape, dtype)  # noqa: E731
        signature = [
            tf.TensorSpec([], tf.int32),  # chunk length: a new n never retraces
            tf.TensorSpec([None, None], tf.int32),  # row orders for the chunk
            spec_of(X),
            spec_of(y),
            params,  # variables: traced by shape and dtype, passed by reference
            slots,
            t,
            tf.TensorSpec([len(Hyper.__dataclass_fields__)], dtype),
        ]
        loop = _ChunkLoop(problem, spec, names, plan, batched)
        fn = _LOOPS[key] = _Compiled(tf.function(loop, autograph=False), signature)
    return fn


class _Compiled:
    """A cached loop, traced on its first call (inside the run, as a plain loop's would
    be), then called as its concrete function: that skips tf.function's per-call
    signature matching, which cost about a millisecond per chunk."""

    def __init__(self, fn, signature):
        self.fn, self.signature = fn, signature
        self.concrete = None
        # The cost of one step in the latest call that did not trace (set by the trainer).
        self.seconds_per_step: float | None = None

    def __call__(self, *args):
        if self.concrete is None:
            self.concrete = self.fn.get_concrete_function(*self.signature)
            self.signature = None  # holds the first trainer's variables
        return self.concrete(*args)


class TensorFlowTrainer(Trainer):
    """The chunk of epochs as one compiled graph (or eagerly, for debugging)."""

    def __init__(
        self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype, plan, eager, device="auto"
    ):
        self.problem = problem
        self.spec = spec
        self.dtype = tf.as_dtype(dtype)
        self.names = list(params0)
        self.device = resolve_device(device)  # "cpu" or "cuda": the run's device tag
        self._tf_device = _TF_DEVICE[self.device]
        self.batched = not (X is None or plan is None or plan.full)
        self.plan: BatchPlan | None = plan
        with tf.device(self._tf_device):
            # The state a chunk updates in place (see _ChunkLoop).
            self._p = [
                tf.Variable(np.asarray(params0[k]), dtype=self.dtype, name=k) for k in self.names
            ]
            self._slots = [
                [tf.Variable(tf.zeros_like(p)) for p in self._p] for _ in range(spec.n_slots)
            ]
            self._t = tf.Variable(0.0, dtype=self.dtype, trainable=False)
            empty = tf.zeros((0,), dtype=self.dtype)
            self.X = empty if X is None else tf.constant(X, dtype=self.dtype)
            self.y = empty if y is None else tf.constant(y, dtype=self.dtype)
            self._hyper = tf.constant(
                np.array(Hyper.of(spec).as_list(), dtype=self.dtype.as_numpy_dtype)
            )
            self._no_orders = tf.zeros((0, 0), dtype=tf.int32)
        if eager:
            self._loop = _ChunkLoop(problem, spec, self.names, plan, self.batched)
        else:
            self._loop = _compiled_loop(
                problem,
                spec,
                self.names,
                plan,
                self.batched,
                self.dtype,
                self.X,
                self.y,
                self._p,
                self._slots,
                self._t,
                self.device,
            )

    @property
    def seconds_per_step(self) -> float | None:
        """What one step of this compiled loop cost in its latest call in this process
        (any trainer of the same graph; None before a call that did not trace, and when
        eager). train.run sizes its first chunk from it instead of probing."""
        return getattr(self._loop, "seconds_per_step", None)

    def run(self, n_steps: int) -> StepRecord:
        start = time.perf_counter()
        traced = getattr(self._loop, "concrete", None) is not None  # False: eager or tracing
        with tf.device(self._tf_device):
            if self.batched and self.plan.shuffle:
                orders = tf.constant(self.plan.orders(n_steps), dtype=tf.int32)
            else:
                orders = self._no_orders
            losses, norms, values = self._loop(
                tf.constant(n_steps, dtype=tf.int32),
                orders,
                self.X,
                self.y,
                self._p,
                self._slots,
                self._t,
                self._hyper,
            )
        rec = StepRecord(
            losses.numpy(),
            norms.numpy(),
            None if self.problem.uses_data else values.numpy(),
        )
        if traced and n_steps > 0:
            self._loop.seconds_per_step = (time.perf_counter() - start) / n_steps
        return rec

    def params(self) -> Params:
        return {k: p.numpy().astype(np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(
    problem, params0, X, y, *, spec, dtype="float32", plan=None, eager=False, device="auto"
) -> Trainer:
    """A trainer at ``params0`` (see backends/base.py); ``eager``: TensorFlow only."""
    return TensorFlowTrainer(problem, params0, X, y, spec, dtype, plan, eager, device)
