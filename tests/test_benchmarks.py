"""Smoke tests for benchmarks/: the suite's pieces run and report what run.py tabulates.

Nothing here asserts a timing; the figures come from `make bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import measure
        import run

        yield measure, run
    finally:
        sys.path.remove(str(BENCH))


def test_per_step_reports_each_backend_with_problem_shape(bench, project):
    measure, _ = bench
    out = measure.per_step(
        problems=("fit_linear", "fit_logistic"),
        backends=[("numpy", "numpy", False)],
        steps=3,
        repeats=1,
        root=project,
    )
    lin, log = out["fit_linear"]["numpy"], out["fit_logistic"]["numpy"]
    assert (lin["rows"], lin["features"]) == (392, 7)  # auto_mpg, all features
    assert (log["rows"], log["features"]) == (768, 8)  # pima, all features
    assert lin["us_per_step"] > 0 and lin["steps_timed"] == 3


def test_scaling_compares_step_with_two_matvecs(bench):
    measure, _ = bench
    out = measure.scaling(sizes=(200, 2000), d=5, target_seconds=0.01, repeats=1)
    assert sorted(out) == ["200", "2000"]
    big = out["2000"]
    assert big["step_over_matvecs"] == pytest.approx(big["step_ms"] / big["two_matvecs_ms"])
    assert big["rows_vs_prev"] == 10 and big["growth_vs_prev"] > 0


def test_ratios_flag_missed_targets_and_table_lists_them(bench):
    _, run = bench
    fig = {
        "per_step": {
            "fit_linear": {
                "numpy": {"us_per_step": 10.0, "us_per_step_median": 11.0},
                "torch": {"us_per_step": 90.0, "us_per_step_median": 95.0},
                "tensorflow": {"us_per_step": 15.0, "us_per_step_median": 16.0},
            }
        },
        "sweep": {
            "sequential_s": 10.0,
            "joblib_s": 6.0,
            "n_jobs": 2,
            "parallel_over_sequential": 0.6,
        },
    }
    rat = run.ratios(fig)
    assert rat["fit_linear/torch_over_numpy"]["ok"] is False  # 9x > 8x
    assert rat["fit_linear/tensorflow_compiled_over_numpy"]["ok"] is True
    assert rat["sweep/joblib_over_sequential"] == {
        "value": 0.6,
        "target": 0.65,
        "op": "<=",
        "ok": True,
    }
    text = run.table(fig, rat)
    assert "MISSED" in text and "fit_linear/torch_over_numpy" in text
