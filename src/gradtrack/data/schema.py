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
    """Row labels (the file's own line numbers) as text ("lines 3, 9 and 2 more")."""
    nums = [str(int(i)) for i in index[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"line{'s' if len(index) > 1 else ''} {', '.join(nums)}{more}"


def _decode(path: Path, raw: bytes) -> str:
    # A UTF-8 byte-order mark (Excel adds one) is harmless: strip it rather than
    # letting it glue itself to the first column's name.
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (undecodable byte at line {line}). Save the file as UTF-8 CSV."
        ) from exc


def read_table(path: Path) -> pd.DataFrame:
    """Read a numeric CSV with a header, refusing anything ambiguous.

    Cells stay text (converted by :func:`to_numeric`); the index holds each row's
    line number in the file (the header is line 1) so errors can point at it.
    """
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
    text = _decode(path, raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader)]
        rows, lines, ragged = [], [], []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                ragged.append((reader.line_num, len(fields)))
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: not a well-formed CSV ({exc}).") from exc
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(
            f"{path}: duplicated column name(s) {', '.join(map(repr, dupes))} in the "
            "header; every column needs a unique name."
        )
    if ragged:
        first_line, n = ragged[0]
        raise DataError(
            f"{path}: {_lines(pd.Index([r[0] for r in ragged]))} "
            f"{'have' if len(ragged) > 1 else 'has'} {n} fields but the header has "
            f"{len(header)} ({', '.join(header)}). A decimal comma (1,5) splits a value "
            "into two fields: use a decimal point (1.5)."
        )
    if not rows:
        raise DataError(
            f"{path}: has a header but no data rows. Add data rows, or re-create the "
            "file with `gradtrack-data`."
        )
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines), dtype=str)


def _as_float(text: str) -> float:
    if "_" in text:  # Python accepts 1_000; a CSV reader should not
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return float("nan")


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
            # pandas gives NaN for numbers beyond float range ("1e400"); Python's float
            # reads them as ±inf, which the finiteness check below then reports.
            values[bad] = [_as_float(v) for v in text[bad]]
            bad = values.isna() & ~is_blank
        if bad.any():
            examples = ", ".join(repr(v) for v in df[col][bad].head(3))
            raise DataError(
                f"{path}: column {col!r} has non-numeric values ({examples}) at "
                f"{_lines(df.index[bad])}. Use plain numbers with a decimal point (1.5, "
                "not 1,5)."
            )
        infinite = np.isinf(values)
        if infinite.any():
            raise DataError(
                f"{path}: column {col!r} has infinite or out-of-range values "
                f"({', '.join(repr(v) for v in df[col][infinite].head(3))}) at "
                f"{_lines(df.index[infinite])}; values must be finite numbers; fix or remove those rows."
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
            f"{_lines(index[bad])}. Recode the labels as 0/1, or use model=linear for a "
            "numeric target."
        )
    if np.unique(y).size < 2:
        raise DataError(
            f"{path}: column {target!r} holds only class {int(y[0])}; logistic regression "
            "needs both classes 0 and 1 present; add rows of the other class."
        )
