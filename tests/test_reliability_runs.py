"""Numerical trouble and faults during a run: honest end status, no inf/NaN stored,
clear errors for an unusable tracking store, and seeds that really determine a run.
"""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from conftest import compose, mlflow_runs, run_cli
from gradtrack import train
from gradtrack.errors import DivergedError, TrackingError
from reliability_support import seed_store

LEAN = ("tracking.log_model=false", "tracking.log_artifacts=false", "checks.baseline=false")


def _histories(project, run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return {k: client.get_metric_history(run.info.run_id, k) for k in run.data.metrics}


def _assert_all_finite(project, run):
    hist = _histories(project, run)
    assert hist
    for key, points in hist.items():
        assert all(math.isfinite(p.value) for p in points), key
    return hist


def _diverged_run(project, monkeypatch, *overrides):
    monkeypatch.chdir(project)
    seed_store(project)
    with pytest.raises(DivergedError) as err:
        train.run(compose(*overrides, *LEAN))
    [run] = mlflow_runs(project)
    assert run.info.status == "FAILED"
    assert run.data.tags["diverged"] == "true"
    hist = _assert_all_finite(project, run)
    return err.value, run, hist


def test_reliability_diverging_lr_fails_run_with_last_finite_step(project, monkeypatch):
    # Raw (unstandardized) features and lr=1e6: the loss overflows to inf at step 2.
    err, run, hist = _diverged_run(
        project,
        monkeypatch,
        "+experiment=seed_linear",
        "backend=numpy",
        "dataset.features=[]",
        "optimizer.lr=1e6",
    )
    assert err.step == 2 and err.last_finite_step == 1
    assert run.data.tags["last_finite_step"] == "1"
    assert [p.step for p in hist["Training/loss"]] == [0, 1]
    assert run.data.metrics["last_finite_step"] == 1
    assert "optimizer.lr" in str(err) and "clip_norm" in str(err)


def test_a_diverged_run_keeps_its_files_up_to_the_last_finite_step(project, monkeypatch):
    """The curve up to the blow-up is what a user opens a diverged run for: config,
    overrides, full-resolution history and plots are logged as for a finished run (no
    model: there is no result), and the history file holds every step with a finite loss."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(project)
    seed_store(project)
    overrides = ["+experiment=seed_linear", "backend=numpy", "optimizer.lr=1e6"]
    with pytest.raises(DivergedError) as err:
        train.run(compose(*overrides, "dataset.features=[]", "checks.baseline=false"))
    [run] = mlflow_runs(project)
    assert run.info.status == "FAILED" and run.data.tags["diverged"] == "true"
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.txt", "history.npz", "loss_curve.png"} <= files
    assert "coefficients.csv" not in files  # no result, so no coefficients
    assert client.search_logged_models([run.info.experiment_id]) == []
    path = client.download_artifacts(run.info.run_id, "history.npz", str(project))
    with np.load(path) as h:
        assert h["step"].tolist() == list(range(err.value.step))  # every finite step
        assert np.isfinite(h["loss"]).all()
        # the file is the run's own record: the gradient that overflowed stays inf
        # (the store, which takes no inf, has no point there)
        assert np.isfinite(h["grad_norm"][0]) and np.isinf(h["grad_norm"][-1])


def test_a_diverged_run_exits_1_and_names_its_failed_run(project):
    """Not 2, the status of bad input before any run: a script can tell them apart."""
    out = run_cli(["+experiment=seed_linear", "optimizer.lr=1e6", *LEAN], project)
    assert out.returncode == 1, out.stderr
    [run] = mlflow_runs(project)
    assert run.info.status == "FAILED"
    assert f"MLflow run {run.info.run_id} (FAILED, experiment 'gradtrack')" in out.stderr
    assert "training diverged" in out.stderr and "Traceback" not in out.stderr


def test_the_divergence_advice_names_only_what_the_run_can_still_change():
    from gradtrack.train import divergence_advice

    raw = compose("+experiment=seed_linear", "optimizer.lr=1e6")
    assert divergence_advice(raw) == (
        "Lower optimizer.lr (now 1e+06), set optimizer.clip_norm (e.g. "
        "optimizer.clip_norm=1.0) or standardize the features (dataset.standardize=true)."
    )
    done = compose("+experiment=fit_linear_1d", "optimizer.clip_norm=5")  # standardized
    assert divergence_advice(done) == (
        "Lower optimizer.lr (now 0.1) or lower optimizer.clip_norm (now 5)."
    )
    assert "standardize" not in divergence_advice(compose("model=quadratic"))  # no data


def test_reliability_nan_loss_mid_run(project, monkeypatch):
    # All eight Pima features at lr=1e38 in float32: step 0 is finite, then the
    # weights overflow and inf - inf makes the loss NaN (not inf) at step 1.
    overrides = (
        "+experiment=seed_logistic",
        "backend=numpy",
        "dataset.features=[]",
        "optimizer.lr=1e38",
    )
    from gradtrack.build import build_trainer, prepare

    monkeypatch.chdir(project)
    cfg = compose(*overrides)
    _, ds = prepare(cfg)
    losses = build_trainer(cfg, ds).run(3).losses
    assert np.isfinite(losses[0]) and np.isnan(losses[1])  # the case really is NaN

    err, run, hist = _diverged_run(project, monkeypatch, *overrides)
    assert err.step == 1 and err.last_finite_step == 0
    assert [p.step for p in hist["Training/loss"]] == [0]


def test_reliability_clipping_keeps_exploding_gradient_finite(project, monkeypatch):
    monkeypatch.chdir(project)
    seed_store(project)
    train.run(
        compose(
            "+experiment=seed_linear",
            "backend=numpy",
            "dataset.features=[]",
            "optimizer.lr=1e6",
            "optimizer.clip_norm=1.0",
            *LEAN,
        )
    )
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    assert "diverged" not in run.data.tags
    hist = _assert_all_finite(project, run)
    assert len(hist["Training/loss"]) == 100


def test_reliability_exception_in_training_step_fails_run_keeps_metrics(project, monkeypatch):
    """Fault injection: the real numpy trainer raises on its second chunk of steps."""
    real_get_backend = train.get_backend

    class Flaky:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def run(self, n):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("injected fault in a training step")
            return self.inner.run(n)

        def params(self):
            return self.inner.params()

    class Backend:
        def __init__(self, name):
            self.real = real_get_backend(name)

        def make_trainer(self, *a, **k):
            return Flaky(self.real.make_trainer(*a, **k))

        def __getattr__(self, item):
            return getattr(self.real, item)

    monkeypatch.setattr(train, "get_backend", Backend)
    monkeypatch.chdir(project)
    seed_store(project)
    with pytest.raises(RuntimeError, match="injected fault"):
        train.run(compose("+experiment=seed_fence", "backend=numpy", "epochs=1200", *LEAN))
    [run] = mlflow_runs(project)
    assert run.info.status == "FAILED"
    assert "injected fault" in run.data.tags["error"]
    hist = _assert_all_finite(project, run)
    # The first chunk (FIRST_CHUNK_STEPS steps, well inside the budget) was stored.
    assert [p.step for p in sorted(hist["Training/loss"], key=lambda p: p.step)] == list(
        range(train.FIRST_CHUNK_STEPS)
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reliability_tracking_server_unreachable_cli(project):
    uri = f"http://127.0.0.1:{_closed_port()}"
    out = run_cli(
        [
            "+experiment=seed_fence",
            "backend=numpy",
            "tracking=server",
            f"tracking.uri={uri}",
            "output.metrics_path=out/metrics.json",
            "output.losses_path=out/losses.csv",
        ],
        project,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert uri in out.stderr and "unreachable" in out.stderr
    assert "tracking.enabled=false" in out.stderr
    assert "step" not in out.stdout  # failed before training
    assert not (project / "out").exists() and not (project / "mlruns").exists()


def test_reliability_tracking_root_not_writable(project, monkeypatch):
    # Tests run as root, so chmod cannot make a folder read-only; a regular file
    # where the store's folder should be makes mkdir fail for anyone.
    blocker = project / "blocker"
    blocker.write_text("not a folder\n")
    monkeypatch.chdir(project)
    with pytest.raises(TrackingError) as err:
        train.run(
            compose(
                "+experiment=seed_fence",
                "backend=numpy",
                "tracking.root=blocker/mlruns",
                "output.metrics_path=out/metrics.json",
            )
        )
    assert "blocker" in str(err.value) and "tracking.root" in str(err.value)
    assert not (project / "out").exists()
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("store", ["server", "folder"])
def test_reliability_sweep_whose_store_cannot_open_stops_before_any_job(project, store):
    """As a single run: exit 2 and the store's own message. Hydra turned the parent's
    error into a warning and launched every job, each to fail the same way (exit 1)."""
    if store == "server":
        uri = f"http://127.0.0.1:{_closed_port()}"
        where, named = [f"tracking.uri={uri}"], uri
    else:
        (project / "blocker").write_text("not a folder\n")
        where, named = ["tracking.root=blocker/mlruns"], "blocker"
    out = run_cli(
        ["-m", "+experiment=seed_fence", "backend=numpy", "seed=1,2", *where],
        project,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "gradtrack: error: sweep not started: " in out.stderr and named in out.stderr
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr, out.stderr
    assert "Launching" not in out.stdout + out.stderr
    assert not (project / "mlruns").exists()


@pytest.mark.parametrize(
    "backend",
    ["numpy", "torch", pytest.param("tensorflow", marks=pytest.mark.slow)],
)
def test_reliability_same_seed_same_metrics(project, monkeypatch, backend):
    monkeypatch.chdir(project)
    args = ("+experiment=seed_logistic", f"backend={backend}", "tracking=none", "epochs=20")
    args += ("dataset.features=[]", "dataset.standardize=true", "optimizer.batch_size=64")
    args += ("optimizer.shuffle=true", "checks.baseline=false")
    a = train.run(compose(*args, "seed=7"))
    b = train.run(compose(*args, "seed=7"))
    np.testing.assert_array_equal(a.losses, b.losses)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c = train.run(compose(*args, "seed=8", "epochs=1"))
    assert not np.array_equal(c.losses[:1], a.losses[:1])


def test_reliability_different_seed_different_initial_parameters():
    from gradtrack.models import InitSpec, get_problem

    problem = get_problem("logistic")
    spec = InitSpec("normal", 1.0, 1.0, 0.0)
    p0 = problem.init_params(8, spec, np.random.default_rng(0))
    p0_again = problem.init_params(8, spec, np.random.default_rng(0))
    p1 = problem.init_params(8, spec, np.random.default_rng(1))
    np.testing.assert_array_equal(p0["w"], p0_again["w"])
    assert not np.array_equal(p0["w"], p1["w"])
