"""Cross-backend parity: same experiment, seed and initial parameters → same losses.

numpy, PyTorch and TensorFlow evaluate the same forward expression and the same
optimizer arithmetic (gradtrack.optimizers), so their loss trajectories agree to
1e-9 relative in float64 and 1e-4 in float32 over the whole run.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose, run_cli

# (experiment, overrides): full batch, per-sample SGD, shuffled minibatches,
# momentum, Adam, gradient clipping.
CASES = [
    ("fit_linear", ()),  # momentum, 400 steps
    ("fit_logistic", ()),  # sgd, 500 steps
    ("seed_backprop_scaled", ()),  # per-sample SGD, 200 epochs × 15 updates
    (
        "fit_logistic",
        ("optimizer.batch_size=100", "optimizer.shuffle=true", "optimizer.lr=0.5", "epochs=40"),
    ),
    ("fit_logistic", ("optimizer=momentum", "optimizer.lr=0.5", "epochs=200")),
    ("fit_linear", ("optimizer=adam", "optimizer.lr=0.05", "epochs=300")),
    pytest.param(
        "seed_backprop_scaled",
        ("optimizer=adam", "optimizer.lr=0.01", "optimizer.batch_size=4", "optimizer.shuffle=true"),
        marks=pytest.mark.slow,
    ),
    pytest.param("seed_linear", ("optimizer.clip_norm=1.0", "epochs=200"), marks=pytest.mark.slow),
]
TOL = {"float64": 1e-9, "float32": 1e-4}


def _rows(project, exp, overrides, dtype):
    from gradtrack.compare import compare, run_backend

    cfg = compose(
        f"+experiment={exp}", f"paths.root={project}", f"backend.dtype={dtype}", *overrides
    )
    runs = [run_backend(cfg, b) for b in ("numpy", "torch", "tensorflow")]
    assert all(len(r.losses) == cfg.epochs for r in runs)
    return runs, compare(runs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("exp", "overrides"), CASES)
def test_loss_trajectories_agree_across_backends(project, exp, overrides, dtype):
    runs, rows = _rows(project, exp, overrides, dtype)
    for r in rows:
        assert r.max_loss_rel_diff <= TOL[dtype], (r.backend, r.max_loss_rel_diff)
    # and the runs really trained (a constant trajectory would agree trivially)
    assert runs[0].losses[-1] < runs[0].losses[0]


@pytest.mark.slow
def test_shuffled_minibatches_use_the_same_rows_on_every_backend(project):
    """A different row order would change the losses well beyond float64 noise."""
    shuffled = (
        "optimizer.batch_size=100",
        "optimizer.shuffle=true",
        "optimizer.lr=0.5",
        "epochs=5",
    )
    ordered = (
        "optimizer.batch_size=100",
        "optimizer.shuffle=false",
        "optimizer.lr=0.5",
        "epochs=5",
    )
    a, _ = _rows(project, "fit_logistic", shuffled, "float64")
    b, _ = _rows(project, "fit_logistic", ordered, "float64")
    assert np.max(np.abs(a[0].losses[1:] - b[0].losses[1:])) > 1e-6


def test_parity_verdict_fails_beyond_tolerance():
    from gradtrack.compare import BackendRun, compare, parity_holds

    base = np.linspace(1.0, 0.5, 10)
    ref = BackendRun("numpy", base, np.zeros(2), 1.0)
    near = BackendRun("torch", base * (1 + 1e-10), np.zeros(2), 1.0)
    off = BackendRun("tensorflow", base * (1 + 1e-8), np.zeros(2), 1.0)
    assert parity_holds(compare([ref, near]), "float64")[0]
    ok, worst = parity_holds(compare([ref, near, off]), "float64")
    assert not ok and worst == pytest.approx(1e-8, rel=1e-3)
    assert parity_holds(compare([ref, near, off]), "float32")[0]


def test_compare_command_prints_the_table_and_verdict(project):
    out = run_cli(["+experiment=fit_logistic_1d"], project, module="gradtrack.compare")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("backend"))
    assert "final loss" in lines[header] and "epochs/s" in lines[header]
    rows = [ln.split() for ln in lines[header + 2 : header + 5]]
    assert [r[0] for r in rows] == ["numpy", "torch", "tensorflow"]
    finals = [float(r[1]) for r in rows]
    assert finals[0] == pytest.approx(0.6225324763230818, rel=1e-12)
    assert max(float(r[3]) for r in rows) <= 1e-9
    assert "parity holds" in out.stdout and "1e-09 for float64" in out.stdout
    assert not (project / "mlruns").exists()  # tracking is off


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["+experiment=no_such_experiment"], "Could not find 'experiment/no_such_experiment'"),
        (["model.no_such_key=1"], "model.no_such_key"),
        (["+experiment=fit_linear", "optimizer.lr=-1"], "optimizer.lr: must be > 0"),
        (["--frob"], "unknown option '--frob'"),
    ],
)
def test_compare_command_rejects_bad_input_with_exit_2(project, args, needle):
    out = run_cli(args, project, module="gradtrack.compare", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("gradtrack-compare: error:") and needle in out.stderr
    assert "backend" not in out.stdout  # nothing ran
