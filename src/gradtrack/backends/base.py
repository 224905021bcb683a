"""What a backend provides, and the pieces every backend shares.

A backend turns a problem's forward loss into gradients (by hand, autograd or
GradientTape) and runs the training loop in its own arrays. It takes and returns
numpy arrays only, so nothing above this layer sees a framework object.

Every backend's ``make_trainer`` returns a :class:`Trainer`. The numpy and PyTorch
trainers are :class:`EpochTrainer`: one epoch loop (batches from a
:class:`BatchPlan`, the step count, per-epoch means, the chunk's record) around a
backend's ``step`` function. TensorFlow compiles its whole chunk into one graph
instead (tensorflow_backend._ChunkLoop), behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gradtrack.models.base import Params


@dataclass
class StepRecord:
    """What a chunk of training steps produced, one entry per step (epoch)."""

    losses: np.ndarray  # loss before each step's update (mean over batches)
    grad_norms: np.ndarray  # global gradient norm (mean over batches)
    # Scalar problems only: the parameter value after each step.
    values: np.ndarray | None = None


class Trainer(Protocol):
    device: str  # where it trains: "cpu" or "cuda" (what device=auto chose)

    def run(self, n_steps: int) -> StepRecord:
        """Advance ``n_steps`` epochs and report each one."""
        ...

    def params(self) -> Params:
        """Current parameters as float64 numpy arrays."""
        ...


class BatchPlan:
    """Which rows each minibatch of each epoch uses.

    Full batch (``batch_size`` 0 or >= n) never indexes, so the data is not copied.
    Unshuffled minibatches are slices (views); shuffled ones draw one permutation
    per epoch from a generator seeded by the run's seed, identical on every backend.
    """

    def __init__(self, n_rows: int, batch_size: int, shuffle: bool, seed: int):
        self.n = n_rows
        self.full = batch_size <= 0 or batch_size >= n_rows
        self.batch_size = n_rows if self.full else batch_size
        self.shuffle = shuffle and not self.full
        self._rng = np.random.default_rng([seed, 1])  # independent of the init stream

    @property
    def n_batches(self) -> int:
        return -(-self.n // self.batch_size)

    def next_order(self) -> np.ndarray | None:
        """Row order for the next epoch (None: sequential)."""
        return self._rng.permutation(self.n) if self.shuffle else None

    def orders(self, n_epochs: int) -> np.ndarray:
        """Row orders for the next ``n_epochs`` epochs as one (n_epochs, n) int array."""
        rows = [self.next_order() for _ in range(n_epochs)]
        if rows and rows[0] is None:
            return np.tile(np.arange(self.n, dtype=np.int64), (n_epochs, 1))
        return np.stack(rows) if rows else np.zeros((0, self.n), dtype=np.int64)


# One update: (X batch, y batch, 1-based step count) -> (loss, gradient norm).
Step = Callable[[Any, Any, int], tuple[Any, Any]]


class EpochTrainer(Trainer):
    """The epoch loop the numpy and PyTorch trainers share.

    Each step of an epoch calls the backend's ``step`` function, built once per
    chunk by :meth:`_stepper` with every lookup bound: the loop adds a call per
    update and nothing else. A backend also says how to read the scalar parameter
    (:meth:`_value`), average an epoch's batches (:meth:`_mean`), turn a chunk's
    values into a float64 array (:meth:`_array`) and index rows (:meth:`_order`).
    """

    # Per-sample SGD hands ``step`` one row (or what the problem's ``sample_inputs``
    # makes of it) and one target instead of 1-row batches; the backend says when.
    rows = False

    def _setup_loop(self, problem, X, y, plan: BatchPlan | None) -> None:
        """Data in the backend's arrays; unshuffled batches sliced once for the run."""
        self.problem = problem
        self.X, self.y, self.plan = X, y, plan
        self.full = X is None or plan is None or plan.full
        self._fixed = None
        if not self.full and not plan.shuffle:  # the same views every epoch
            bs = plan.batch_size
            self._fixed = (
                list(zip(X, y))
                if self.rows
                else [(X[s : s + bs], y[s : s + bs]) for s in range(0, plan.n, bs)]
            )
        self.t = 0

    def _epoch_batches(self) -> list:
        if self._fixed is not None:
            return self._fixed
        order, bs, X, y = self._order(self.plan.next_order()), self.plan.batch_size, self.X, self.y
        if self.rows:
            return list(zip(X[order], y[order]))
        return [(X[idx], y[idx]) for idx in (order[s : s + bs] for s in range(0, self.plan.n, bs))]

    def run(self, n_steps: int) -> StepRecord:
        step, mean = self._stepper(), self._mean
        value = None if self.problem.uses_data else self._value
        losses, norms, values = [], [], []
        t, X, y, full = self.t, self.X, self.y, self.full
        for _ in range(n_steps):
            if full:
                t += 1
                loss, gnorm = step(X, y, t)
            else:
                ls, gs = [], []
                for Xb, yb in self._epoch_batches():
                    t += 1
                    loss, gnorm = step(Xb, yb, t)
                    ls.append(loss)
                    gs.append(gnorm)
                loss, gnorm = mean(ls), mean(gs)
            losses.append(loss)
            norms.append(gnorm)
            if value is not None:
                values.append(value())
        self.t = t
        array = self._array
        return StepRecord(array(losses), array(norms), array(values) if value else None)

    def _stepper(self) -> Step:
        raise NotImplementedError

    def _value(self) -> Any:
        """The scalar problem's parameter now (a copy)."""
        raise NotImplementedError

    @staticmethod
    def _mean(xs: list) -> Any:
        """An epoch's mean loss or gradient norm over its batches."""
        raise NotImplementedError

    @staticmethod
    def _array(xs: list) -> np.ndarray:
        raise NotImplementedError

    def _order(self, order: np.ndarray) -> Any:
        """The epoch's row order as the backend indexes with it."""
        return order
