"""Validate a CSV before training: every problem names the file, the column, the lines and the fix.

Line numbers are the file's own (the header is line 1), so a user can jump to them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from gradtrack.errors import DataError

_BOM = b"\xef\xbb\xbf"


def _lines(index: pd.Index, limit: int = 5) -> str:
    """Data-row indices as file line numbers ("lines 3, 9 and 2 more")."""
    nums = [str(int(i) + 2) for i in index[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"line{'s' if len(index) > 1 else ''} {', '.join(nums)}{more}"


def read_table(path: Path) -> pd.DataFrame:
    """Read a numeric CSV with a header, refusing anything ambiguous."""
    if not path.exists():
        raise DataError(
            f"{path}: file not found. Run `gradtrack-data` (or `make data`) to create the "
            "project's CSVs, or point dataset.path at an existing file."
        )
    if path.is_dir():
        raise DataError(f"{path}: is a directory; dataset.path must name a CSV file.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(
            f"{path}: the file is empty ({len(raw)} bytes); expected a CSV with a header "
            "row. Re-create it with `gradtrack-data`."
        )
    # A UTF-8 byte-order mark (Excel adds one) is harmless: strip it rather than
    # letting it glue itself to the first column's name.
    text = raw[len(_BOM) :].decode("utf-8") if raw.startswith(_BOM) else raw.decode("utf-8")
    header = next(csv.reader(io.StringIO(text)))
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(
            f"{path}: duplicated column name(s) {', '.join(map(repr, dupes))} in the "
            "header; every column needs a unique name."
        )
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path}: not a well-formed CSV ({exc}). A decimal comma ('1,5') splits a "
            "value into two fields: use a decimal point."
        ) from exc
    if df.empty:
        raise DataError(f"{path}: has a header but no data rows.")
    return df


def to_numeric(df: pd.DataFrame, path: Path, dropna: bool) -> tuple[pd.DataFrame, int]:
    """Convert every column to float; returns the frame and how many rows were dropped."""
    out = {}
    blank_rows = pd.Series(False, index=df.index)
    for col in df.columns:
        text = df[col].str.strip()
        is_blank = text.isin(["", "nan", "NaN", "NA", "?"])
        values = pd.to_numeric(text.where(~is_blank), errors="coerce")
        bad = values.isna() & ~is_blank
        if bad.any():
            examples = ", ".join(repr(v) for v in df[col][bad].head(3))
            raise DataError(
                f"{path}: column {col!r} has non-numeric values ({examples}) at "
                f"{_lines(df.index[bad])}. Use plain numbers with a decimal point."
            )
        infinite = np.isinf(values)
        if infinite.any():
            raise DataError(
                f"{path}: column {col!r} has infinite or out-of-range values "
                f"({', '.join(repr(v) for v in df[col][infinite].head(3))}) at "
                f"{_lines(df.index[infinite])}; values must be finite floats."
            )
        blank_rows |= is_blank
        out[col] = values.astype(float)
    num = pd.DataFrame(out, index=df.index)
    if blank_rows.any():
        if not dropna:
            cols = [c for c in df.columns if num[c].isna().any()]
            raise DataError(
                f"{path}: blank or NaN cells in column(s) {', '.join(map(repr, cols))} at "
                f"{_lines(df.index[blank_rows])}. Fill them, or set dataset.dropna=true "
                "to drop incomplete rows."
            )
        num = num[~blank_rows]
    return num, int(blank_rows.sum())


def check_columns(df: pd.DataFrame, path: Path, features: list[str], target: str | None) -> None:
    available = ", ".join(df.columns)
    for key, cols in (
        ("dataset.features", features),
        ("dataset.target", [target] if target else []),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(
                f"{path}: {key} names column(s) {', '.join(map(repr, missing))} that the "
                f"file does not have; available columns: {available}."
            )


def check_binary_target(y: np.ndarray, path: Path, target: str, index: pd.Index) -> None:
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        vals = ", ".join(repr(v) for v in np.unique(y[bad])[:3])
        raise DataError(
            f"{path}: column {target!r} must hold class labels 0 or 1; found {vals} at "
            f"{_lines(index[bad])}."
        )
    if np.unique(y).size < 2:
        raise DataError(
            f"{path}: column {target!r} holds only class {int(y[0])}; logistic regression "
            "needs both classes 0 and 1 present."
        )
