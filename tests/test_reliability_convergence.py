"""Convergence verdicts: unit cases on made-up histories, and real runs end to end."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose, mlflow_runs, run_cli
from gradtrack import train
from gradtrack.convergence import assess
from reliability_support import seed_store

LEAN = ("tracking.log_model=false", "tracking.log_artifacts=false")


def test_converged_when_gradient_vanishes_and_loss_matches_baseline():
    losses = 1.0 + 0.5 ** np.arange(60)
    norms = 0.5 ** np.arange(60)
    v = assess(losses, norms, loss_gap=1e-12, baseline_loss=1.0)
    assert v.converged and v.tags() == {"converged": "true"} and v.message() is None


def test_oscillating_loss_names_it_and_suggests_lower_lr():
    losses = np.array([36.0, 4.2, 51.0, 3.0, 40.0, 5.0, 44.0, 6.0, 48.0, 24.8])
    norms = np.full(10, 60.0)
    v = assess(losses, norms, standardized=False, lr=0.01, epochs=100)
    assert not v.converged
    assert "oscillates" in v.reasons[0]
    assert "optimizer.lr=0.001" in v.fix and "dataset.standardize=true" in v.fix
    tags = v.tags()
    assert tags["converged"] == "false" and "oscillates" in tags["convergence_reason"]
    assert "optimizer.lr" in tags["convergence_fix"]


def test_rising_loss_is_not_converged():
    v = assess(np.linspace(1.0, 2.0, 20), np.linspace(1.0, 2.0, 20), lr=0.5)
    assert not v.converged and "rose from 1 to 2" in v.reasons[0]
    assert "optimizer.lr=0.05" in v.fix


def test_slow_descent_reports_gradient_norm_and_suggests_more_steps():
    losses = 1.0 + 0.99 ** np.arange(100)
    norms = 0.99 ** np.arange(100)
    v = assess(losses, norms, epochs=100, standardized=True)
    assert not v.converged and "gradient norm is still" in v.reasons[0]
    assert "epochs=1000" in v.fix and "standardize" not in v.fix


def test_a_diverging_runs_ratios_read_as_times_not_as_huge_percentages():
    losses = 618.0 * 10.0 ** (12.0 * np.arange(21))  # lr=1e6 for 20 epochs: 1e242
    norms = 10.0 ** (6.0 * np.arange(21))
    v = assess(losses, norms, loss_gap=1.6e242, baseline_loss=24.02, lr=1e6)
    text = "; ".join(v.reasons)
    assert "gradient norm is still 1e+120 (1e+108 times its start)" in text  # of epoch 2
    assert "loss is 6.66e+240 times scikit-learn's optimum (1.6e+242 vs 24.02)" in text
    assert "%" not in text and len(text) < 300


def test_baseline_gap_alone_is_not_converged():
    losses = 2.0 + 0.5 ** np.arange(50)
    norms = 0.5 ** np.arange(50)
    v = assess(losses, norms, loss_gap=0.5, baseline_loss=2.0)
    assert not v.converged and "25.00% above scikit-learn's optimum" in v.reasons[0]


def test_minibatch_plateau_is_converged_and_falling_loss_is_not():
    rng = np.random.default_rng(0)
    flat = 1.0 + 0.001 * rng.standard_normal(100)  # noisy per-epoch means, no trend
    noisy_norms = 1.0 + rng.random(100)  # SGD gradients never vanish
    assert assess(flat, noisy_norms, minibatch=True).converged
    falling = np.linspace(10.0, 1.0, 100)
    v = assess(falling, noisy_norms, minibatch=True)
    assert not v.converged and "still falling" in v.reasons[0]


def test_expected_non_convergence_is_a_calm_note():
    v = assess(np.linspace(2.0, 1.0, 10), np.linspace(2.0, 1.0, 10))
    note = v.message(expected=False, name="seed_linear")
    assert note.startswith("gradtrack: note: not converged")
    assert "seed_linear is a short demonstration run" in note and "warning" not in note
    assert v.message(expected=True).startswith("gradtrack: warning: this run did not converge")


def test_reliability_pima_defaults_not_converged_tagged_and_said(project):
    """The issue's case: all Pima features, raw, lr 0.01: the loss bounces (36 → 4 → 51 …)."""
    seed_store(project)
    out = run_cli(["model=logistic", "dataset=pima", "dataset.features=[]", *LEAN], project)
    assert out.returncode == 0, out.stderr
    assert "gradtrack: warning: this run did not converge" in out.stderr
    assert "oscillates" in out.stderr and "dataset.standardize=true" in out.stderr
    assert "optimizer.lr=0.001" in out.stderr
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["converged"] == "false"
    assert "oscillates" in run.data.tags["convergence_reason"]
    assert "scikit-learn" in run.data.tags["convergence_reason"]  # the baseline gap
    assert "optimizer.lr" in run.data.tags["convergence_fix"]


def test_reliability_seed_run_says_not_converged_without_alarm(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    seed_store(project)
    train.run(compose("+experiment=seed_linear", "backend=numpy", *LEAN))
    err = capsys.readouterr().err
    assert "gradtrack: note: not converged" in err and "short demonstration run" in err
    assert "warning" not in err
    [run] = mlflow_runs(project)
    assert run.data.tags["converged"] == "false"


@pytest.mark.parametrize("experiment", ["fit_linear", "fit_logistic"])
def test_reliability_fit_experiments_converge(project, monkeypatch, capsys, experiment):
    monkeypatch.chdir(project)
    seed_store(project)
    train.run(compose(f"+experiment={experiment}", "backend=numpy", *LEAN))
    assert "converge" not in capsys.readouterr().err
    [run] = mlflow_runs(project)
    assert run.data.tags["converged"] == "true"
    assert "convergence_reason" not in run.data.tags


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
@pytest.mark.parametrize(
    "experiment", ["fit_linear", "fit_linear_1d", "fit_logistic", "fit_logistic_1d"]
)
def test_reliability_fit_experiments_converge_on_every_backend(project, backend, experiment):
    out = run_cli(
        [f"+experiment={experiment}", f"backend={backend}", "tracking.enabled=false"], project
    )
    assert out.returncode == 0, out.stderr
    assert "converge" not in out.stderr, out.stderr


def test_a_sweep_job_names_itself_in_its_convergence_warning(monkeypatch):
    """A joblib sweep's jobs print at once: each warning says which job it is about."""
    from gradtrack.convergence import Verdict
    from gradtrack.tracking import naming

    monkeypatch.setenv(naming.ENV_OVERRIDES, "+experiment=e backend=numpy optimizer.lr=0.1")
    monkeypatch.setenv(naming.ENV_SWEPT, "optimizer.lr")
    assert naming.current_job() == "lr=0.1"
    v = Verdict(False, ["the loss still falls"], "train longer")
    assert v.message(job=naming.current_job()).startswith(
        "gradtrack: warning: job lr=0.1 did not converge: the loss still falls"
    )
    monkeypatch.delenv(naming.ENV_OVERRIDES)
    assert naming.current_job() == ""
