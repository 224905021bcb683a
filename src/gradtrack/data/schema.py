"""Validate a CSV before training: every problem names the file, the column, the lines and the fix.

Line numbers are the file's own (the header is line 1), so a user can jump to them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gradtrack.data.fastpath import NA_VALUES, read_plain
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


def _header_problems(path: Path, header: list[str]) -> None:
    """A header that names one column per field, once each."""
    for sep, name in ((";", "semicolon (;)"), ("\t", "tab")):
        if any(sep in c for c in header):
            shown = header[0] if len(header) == 1 else ", ".join(header)
            raise DataError(
                f"{path}: the header {shown[:120]!r} looks {name}-delimited; gradtrack "
                "reads comma-separated files (delimiter ','). Re-save it as CSV with "
                "commas (Excel: 'CSV UTF-8 (Comma delimited)'; pandas: "
                "df.to_csv(path, index=False)), with a decimal point in numbers."
            )
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if dupes:
        raise DataError(
            f"{path}: duplicated column name(s) {', '.join(map(repr, dupes))} in the "
            "header; every column needs a unique name."
        )


def _ragged(path: Path, header: list[str], ragged: list[tuple[int, int, str]]) -> DataError:
    first_line, n, last = ragged[0]
    where = f"{_lines(pd.Index([r[0] for r in ragged]))} {'have' if len(ragged) > 1 else 'has'}"
    if all(k == len(header) + 1 and not tail.strip() for _, k, tail in ragged):
        return DataError(
            f"{path}: {where} {n} fields but the header has {len(header)} "
            f"({', '.join(header)}): the line ends with a comma (a trailing comma), which "
            "makes an extra empty column. Remove the trailing comma from each line."
        )
    return DataError(
        f"{path}: {where} {n} fields but the header has {len(header)} "
        f"({', '.join(header)}). A decimal comma (1,5) splits a value into two fields: "
        "use a decimal point (1.5)."
    )


def read_header(path: Path) -> list[str]:
    """The header's column names (stripped), after the file-level checks."""
    if not path.exists():
        from gradtrack.data.sources import missing_file_hint

        raise DataError(f"{path}: file not found. {missing_file_hint(path)}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; dataset.path must name a CSV file.")
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    size = path.stat().st_size
    if size <= len(head) and not head.strip():
        raise DataError(
            f"{path}: the file is empty ({size} bytes); expected a CSV with a header "
            "row. Re-create it with `gradtrack-data`."
        )
    cut = head.find(b"\n")
    first = head if cut < 0 else head[: cut + 1]
    if b'"' in first or (cut < 0 and size > len(head)):
        return []  # a quoted or very long header: the careful reader handles it
    text = _decode(path, first)
    header = [c.strip() for c in next(csv.reader(io.StringIO(text, newline="")), [])]
    _header_problems(path, header)
    return header


def read_text(path: Path) -> pd.DataFrame:
    """Read a CSV with a header as text cells, refusing anything ambiguous.

    Cells stay text (converted by :func:`to_numeric`); the index holds each row's
    line number in the file (the header is line 1) so errors can point at it.
    """
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(
            f"{path}: the file is empty ({len(raw)} bytes); expected a CSV with a header "
            "row. Re-create it with `gradtrack-data`."
        )
    text = _decode(path, raw)
    del raw
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader)]
        _header_problems(path, header)
        rows, lines, ragged = [], [], []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                ragged.append((reader.line_num, len(fields), fields[-1]))
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: not a well-formed CSV ({exc}).") from exc
    if ragged:
        raise _ragged(path, header, ragged)
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


def _plain(v: float) -> str:
    """A number as a person writes it: 2 not 2.0 or np.float64(2.0)."""
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _label_fix(target: str, found: list[str]) -> str:
    """How to recode labels to 0/1, using the values actually found."""
    maps = (
        ["{" + ", ".join(f"{v}: {i}" for i, v in enumerate(found)) + "}"]
        if len(found) == 2
        else ["{'no': 0, 'yes': 1}", "{1: 0, 2: 1}"]
    )
    return (
        f"Labels must be 0/1: recode the column first, e.g. in pandas "
        f"df[{target!r}] = df[{target!r}].map({' or .map('.join(m + ')' for m in maps)}, "
        "then df.to_csv(path, index=False); or use model=linear for a numeric target."
    )


def to_numeric(df: pd.DataFrame, path: Path, labels: str | None = None) -> pd.DataFrame:
    """Convert every column to float64; blank cells become NaN.

    ``labels`` names the class-label column of a classification dataset: text there
    (yes/no) is explained as a labelling problem, not a number format one.
    """
    out = {}
    for col in df.columns:
        text = df[col].str.strip()
        is_blank = text.isin(NA_VALUES)
        values = pd.to_numeric(text.where(~is_blank), errors="coerce")
        bad = values.isna() & ~is_blank
        if bad.any():
            # pandas gives NaN for numbers beyond float range ("1e400"); Python's float
            # reads them as ±inf, which the finiteness check below then reports.
            values[bad] = [_as_float(v) for v in text[bad]]
            bad = values.isna() & ~is_blank
        if bad.any() and col == labels:
            found = sorted(set(text[~is_blank]), key=lambda v: (v not in ("0", "no"), v))
            shown = [repr(v) for v in found[:5]]
            raise DataError(
                f"{path}: column {col!r} holds the class labels {', '.join(shown)}"
                f"{' …' if len(found) > 5 else ''} (e.g. at {_lines(df.index[bad])}). "
                + _label_fix(col, shown if len(found) == 2 else [])
            )
        if bad.any():
            examples = ", ".join(repr(v) for v in df[col][bad].head(3))
            raise DataError(
                f"{path}: {_column(col, df.columns)} has non-numeric values ({examples}) at "
                f"{_lines(df.index[bad])}. Use plain numbers with a decimal point (1.5, "
                "not 1,5)."
            )
        infinite = np.isinf(values)
        if infinite.any():
            raise DataError(
                f"{path}: {_column(col, df.columns)} has infinite or out-of-range values "
                f"({', '.join(repr(v) for v in df[col][infinite].head(3))}) at "
                f"{_lines(df.index[infinite])}; values must be finite numbers; fix or remove those rows."
            )
        out[col] = values.astype(np.float64)
        df = df.drop(columns=col)  # free the text as soon as it is converted
    return pd.DataFrame(out, index=df.index)


