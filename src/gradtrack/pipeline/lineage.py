"""MLflow tags that tie a run back to the DVC stage that started it and the data it read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STAGE_ENV = "GRADTRACK_DVC_STAGE"


def file_md5(path: Path) -> str:
    """md5 of the file's bytes: the value DVC 3 records for it in dvc.lock."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def dvc_tags(data_path: Path | None) -> dict[str, str]:
    """``dvc_stage`` and ``data_md5`` when the run was started by a DVC stage, else nothing."""
    stage = os.environ.get(STAGE_ENV)
    if not stage:
        return {}
    tags = {"dvc_stage": stage}
    if data_path is not None and Path(data_path).is_file():
        tags["data_md5"] = file_md5(Path(data_path))
    return tags
