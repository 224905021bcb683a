"""Fit metrics in plain numpy, one definition each (scikit-learn stays unimported).

Used by the models' summaries and the scikit-learn baseline alike, so a run's r2,
accuracy and baseline/loss_gap compare like with like.
"""

from __future__ import annotations

import numpy as np


def mean_squared_error(y: np.ndarray, z: np.ndarray) -> float:
    """mean((z − y)²)."""
    return float(np.mean((z - y) ** 2))


def r2_score(y: np.ndarray, z: np.ndarray) -> float:
    """1 − SS_res / SS_tot (0 for a constant target)."""
    ss_res = float(np.sum((y - z) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def accuracy(predicted: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose predicted class (0/1) is the target's (> 0.5 is class 1)."""
    return float(np.mean(predicted == (y > 0.5)))
