"""Turn the raw upstream files into the CSVs the notebook reads, and make nn_data.csv."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from gradtrack.data.sources import AUTO_MPG, CLASSIFICATION_COLUMNS, PIMA, REGRESSION_COLUMNS

NN_DATA_SEED = 20211223  # fixed: nn_data.csv is the same file on every machine
NN_DATA_ROWS = 15


def prepare_regression(raw: Path, out: Path) -> int:
    """auto-mpg.data (whitespace, '?' = missing, quoted car name) → regression.csv.

    Returns the number of rows written; missing horsepower stays an empty cell.
    """
    lines = raw.read_text().splitlines()
    numeric = "\n".join(line.split("\t")[0] for line in lines if line.strip())
    df = pd.read_csv(
        io.StringIO(numeric),
        sep=r"\s+",
        header=None,
        names=list(REGRESSION_COLUMNS),
        na_values="?",
        dtype=float,
    )
    _write(df, out)
    return len(df)


def prepare_classification(raw: Path, out: Path) -> int:
    """pima-indians-diabetes.data.csv (no header) → classification.csv with the notebook's header."""
    df = pd.read_csv(raw, header=None, names=list(CLASSIFICATION_COLUMNS))
    _write(df, out)
    return len(df)


def make_nn_data(out: Path, seed: int = NN_DATA_SEED, rows: int = NN_DATA_ROWS) -> None:
    """The toy x,y set for the tanh net: a saturating curve with noise, |y| up to ~130.

    Targets are deliberately unscaled, like the notebook's, so a tanh output (|y| < 1)
    cannot fit them until the dataset scales them (dataset.target_scale).
    """
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-2.0, 2.0, rows), 4)
    y = np.round(110.0 * np.tanh(1.2 * x) + rng.normal(0.0, 8.0, rows), 2)
    _write(pd.DataFrame({"x": x, "y": y}), out)


def _write(df: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)


def prepare_all(raw_dir: Path, data_dir: Path) -> dict[str, Path]:
    outputs = {
        "regression": data_dir / "regression.csv",
        "classification": data_dir / "classification.csv",
        "nn_data": data_dir / "nn_data.csv",
    }
    prepare_regression(raw_dir / AUTO_MPG.filename, outputs["regression"])
    prepare_classification(raw_dir / PIMA.filename, outputs["classification"])
    make_nn_data(outputs["nn_data"])
    return outputs
