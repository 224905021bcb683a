"""Fetch the raw files into data/raw/, from a local mirror or the upstream address.

Every file is checked against its sha256 before it replaces anything: a file that
does not match is refused and the previous good copy is kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from gradtrack.data.sources import SOURCES, Source
from gradtrack.errors import DataError

MIRROR_ENV = "GRADTRACK_DATA_MIRROR"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def find_mirror(root: Path) -> Path | None:
    """The mirror directory: $GRADTRACK_DATA_MIRROR, else ../shared/data beside the project."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(
                f"{MIRROR_ENV}={env}: not a directory. Point it at a folder holding "
                f"{', '.join(s.filename for s in SOURCES)}, or unset it to download."
            )
        return path
    for candidate in (root.parent / "shared" / "data", root / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(resp, out)


def fetch_one(source: Source, raw_dir: Path, mirror: Path | None) -> Path:
    """Bring one verified file into ``raw_dir``; returns its path."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    target = raw_dir / source.filename
    if target.exists() and sha256_of(target) == source.sha256:
        return target
    # Write to a temporary file first so a bad download never replaces a good copy.
    fd, tmp_name = tempfile.mkstemp(dir=raw_dir, prefix=f".{source.filename}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if mirror is not None:
            origin = mirror / source.filename
            if not origin.is_file():
                raise DataError(
                    f"{origin}: missing from the data mirror. Add the file, or unset "
                    f"{MIRROR_ENV} to download it from {source.url}."
                )
            shutil.copyfile(origin, tmp)
        else:
            origin = source.url
            try:
                _download(source.url, tmp)
            except OSError as exc:
                raise DataError(
                    f"{source.url}: download failed ({exc}). Set {MIRROR_ENV} to a "
                    "folder holding a copy of the file."
                ) from exc
        digest = sha256_of(tmp)
        if digest != source.sha256:
            kept = "the previous good copy is kept" if target.exists() else "nothing was written"
            raise DataError(
                f"{origin}: sha256 {digest} does not match the expected "
                f"{source.sha256} for {source.filename}; refused ({kept}). "
                "Replace the file with an unmodified copy of the upstream data."
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def fetch_all(raw_dir: Path, root: Path) -> list[Path]:
    mirror = find_mirror(root)
    return [fetch_one(s, raw_dir, mirror) for s in SOURCES]
