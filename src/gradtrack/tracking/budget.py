"""The per-step metric budget: which steps of a run's curves go to the tracking store.

A run of any length stores at most ``max_points`` points per per-step metric, so
the store grows by a bounded amount per run while the training loop's cost grows
with the work. The steps are chosen once, before training, from the run's length:

* every candidate step (every ``log_every``-th step, and the last one) while they fit;
* past the budget, half the points log-spaced (dense at the start, where a loss
  typically falls by orders of magnitude) and half evenly spaced (the long tail),
  topped up with more log-spaced points until the budget is used.

The first and the last step are always kept, the steps are the true step numbers,
and the choice depends only on (steps, max_points, log_every): two runs of the same
length are thinned identically and can be compared point for point. numpy only.
"""

from __future__ import annotations

import numpy as np


def kept_steps(total: int, max_points: int, every: int = 1) -> np.ndarray:
    """Sorted step indices (0-based, int64) to store for a run of ``total`` steps.

    Cost depends on ``max_points`` only, never on ``total`` (a 1e9-step run is fine).
    """
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    every = max(1, int(every))
    # Candidates are every ``every``-th step plus the last; work on their positions.
    n = -(-total // every) + (1 if (total - 1) % every else 0)

    def steps(positions: np.ndarray) -> np.ndarray:
        return np.minimum(positions.astype(np.int64) * every, total - 1)

    if max_points <= 0 or n <= max_points:
        return steps(np.arange(n))
    budget = max(2, int(max_points))
    even = np.unique(np.round(np.linspace(0, n - 1, budget - budget // 2)).astype(np.int64))

    def union(n_log: int) -> np.ndarray:
        log = np.round(np.geomspace(1, n, max(n_log, 2))).astype(np.int64) - 1
        return np.union1d(even, log)

    # The largest number of log-spaced points whose union with the even ones fits.
    lo, hi = budget // 2, budget // 2
    while len(union(hi)) < budget and hi < 16 * budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(union(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    best = union(hi) if len(union(hi)) <= budget else union(lo)
    return steps(best)


class StepSelector:
    """Picks, chunk by chunk, the kept steps that fall in ``[start, start + n)``."""

    def __init__(self, total: int, max_points: int, every: int = 1):
        self.steps = kept_steps(total, max_points, every)

    def __len__(self) -> int:
        return len(self.steps)

    def in_chunk(self, start: int, n: int) -> np.ndarray:
        """Kept step numbers within the chunk (absolute, sorted)."""
        lo, hi = np.searchsorted(self.steps, [start, start + n])
        return self.steps[lo:hi]
