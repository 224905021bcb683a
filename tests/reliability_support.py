"""Helpers shared by the test_reliability_* modules (not a test module itself)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def seed_store(project: Path) -> Path:
    """Give ``project`` an empty, already-migrated MLflow SQLite store.

    Creating MLflow's tables takes seconds on a busy machine; doing it once per test
    process and copying the file keeps the suite fast. The store is still the real
    one gradtrack opens (mlruns/mlflow.db), just born with its schema in place.
    """
    global _TEMPLATE
    if _TEMPLATE is None:
        from mlflow.tracking import MlflowClient

        tmp = Path(tempfile.mkdtemp(prefix="gradtrack-store-"))
        atexit.register(shutil.rmtree, tmp, True)
        MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()
        _TEMPLATE = tmp / "mlflow.db"
    db = project / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE, db)
    return db
