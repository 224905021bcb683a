"""Hostile command lines: exit status 2, a message naming key, problem and fix, no
traceback, and nothing tracked (mlruns/ is not even created).

A representative few run the real CLI in a subprocess; the rest call the same entry
point (``gradtrack.cli.main``) in-process with ``sys.argv`` set, which is much faster.
"""

from __future__ import annotations

import pytest

from conftest import run_cli


def _main_fails(project, monkeypatch, capsys, *args: str) -> str:
    # Run in a fresh process: Hydra's in-process run mode rebinds logging and output
    # streams to pytest's capture, which later tests then find closed.
    out = run_cli(list(args), project)
    err = out.stderr
    assert out.returncode == 2, out.stdout + err
    assert "Traceback" not in err
    assert "gradtrack: error: " in err, err
    assert not (project / "mlruns").exists()
    return err


def _cli_fails(project, *args: str) -> str:
    out = run_cli(list(args), project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert not (project / "mlruns").exists()
    return out.stderr


def test_reliability_unknown_group_option_lists_valid_options_cli(project):
    err = _cli_fails(project, "model=mpl")
    assert "model=mpl" in err
    assert "fence, linear, logistic, quadratic, tanh_net" in err


def test_reliability_unknown_key_cli(project):
    err = _cli_fails(project, "optimizer.lrr=0.1")
    assert "optimizer.lrr: unknown key" in err and "Did you mean 'lr'?" in err
    assert "+optimizer.lrr" not in err  # Hydra's hint would not work on the schema


def test_reliability_wrong_type_cli(project):
    err = _cli_fails(project, "optimizer.lr=abc")
    assert "optimizer.lr" in err and "'abc'" in err and "takes a number" in err


def test_reliability_required_value_missing_cli(project):
    err = _cli_fails(project, "tracking=server")
    assert "tracking.uri" in err and "tracking.uri=http://" in err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["optimizer=adamm"], ["optimizer=adamm", "adam, momentum, sgd", "Did you mean 'adam'"]),
        (["+experiment=seed_lineer"], ["experiment=seed_lineer", "seed_linear"]),
        (["experiment=seed_linear"], ["+experiment=<name>"]),
        (["modell=linear"], ["modell: unknown key", "Did you mean 'model'"]),
        # + adds a key the schema lacks; the run would ignore it under its name
        (
            ["+optimizer.momentun=0.5"],
            ["optimizer.momentun: no such setting (did you mean optimizer.momentum?)"],
        ),
        (["+bogus=3"], ["bogus: no such setting", "without '+'"]),
        (["epochs=1.5"], ["epochs", "'1.5'", "whole number"]),
        (["steps=200"], ["steps: renamed to epochs", "epochs=N"]),
        (["dataset.features=nope"], ["dataset.features", "dataset.features=[a,b]"]),
        (["optimizer.lr=[1"], ["could not parse", "key=value"]),
        (["optimizer.lr=-1"], ["optimizer.lr: must be > 0, got -1.0", "try 0.01"]),
        (["optimizer.lr=inf"], ["optimizer.lr: must be a finite number, got inf"]),
        (["optimizer.lr=nan"], ["optimizer.lr: must be a finite number, got nan"]),
        (["+experiment=seed_fence", "model.x0=inf"], ["model.x0: must be a finite number"]),
        (["optimizer.eps=-inf"], ["optimizer.eps: must be a finite number, got -inf"]),
        (["epochs=0"], ["epochs: must be >= 1, got 0"]),
        (["+experiment=seed_fence", "model.x0=0"], ["model.x0", "x > 0", "model.x0=1"]),
        (["+experiment=seed_fence", "model.x0=-1"], ["model.x0", "got -1.0"]),
        (["model=linear", "dataset=none"], ["model=linear dataset=none", "dataset=auto_mpg"]),
        (["model=logistic", "dataset=auto_mpg"], ["needs a classification dataset"]),
        (["model=fence", "dataset=pima"], ["takes no data", "dataset=none"]),
        (["optimizer.batch_size=-3"], ["optimizer.batch_size: must be >= 0, got -3"]),
        (["backend.dtype=float16"], ["backend.dtype", "'float16'", "float32, float64"]),
        (["optimizer=adam", "optimizer.beta1=1.5"], ["optimizer.beta1", "[0, 1)", "1.5"]),
        (["+experiment=seed_backprop", "dataset.target_scale=0"], ["dataset.target_scale"]),
        (["backend=jax"], ["backend=jax", "numpy, tensorflow, torch"]),
        (["log_every=0"], ["log_every: must be >= 1"]),
        (["optimizer.clip_norm=-1"], ["optimizer.clip_norm: must be >= 0"]),
        (
            ["+experiment=seed_linear", "dataset.features=[mpg,cylinders]"],
            ["dataset.features", "target column 'mpg'", "dataset.features=[cylinders]"],
        ),
        (
            ["+experiment=seed_linear", "dataset.features=[weight,weight]"],
            ["dataset.features", "'weight' more than once"],
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and "=" in v[0] else None,
)
def test_reliability_bad_config(project, monkeypatch, capsys, args, expected):
    err = _main_fails(project, monkeypatch, capsys, *args)
    for text in expected:
        assert text in err, err


def test_reliability_several_problems_reported_at_once(project, monkeypatch, capsys):
    err = _main_fails(project, monkeypatch, capsys, "optimizer.lr=0", "epochs=-5", "log_every=0")
    assert "optimizer.lr" in err and "epochs" in err and "log_every" in err


def test_reliability_unknown_feature_column(project, monkeypatch, capsys):
    err = _main_fails(
        project, monkeypatch, capsys, "+experiment=seed_linear", "dataset.features=[nope]"
    )
    assert "regression.csv" in err and "'nope'" in err and "available columns: mpg" in err


def test_reliability_metrics_file_not_written_on_input_error(project, monkeypatch, capsys):
    _main_fails(project, monkeypatch, capsys, "epochs=0", "output.metrics_path=out/metrics.json")
    assert not (project / "out").exists()
