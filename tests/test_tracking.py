"""What a run leaves in MLflow: params, tags, metrics, artifacts, lineage, model, status.

Every test uses a real SQLite store in a temp project; failures are provoked for real
(a raising training step, a diverging learning rate, signals to a live process).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import compose, mlflow_runs, run_cli, signal_and_time_exit, wait_until_training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["tracking.log_model=false", "tracking.log_artifacts=false", "checks.baseline=false"]


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


@pytest.fixture
def project_uri(project, monkeypatch) -> str:
    """Point MLflow's own default (runs:/ URIs) at the project's store, not ./mlflow.db."""
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _train(project: Path, *overrides: str):
    from gradtrack import train

    return train.run(compose(*overrides, f"paths.root={project}"), list(overrides))


def _history(client, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def _all_metric_values(client, run) -> list[float]:
    return [
        m.value for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
    ]


def test_linear_run_records_params_tags_metrics_artifacts_lineage_and_model(project, project_uri):
    import mlflow.pyfunc

    res = _train(project, "+experiment=fit_linear", "optimizer=adam", "optimizer.lr=0.05")
    client = _client(project)
    [run] = mlflow_runs(project)
    assert run.info.run_id == res.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fit_linear · numpy · adam · lr=0.05"

    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["optimizer.lr"] == "0.05" and p["optimizer.name"] == "adam"
    assert p["epochs"] == "400" and p["dataset.standardize"] == "True"
    # Plumbing stays out of the params (config.yaml keeps it).
    assert not [k for k in p if k.startswith(("tracking.", "paths.", "output."))], sorted(p)
    data_sha = hashlib.sha256((project / "data" / "regression.csv").read_bytes()).hexdigest()
    assert t["model"] == "linear" and t["dataset"] == "auto_mpg"
    assert t["backend"] == "numpy" and t["optimizer"] == "adam"
    assert t["experiment"] == "fit_linear"
    assert t["mlflow.source.name"] == "gradtrack" and t["mlflow.user"]
    assert "least-squares" in t["mlflow.note.content"]
    assert (
        "gradtrack +experiment=fit_linear optimizer=adam optimizer.lr=0.05"
        in (t["mlflow.note.content"])
    )
    assert t["data_sha256"] == data_sha
    for key in ("final_loss", "r2", "train_seconds", "epochs_per_second", "baseline/loss_gap"):
        assert math.isfinite(m[key]), key
    assert "mse" not in m and "loss" not in m  # final_loss is that number
    assert m["train_seconds"] > 0 and m["epochs_per_second"] > 0
    assert m["final_loss"] == pytest.approx(float(res.losses[-1]))
    assert len(_history(client, res.run_id, "Training/loss")) == 400

    # Artifacts: config, overrides, valid PNGs, coefficient table.
    names = {a.path for a in client.list_artifacts(res.run_id)}
    assert {
        "config.yaml",
        "overrides.txt",
        "loss_curve.png",
        "coefficients.csv",
        "coefficients.png",
    } <= names
    assert "model" not in names  # the model lives in its LoggedModel, not in run files
    local = Path(client.download_artifacts(res.run_id, "", str(project / "dl")))
    for png in ("loss_curve.png", "coefficients.png"):
        blob = (local / png).read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 1000, png
    assert "optimizer=adam" in (local / "overrides.txt").read_text()
    assert "lr: 0.05" in (local / "config.yaml").read_text()
    assert "root:" in (local / "config.yaml").read_text()  # plumbing kept here
    assert (local / "coefficients.csv").read_text().startswith("term,learned,baseline,abs_err")

    # Lineage: the training data as a dataset input.
    [di] = client.get_run(res.run_id).inputs.dataset_inputs
    assert di.dataset.name == "auto_mpg" and di.dataset.digest
    assert "regression.csv" in di.dataset.source
    assert {(tg.key, tg.value) for tg in di.tags} >= {("mlflow.data.context", "training")}
    # Schema from the first rows, profile counting every row (392 rows, 7 features + mpg).
    schema = json.loads(di.dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in schema][-1] == "mpg" and len(schema) == 8
    assert {c["type"] for c in schema} == {"double"}
    assert json.loads(di.dataset.profile) == {"num_rows": 392, "num_elements": 392 * 8}

    # The MLflow 3 LoggedModel: an output of the run, with its metrics and dataset,
    # reproduces the run's own coefficients exactly.
    [lm] = client.search_logged_models([run.info.experiment_id])
    assert lm.source_run_id == res.run_id and lm.status.to_int() == 2  # READY
    assert [o.model_id for o in client.get_run(res.run_id).outputs.model_outputs] == [lm.model_id]
    lm_metrics = {x.key: x for x in lm.metrics}
    assert lm_metrics["final_loss"].value == m["final_loss"]
    assert lm_metrics["final_loss"].dataset_name == "auto_mpg"
    assert "tracking.root" not in lm.params and lm.params["optimizer.lr"] == "0.05"
    model = mlflow.pyfunc.load_model(f"models:/{lm.model_id}")
    sig = model.metadata.signature
    frame = pd.read_csv(project / "data" / "regression.csv").dropna()
    assert sig.inputs.input_names() == [c for c in frame.columns if c != "mpg"]
    assert {c.type.name for c in sig.inputs.inputs} == {"double"}
    assert sig.outputs.input_names() == ["prediction"]
    assert model.metadata.model_id == lm.model_id
    X = frame[sig.inputs.input_names()].astype(np.float64)
    want = X.to_numpy() @ res.coef_ + res.intercept_
    np.testing.assert_allclose(np.asarray(model.predict(X)), want, rtol=1e-12, atol=1e-12)


def test_logistic_model_predicts_the_sigmoid_of_the_run_coefficients(project, project_uri):
    import mlflow.pyfunc

    res = _train(project, "+experiment=fit_logistic", "epochs=200", "checks.baseline=false")
    [lm] = _client(project).search_logged_models([res.experiment_id])
    # runs:/<run>/<model name> resolves to the LoggedModel too.
    model = mlflow.pyfunc.load_model(f"runs:/{res.run_id}/fit_logistic")
    assert model.metadata.model_id == lm.model_id
    assert model.metadata.signature.outputs.input_names() == ["probability"]
    frame = pd.read_csv(project / "data" / "classification.csv")
    # Typed double inputs: the CSV's integer counts are cast, as the run itself did.
    X = frame[model.metadata.signature.inputs.input_names()].astype(np.float64)
    z = X.to_numpy() @ res.coef_ + res.intercept_
    want = 1.0 / (1.0 + np.exp(-z))
    got = np.asarray(model.predict(X))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert [r.info.status for r in mlflow_runs(project)] == ["FINISHED"]


def test_float_params_log_the_same_text_however_they_were_written(project):
    _train(
        project, "+experiment=seed_linear", "backend=numpy", "epochs=3", "optimizer.lr=1e-6", *FAST
    )
    _train(
        project,
        "+experiment=seed_linear",
        "backend=numpy",
        "epochs=3",
        "optimizer.lr=0.000001",
        *FAST,
    )
    runs = mlflow_runs(project)
    assert [r.data.params["optimizer.lr"] for r in runs] == ["1e-06", "1e-06"]
    assert {r.data.params["model.tol"] for r in runs} == {"1e-10"}


def test_2500_step_run_without_a_budget_stores_every_step_in_batches_of_at_most_1000(
    project, monkeypatch
):
    from mlflow.tracking import MlflowClient

    sizes: list[int] = []
    real = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), *args, **kwargs):  # records, then really logs
        sizes.append(len(metrics or ()))
        return real(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    # A SQL store in this process takes the points in bulk (tracking/bulk.py).
    from gradtrack.tracking import bulk

    real_bulk = bulk.store_log_batch

    def bulk_spy(store, run_id, metrics, *args):
        sizes.append(len(metrics))
        return real_bulk(store, run_id, metrics, *args)

    monkeypatch.setattr(bulk, "store_log_batch", bulk_spy)
    res = _train(
        project,
        "+experiment=seed_linear",
        "backend=numpy",
        "epochs=2500",
        "tracking.max_points=0",
        *FAST,
    )
    hist = _history(_client(project), res.run_id, "Training/loss")
    assert [m.step for m in hist] == list(range(2500))
    np.testing.assert_allclose([m.value for m in hist], res.losses, rtol=1e-12)
    assert max(sizes) <= 1000
    assert sum(sizes) >= 2 * 2500  # loss and grad_norm for every step


def test_long_run_stores_a_bounded_curve_and_its_full_history_as_one_artifact(project):
    """100,000 steps: the store grows by < 1 MB, the curve keeps its shape and ends."""
    from gradtrack.tracking.budget import kept_steps
    from gradtrack.tracking.store import store_size

    db = project / "mlruns" / "mlflow.db"
    _train(project, "+experiment=fit_linear_1d", "epochs=10", *FAST)  # create the store
    before = store_size(db)
    res = _train(
        project,
        "+experiment=fit_linear_1d",
        "epochs=100000",
        "tracking.max_points=500",
        "tracking.log_model=false",
        "checks.baseline=false",
    )
    grown = store_size(db) - before
    assert grown < 1_000_000, grown
    client = _client(project)
    for key in ("Training/loss", "Training/grad_norm"):
        hist = _history(client, res.run_id, key)
        steps = [m.step for m in hist]
        assert 400 <= len(steps) <= 500
        assert steps[0] == 0 and steps[-1] == 99_999
        assert all(a < b for a, b in zip(steps, steps[1:]))
        assert steps == kept_steps(100_000, 500).tolist()
        assert steps[:30] == list(range(30))  # dense where the loss falls fastest
        assert steps[-1] - steps[-2] > 100  # sparse in the long tail: not a plain stride
        values = res.losses if key == "Training/loss" else res.grad_norms
        np.testing.assert_array_equal([m.value for m in hist], values[steps])
    path = client.download_artifacts(res.run_id, "history.npz", str(project / "dl"))
    full = np.load(path)
    np.testing.assert_array_equal(full["loss"], res.losses)
    np.testing.assert_array_equal(full["grad_norm"], res.grad_norms)
    np.testing.assert_array_equal(full["step"], np.arange(100_000))


def test_the_history_file_deflates_what_repeats_and_stores_noise_as_it_is(tmp_path):
    """A million-step history: ``step`` and a converged series are deflated, a noisy one
    is stored; ``np.load`` gives every array back exactly, in its own dtype."""
    import zipfile

    from gradtrack.record import RunResult, _save_history

    n = 1_000_000
    loss = np.maximum(600.0 * np.exp(-np.arange(n) / 8.0), 10.847)  # converged: repeats
    noise = np.random.default_rng(0).random(n) * 1e-15  # a gradient norm's jitter
    x = np.full(n, -2.0, dtype=np.float32)
    result = RunResult(losses=loss, grad_norms=noise, values=x, params={})
    _save_history(result, tmp_path / "history.npz")
    with zipfile.ZipFile(tmp_path / "history.npz") as zf:
        kind = {i.filename: i.compress_type for i in zf.infolist()}
    assert kind == {
        "step.npy": zipfile.ZIP_DEFLATED,
        "loss.npy": zipfile.ZIP_DEFLATED,
        "grad_norm.npy": zipfile.ZIP_STORED,
        "x.npy": zipfile.ZIP_DEFLATED,
    }
    assert (tmp_path / "history.npz").stat().st_size < 0.5 * (3 * 8 + 4) * n
    with np.load(tmp_path / "history.npz") as h:
        assert h["step"].dtype == np.int64 and h["x"].dtype == np.float32
        np.testing.assert_array_equal(h["step"], np.arange(n))
        for name, values in (("loss", loss), ("grad_norm", noise), ("x", x)):
            np.testing.assert_array_equal(h[name], values)


def test_exception_in_a_training_step_ends_failed_and_keeps_earlier_metrics(project, monkeypatch):
    from gradtrack import train
    from gradtrack.backends import get_backend
    from gradtrack.tracking.budget import kept_steps

    calls: list[int] = []

    class Flaky:
        """The real numpy backend whose trainer breaks on its third chunk of steps."""

        def __getattr__(self, name):
            return getattr(get_backend("numpy"), name)

        def make_trainer(self, *args, **kwargs):
            trainer = get_backend("numpy").make_trainer(*args, **kwargs)
            real_run = trainer.run

            def run(n):
                calls.append(n)
                if len(calls) == 3:
                    raise RuntimeError("boom: simulated failure in a training step")
                return real_run(n)

            trainer.run = run
            return trainer

    monkeypatch.setattr(train, "get_backend", lambda name: Flaky())
    with pytest.raises(RuntimeError, match="boom"):
        # flush_every above the step count: only the exit path can send the metrics.
        _train(
            project,
            "+experiment=seed_linear",
            "backend=numpy",
            "epochs=5000",
            "tracking.flush_every=100000",
            *FAST,
        )
    [run] = mlflow_runs(project)
    assert run.info.status == "FAILED"
    assert "RuntimeError: boom" in run.data.tags["error"]
    hist = _history(_client(project), run.info.run_id, "Training/loss")
    done = calls[0] + calls[1]  # the chunks that completed before the failure
    kept = [int(k) for k in kept_steps(5000, 1000) if k < done]
    assert [m.step for m in hist] == kept + ([done - 1] if kept[-1] != done - 1 else [])
    assert "gradcheck/max_rel_err" in run.data.metrics


def test_divergence_ends_failed_tagged_with_the_last_finite_step_and_no_inf_stored(project):
    out = run_cli(["optimizer.lr=1e6", "+experiment=fit_linear"], project)
    assert out.returncode == 1, out.stdout + out.stderr  # the run failed (2: bad input)
    assert "diverged" in out.stderr and "optimizer.lr" in out.stderr
    [run] = mlflow_runs(project)
    client = _client(project)
    assert run.info.status == "FAILED"
    t = run.data.tags
    assert t["diverged"] == "true"
    last = int(t["last_finite_step"])
    assert last >= 0 and int(t["diverged_at_step"]) == last + 1
    assert run.data.metrics["last_finite_step"] == last
    hist = _history(client, run.info.run_id, "Training/loss")
    assert hist[-1].step == last and len(hist) == last + 1
    values = _all_metric_values(client, run)
    assert values and all(math.isfinite(v) for v in values)


def _wait_for_running_run(project: Path, proc: subprocess.Popen, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        runs = [r for r in mlflow_runs(project) if r.info.status == "RUNNING"]
        if runs:
            return runs[0]
        time.sleep(0.3)
    raise AssertionError("the run never appeared in the store")


def _start_long_run(project: Path, *overrides: str) -> subprocess.Popen:
    from gradtrack.tracking.store import ensure_experiment, resolve_tracking

    # Create the store first so the test's reads never race the run's table creation.
    target = resolve_tracking(None, project / "mlruns")
    ensure_experiment(_client(project), "gradtrack", target)
    return subprocess.Popen(
        [sys.executable, "-m", "gradtrack", "epochs=100000000", *overrides],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.slow  # a real process, started and signalled: ~10 s each
@pytest.mark.parametrize(
    "sig, backend",
    [(signal.SIGTERM, "numpy"), (signal.SIGINT, "numpy"), (signal.SIGTERM, "tensorflow")],
    ids=["SIGTERM-numpy", "SIGINT-numpy", "SIGTERM-tensorflow"],
)
def test_signal_during_training_ends_the_run_killed_within_2s_with_the_steps_made(
    project, sig, backend
):
    from gradtrack.tracking.budget import kept_steps

    proc = _start_long_run(project, "+experiment=fit_linear", f"backend={backend}")
    try:
        run = _wait_for_running_run(project, proc)
        # Past the first chunks (TensorFlow's includes tracing the loop).
        wait_until_training(
            _client(project), run.info.run_id, proc, settle=1.0 if backend == "numpy" else 5.0
        )
        took, err = signal_and_time_exit(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert took <= 2.0, f"exit took {took:.2f} s after {sig.name}"
    assert "Traceback" not in err
    # which run it stopped, and where, as a failed run's last line says
    assert f"MLflow run {run.info.run_id} (KILLED, experiment 'gradtrack')" in err
    run = _client(project).get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["killed_by"] == sig.name
    # what it was, to run it again (a local store: a copy within the 2 s)
    files = {a.path for a in _client(project).list_artifacts(run.info.run_id)}
    assert files == {"config.yaml", "overrides.txt"}
    steps = [m.step for m in _history(_client(project), run.info.run_id, "Training/loss")]
    kept = kept_steps(100_000_000, 1000).tolist()
    # The budgeted steps made so far, plus the last completed step.
    assert len(steps) >= 2 and steps[:-1] == kept[: len(steps) - 1]
    assert steps[-1] >= steps[-2]
    assert [r.info.status for r in mlflow_runs(project)] == ["KILLED"]


@pytest.mark.slow  # waits for the first live send (LIVE_SEND_SECONDS) of a huge buffer
def test_sigterm_during_a_long_flush_ends_the_run_killed_within_2s(project):
    # No budget and one batch at a time: after 10 s of training the first live send
    # has hundreds of thousands of points to store, which takes far longer than 2 s.
    proc = _start_long_run(
        project,
        "+experiment=fit_linear_1d",
        "tracking.max_points=0",
        "tracking.flush_every=1",
    )
    try:
        run = _wait_for_running_run(project, proc)
        client = _client(project)
        deadline = time.monotonic() + 60
        while not client.get_metric_history(run.info.run_id, "Training/loss"):
            assert time.monotonic() < deadline, "the live send never started"
            time.sleep(0.2)
        took, err = signal_and_time_exit(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took <= 2.0, f"exit took {took:.2f} s after SIGTERM during a flush"
    run = _client(project).get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert int(run.data.tags["metric_points_not_sent"]) > 0
    assert run.data.tags["killed_by"] == "SIGTERM"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_fails_fast_before_training(project):
    port = _closed_port()
    t0 = time.monotonic()
    out = run_cli(
        ["+experiment=fit_linear", "tracking=server", f"tracking.uri=http://127.0.0.1:{port}"],
        project,
        timeout=60,
    )
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"tracking.uri=http://127.0.0.1:{port}" in out.stderr
    assert "no MLflow tracking server answers" in out.stderr
    assert "final_loss" not in out.stdout  # nothing was trained
    assert took < 30
    assert not (project / "mlruns").exists()
