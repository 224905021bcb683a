"""What a backend provides, and the pieces every backend shares.

A backend turns a problem's forward loss into gradients (by hand, autograd or
GradientTape) and runs the training loop in its own arrays. It takes and returns
numpy arrays only, so nothing above this layer sees a framework object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
