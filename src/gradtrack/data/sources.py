"""The upstream raw files gradtrack trains on, with the checksums they must match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    filename: str
    url: str
    sha256: str
    description: str


AUTO_MPG = Source(
    filename="auto-mpg.data",
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/auto-mpg/auto-mpg.data",
    sha256="48b830e11feee5572525f8f1691ddb9d38d3d7b7063edcd8fca672c2a5e17d8d",
    description="UCI Auto MPG (Quinlan 1993), CC BY 4.0",
)
PIMA = Source(
    filename="pima-indians-diabetes.data.csv",
    url="https://raw.githubusercontent.com/jbrownlee/Datasets/master/pima-indians-diabetes.data.csv",
    sha256="6bfe5d0f379d17a0e0819b996407e3c09bf80febd4287f2ed212190dfff154af",
    description="Pima Indians Diabetes (NIDDK via UCI; Smith et al. 1988)",
)
SOURCES = (AUTO_MPG, PIMA)

REGRESSION_COLUMNS = (
    "mpg",
    "cylinders",
    "displacement",
    "horsepower",
    "weight",
    "acceleration",
    "year",
    "origin",
)
CLASSIFICATION_COLUMNS = (
    "No_pregnant",
    "Plasma_glucose",
    "Blood_pres",
    "Skin_thick",
    "Serum_insu",
    "BMI",
    "Diabetes_func",
    "Age",
    "Class",
)


# The CSVs `gradtrack-data` prepares (data/prepare.py) from the raw files above.
PREPARED_CSVS = ("regression.csv", "classification.csv", "nn_data.csv")


def missing_file_hint(path: Path) -> str:
    """What to do about a dataset file that does not exist: make it, when it is one of
    the CSVs `gradtrack-data` prepares; else point dataset.path at the file."""
    if path.name in PREPARED_CSVS:
        return (
            "Run `gradtrack-data` (or `make data`) to fetch and prepare the project's "
            "CSVs, or point dataset.path at an existing file."
        )
    return "Check dataset.path: it must name an existing CSV file."
