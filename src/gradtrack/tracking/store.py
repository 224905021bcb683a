"""Where runs go: the embedded SQLite store under mlruns/, or a tracking server."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gradtrack.errors import TrackingError

# An unreachable server should fail in seconds, not after minutes of MLflow's retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# MLflow's usage telemetry posts to an outside address from a background thread: off
# unless the user turns it on (offline clusters, and no share of every run's cost).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
PREFLIGHT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TrackingTarget:
    uri: str  # tracking URI
    artifact_root: str | None  # artifact location for new experiments (local store only)


def resolve_tracking(uri: str | None, root_dir: Path) -> TrackingTarget:
    """An explicit URI wins; otherwise SQLite at <root_dir>/mlflow.db, artifacts beside it.

    The path is absolute, so Hydra's per-run working directories never scatter stores.
    """
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # sqlite:///relative.db: pin it to an absolute path now.
            rel = uri[len("sqlite:///") :]
            uri = "sqlite:///" + str(Path(rel).resolve())
        return TrackingTarget(uri=uri, artifact_root=None)
    root_dir = root_dir.resolve()
    return TrackingTarget(
        uri=f"sqlite:///{root_dir / 'mlflow.db'}",
        artifact_root=(root_dir / "artifacts").as_uri(),
    )


def check_server(uri: str, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail in seconds, with a plain message, when nothing answers at an http(s) URI.

    Only a connection failure counts: a server behind a proxy may answer /health with
    an HTTP error and still serve the tracking API.
    """
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking.uri={uri}: unreachable, no MLflow tracking server answers there "
            f"({reason}). Start one (mlflow server --host 127.0.0.1 --port PORT "
            "--backend-store-uri sqlite:///mlflow.db), fix tracking.uri, use tracking=local "
            "for the embedded store, or tracking.enabled=false to train without tracking."
        ) from exc


def ensure_experiment(client, name: str, target: TrackingTarget) -> str:
    """Create (or find) the experiment; raises TrackingError if the store is unusable."""
    if target.uri.startswith(("http://", "https://")):
        check_server(target.uri)
    if target.uri.startswith("sqlite:///"):
        db = Path(target.uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"tracking store {db.parent}: cannot create the directory ({exc}). "
                "Set tracking.root to a writable folder."
            ) from exc
        if (db.exists() and not os.access(db, os.W_OK)) or not os.access(db.parent, os.W_OK):
            raise TrackingError(
                f"tracking store {db}: not writable. Fix its permissions or set "
                "tracking.root to a writable folder."
            )
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=target.artifact_root)
    except TrackingError:
        raise
    except Exception as exc:  # mlflow raises many types for an unreachable store
        if exp_created_concurrently := _lookup(client, name):
            return exp_created_concurrently
        raise TrackingError(
            f"tracking store {target.uri}: unreachable or unusable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Start the server or fix "
            "tracking.uri; use tracking.enabled=false to train without tracking."
        ) from exc


def _lookup(client, name: str) -> str | None:
    try:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else None
    except Exception:
        return None
