"""Shared fixtures: a prepared project folder, Hydra composition, and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Tests that import TensorFlow themselves get the settings gradtrack's backend uses,
# whichever test imports it first.
from gradtrack.backends import prepare_tensorflow  # noqa: E402

prepare_tensorflow()


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A data/ folder made by the real fetch + prepare steps (mirror read-only)."""
    from gradtrack.data.fetch import fetch_all
    from gradtrack.data.prepare import prepare_all

    data = tmp_path_factory.mktemp("shared_data") / "data"
    fetch_all(data / "raw", REPO)
    prepare_all(data / "raw", data)
    return data


@pytest.fixture
def project(tmp_path, prepared_data) -> Path:
    """A fresh project root: data/ linked to the prepared CSVs, an empty mlruns/."""
    (tmp_path / "data").symlink_to(prepared_data, target_is_directory=True)
    return tmp_path


def compose(*overrides: str):
    """Compose conf/ like the CLI does and return the typed Config object."""
    from gradtrack.config import compose as compose_config

    return compose_config(overrides, CONF)


def run_cli(
    args: list[str],
    cwd: Path,
    timeout: int = 300,
    env: dict | None = None,
    module: str = "gradtrack",
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` in ``cwd`` and capture its output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def signal_and_time_exit(proc: subprocess.Popen, sig) -> tuple[float, str]:
    """Send ``sig`` to ``proc``; (seconds until it exited, its stderr)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - t0, err


def mlflow_runs(project: Path, experiment: str = "gradtrack"):
    """All runs in the project's embedded store (empty list if no store exists)."""
    from mlflow.tracking import MlflowClient

    db = project / "mlruns" / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=10_000)


def wait_until_training(client, run_id: str, proc: subprocess.Popen, settle: float = 0.5):
    """Until the run's dataset input is in the store: its last store call before training
    (params and tags ride with the first metric batch); then ``settle`` seconds for the
    first chunk to begin. A signal or outage timed from the run's creation alone can come
    while the run still logs its input, before a single step exists."""
    import time

    deadline = time.monotonic() + 120
    while not client.get_run(run_id).inputs.dataset_inputs:
        assert proc.poll() is None, f"gradtrack exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the run never logged its dataset input"
        time.sleep(0.1)
    time.sleep(settle)


def pixels_of(png: Path, color: str) -> tuple[int, int]:
    """(how many pixels of the image ``png`` have about this colour, how many rows of
    pixels they span: a curve's height in the plot)."""
    import numpy as np
    from matplotlib.colors import to_rgb
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float) / 255
    hit = np.abs(rgb - np.array(to_rgb(color))).max(axis=2) < 0.05
    return int(hit.sum()), int(hit.any(axis=1).sum())
