"""Load a configured dataset into plain numpy arrays (validated, optionally standardized).

pandas (about 0.2 s to import) is imported only when there is a table to read or build:
a scalar problem (``dataset=none``) never loads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gradtrack.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Dataset:
    """Training arrays plus what is needed to report results in original units."""

    name: str
    X: np.ndarray | None = None  # training features (standardized when configured)
    y: np.ndarray | None = None  # training target (divided by target_scale)
    X_raw: np.ndarray | None = None  # features in original units
    y_raw: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)
    target: str | None = None
    mean: np.ndarray | None = None  # standardization: X = (X_raw - mean) / scale
    scale: np.ndarray | None = None
    target_scale: float = 1.0
    n_dropped: int = 0
    path: Path | None = None
    digest: str | None = None  # sha256 of the file (or of the generated arrays)

    @property
    def frame(self) -> pd.DataFrame | None:
        """The rows used, in original units (features then target).

        Built on demand over ``X_raw``, so a large file is not held twice.
        """
        if self.X_raw is None:
            return None
        import pandas as pd

        frame = pd.DataFrame(self.X_raw, columns=self.feature_names, copy=False)
        frame[self.target] = self.y_raw
        return frame

    @property
    def n_rows(self) -> int:
        return 0 if self.X is None else int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return 0 if self.X is None else int(self.X.shape[1])


def _standardize(
    X: np.ndarray, names: list[str], path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Column by column: numpy's whole-matrix std holds a full-size temporary.
    mean = np.array([X[:, j].mean() for j in range(X.shape[1])])
    scale = np.array([X[:, j].std() for j in range(X.shape[1])])
    const = [n for n, s in zip(names, scale) if s == 0]
    if const:
        raise DataError(
            f"{path}: feature(s) {', '.join(map(repr, const))} are constant and cannot be "
            "standardized; drop them from dataset.features or set dataset.standardize=false."
        )
    Z = X - mean
    Z /= scale
    return Z, mean, scale


def _matrix(num: pd.DataFrame, columns: list[str], keep: np.ndarray | None) -> np.ndarray:
    """The chosen columns as one C-ordered float64 matrix, without intermediate copies."""
    n = len(num) if keep is None else int(keep.sum())
    out = np.empty((n, len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        values = num[col].to_numpy(dtype=np.float64)
        out[:, j] = values if keep is None else values[keep]
    return out


def synthetic(n_samples: int, n_features: int, noise: float, seed: int) -> pd.DataFrame:
    """A linear-regression table y = X·w + 0.5 + noise, generated from ``seed``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    w = rng.standard_normal(n_features)
    y = X @ w + 0.5 + noise * rng.standard_normal(n_samples)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(n_features)])
    df["y"] = y
    return df


def load_dataset(dcfg, path: Path | None, task: str) -> Dataset:
    """Read, validate and shape the configured dataset. ``dcfg`` is the dataset config."""
    if dcfg.name == "none":
        return Dataset(name="none")
    from gradtrack.data.schema import check_binary_target, incomplete_rows, read_table

    if dcfg.name == "synthetic":
        df = synthetic(dcfg.n_samples, dcfg.n_features, dcfg.noise, dcfg.seed)
        target = "y"
        n_dropped = 0
        digest = hashlib.sha256(
            f"synthetic:{dcfg.n_samples}:{dcfg.n_features}:{dcfg.noise}:{dcfg.seed}".encode()
        ).hexdigest()
        keep, index = None, df.index
    else:
        if path is None:
            raise DataError(f"dataset={dcfg.name}: dataset.path is not set.")
        target = dcfg.target
        labels = target if task == "classification" else None
        df, digest = read_table(path, list(dcfg.features), target, labels)
        dropped = incomplete_rows(df, path, dcfg.dropna)
        n_dropped = int(dropped.sum())
        if n_dropped == len(df):
            raise DataError(
                f"{path}: no rows left after dropping {n_dropped} incomplete one(s) "
                "(dataset.dropna=true); fill the blank cells."
            )
        keep = ~dropped if n_dropped else None
        index = df.index if keep is None else df.index[keep]
    features = list(dcfg.features) or [c for c in df.columns if c != target]
    X_raw = _matrix(df, features, keep)
    y_raw = _matrix(df, [target], keep)[:, 0]
    del df  # the matrix is all that is kept: memory stays in proportion to the data
    if task == "classification":
        check_binary_target(y_raw, path, target, index)
    X = X_raw
    mean = scale = None
    if dcfg.standardize:
        X, mean, scale = _standardize(X_raw, features, path)
    return Dataset(
        name=dcfg.name,
        X=X,
        y=y_raw if dcfg.target_scale == 1 else y_raw / dcfg.target_scale,
        X_raw=X_raw,
        y_raw=y_raw,
        feature_names=features,
        target=target,
        mean=mean,
        scale=scale,
        target_scale=float(dcfg.target_scale),
        n_dropped=n_dropped,
        path=path,
        digest=digest,
    )


def to_original_units(ds: Dataset, w: np.ndarray, b: float) -> tuple[np.ndarray, float]:
    """Map coefficients learned on standardized features (and scaled target) back.

    With x_std = (x − μ)/σ:  w·x_std + b = (w/σ)·x + (b − Σ w·μ/σ).
    """
    w = np.asarray(w, dtype=np.float64)
    b = float(b)
    if ds.scale is not None:
        coef = w / ds.scale
        b = b - float(np.sum(w * ds.mean / ds.scale))
        w = coef
    return w * ds.target_scale, b * ds.target_scale
