"""The upstream raw files gradtrack trains on, with the checksums they must match."""

from __future__ import annotations

from dataclasses import dataclass


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