def incomplete_rows(num: pd.DataFrame, path: Path, dropna: bool) -> np.ndarray:
    """Rows with a blank cell (a boolean mask): refused, or allowed when ``dropna``."""
    blank_rows = num.isna().any(axis=1).to_numpy()
    if blank_rows.any() and not dropna:
        cols = [c for c in num.columns if num[c].isna().any()]
        raise DataError(
            f"{path}: blank or NaN cells in column(s) {', '.join(map(repr, cols))} at "
            f"{_lines(num.index[blank_rows])}. Fill them, or set dataset.dropna=true "
            "to drop incomplete rows."
        )
    return blank_rows


UNNAMED = re.compile(r"Unnamed: \d+")


def _column(col: str, columns) -> str:
    """How to name a column in a message, including one with no name."""
    if col == "" or UNNAMED.fullmatch(col):
        pos = list(columns).index(col) + 1
        return f"column {pos} ({'no name' if col == '' else repr(col)})"
    return f"column {col!r}"


def unnamed_columns(num: pd.DataFrame, path: Path, features: list[str]) -> pd.DataFrame:
    """Drop a saved row index (unnamed, 0..n-1) with a note; refuse any other unnamed column.

    pandas writes its index as an unnamed first column (read back as "Unnamed: 0");
    a comma at the end of every line makes an empty, unnamed last column. Neither
    may ever be trained on as a feature without the user knowing.
    """
    unnamed = [c for c in num.columns if (c == "" or UNNAMED.fullmatch(c)) and c not in features]
    n = len(num)
    for col in unnamed:
        values = num[col].to_numpy()
        where = _column(col, num.columns)
        if np.array_equal(values, np.arange(n, dtype=np.float64)):
            print(
                f"gradtrack: note: {path}: dropped {where}: it holds the row numbers "
                f"0..{n - 1} (a saved pandas index), not data. Save with "
                "df.to_csv(path, index=False) to avoid this note.",
                file=sys.stderr,
            )
            num = num.drop(columns=col)
        elif np.isnan(values).all():
            last = col == num.columns[-1]
            cause = (
                "every line ends with a comma (a trailing comma)"
                if last
                else "two commas with nothing between them on every line"
            )
            raise DataError(
                f"{path}: {where} has no name and no values: {cause}. Remove the "
                f"{'trailing ' if last else 'extra '}comma from each line (header "
                "included), or give the column a name and values."
            )
        else:
            raise DataError(
                f"{path}: {where} has no name in the header, so it is not clear what "
                "it holds; gradtrack will not train on it. Give it a name in the header "
                "(or list the features in dataset.features), or remove it; a pandas "
                "index is saved by df.to_csv(path) unless index=False is passed."
            )
    return num


def read_table(path: Path, features: list[str], target: str | None, labels: str | None):
    """The file as a float64 frame (NaN = blank), its sha256, after every check.

    Plain files take pandas' C parser (:mod:`gradtrack.data.fastpath`); anything
    else, the careful text reader, which names the line of any problem.
    """
    header = read_header(path)
    num, digest = (None, None)
    if header:
        check_columns(header, path, features, target)
        num, digest = read_plain(path, header)
    if num is None:
        text = read_text(path)
        check_columns(list(text.columns), path, features, target)
        num = to_numeric(text, path, labels)
        del text
    if digest is None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return unnamed_columns(num, path, features), digest


def check_columns(columns: list[str], path: Path, features: list[str], target: str | None) -> None:
    available = ", ".join(c or "(unnamed)" for c in columns)
    for key, cols in (
        ("dataset.features", features),
        ("dataset.target", [target] if target else []),
    ):
        missing = [c for c in cols if c not in columns]
        if missing:
            raise DataError(
                f"{path}: {key} names column(s) {', '.join(map(repr, missing))} that the "
                f"file does not have; available columns: {available}."
            )


def check_binary_target(y: np.ndarray, path: Path, target: str, index: pd.Index) -> None:
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        vals = ", ".join(_plain(v) for v in np.unique(y[bad])[:3])
        classes = np.unique(y)
        found = [_plain(v) for v in classes] if classes.size == 2 else []
        raise DataError(
            f"{path}: column {target!r} must hold class labels 0 or 1; found {vals} at "
            f"{_lines(index[bad])}. " + _label_fix(target, found)
        )
    if np.unique(y).size < 2:
        raise DataError(
            f"{path}: column {target!r} holds only class {int(y[0])}; logistic regression "
            "needs both classes 0 and 1 present; add rows of the other class."
        )
