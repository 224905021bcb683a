"""Read a plain numeric CSV with pandas' C parser, or say that it cannot.

The careful reader in :mod:`gradtrack.data.schema` keeps every cell as a Python
string so that it can point at the exact line of any problem; on a 50 MB file
that costs about a gigabyte. Most files are plain: ASCII digits, commas, no
quotes, the same number of fields on every line. For those this module parses
straight to float64 (memory in proportion to the data) and returns the same
frame the careful reader would: NaN where a cell is blank, the index holding
each row's line number in the file. Anything it is not sure about (a quote, a
letter other than those of ``nan``/``NA``, a line with the wrong number of
fields, an infinite value) makes it return None, and the careful reader runs
instead and explains the problem.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

# Cells the careful reader treats as blank; pandas gets the same list.
NA_VALUES = ["", "nan", "NaN", "NA", "?"]
# Bytes a plain numeric body may hold. No letters beyond those of the NA tokens and
# exponents: pandas' float parser would read "True" as 1.0 and "inf" as infinity.
_PLAIN = b"0123456789.+-eE, \t\r\nnaNA?"
_CHUNK = 1 << 22


def _scan(path: Path, n_fields: int) -> tuple[np.ndarray, str] | tuple[None, str]:
    """Line numbers of the data rows and the file's sha256, in one streaming pass.

    Returns (None, digest) when the body is not plain (see the module docstring).
    """
    h = hashlib.sha256()
    lines: list[np.ndarray] = []
    plain = True
    first = True
    line_no = 0  # lines completed before the current chunk
    carry = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            h.update(block)
            if not plain:
                if not block:
                    break
                continue
            buf = carry + block
            if block:
                cut = buf.rfind(b"\n") + 1
                buf, carry = buf[:cut], buf[cut:]
            elif buf and not buf.endswith(b"\n"):
                buf += b"\n"  # the last line has no newline
            if first and buf:
                header_end = buf.find(b"\n") + 1
                buf = buf[header_end:]
                line_no, first = 1, False
            if buf:
                found = _scan_lines(buf, n_fields)
                if found is None:
                    plain = False
                else:
                    lines.append(found + line_no)
                    line_no += buf.count(b"\n")
            if not block:
                break
    if not plain:
        return None, h.hexdigest()
    return (np.concatenate(lines) if lines else np.zeros(0, np.int64)), h.hexdigest()


def _scan_lines(buf: bytes, n_fields: int) -> np.ndarray | None:
    """1-based numbers (within ``buf``) of its data lines; None if any line is not plain.

    ``buf`` holds whole lines, each ending in a newline.
    """
    if buf.translate(None, _PLAIN):
        return None
    if b"\r" in buf and buf.count(b"\r") != buf.count(b"\r\n"):
        return None  # a lone carriage return: line numbers would differ
    a = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(a == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1))
    commas = np.flatnonzero(a == ord(","))
    per_line = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    length = ends - starts - (a[np.maximum(ends - 1, 0)] == ord("\r"))
    data = per_line == n_fields - 1
    empty = (per_line == 0) & (length == 0)  # csv and pandas both skip these
    if not np.all(data | empty):
        return None  # a ragged or whitespace-only line: the careful reader explains
    return np.flatnonzero(data) + 1


def read_plain(path: Path, header: list[str]) -> tuple[pd.DataFrame | None, str]:
    """The numeric frame (NaN = blank cell, index = line numbers) and the file's sha256.

    The frame is None when the file is not plain; the digest is always returned.
    """
    if len(header) < 2:
        lines, digest = None, hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        lines, digest = _scan(path, len(header))
    if lines is None or lines.size == 0:
        return None, digest
    try:
        df = pd.read_csv(
            path,
            header=None,
            skiprows=1,
            names=header,
            dtype=np.float64,
            na_values=NA_VALUES,
            keep_default_na=False,
            skip_blank_lines=True,
            engine="c",
            encoding="utf-8",
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return None, digest
    values = df.to_numpy()
    if (
        len(df) != lines.size
        or np.isinf(values).any()
        # A line of empty fields (",,,"): the careful reader skips it as blank.
        or np.isnan(values).all(axis=1).any()
    ):
        return None, digest
    df.index = pd.Index(lines)
    return df, digest
