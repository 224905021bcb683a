"""What a person sees in the MLflow UI: names, sources, params, models, the registry.

Real SQLite stores in temp projects; the CLI runs in a subprocess where its stderr
matters (no MLflow warnings on a normal run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import compose, mlflow_runs, pixels_of, run_cli


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


# -- plumbing: one definition -------------------------------------------------------


def test_result_params_keep_what_changes_the_result_and_drop_plumbing():
    from omegaconf import OmegaConf

    from gradtrack.config import is_plumbing, result_params

    cfg = compose("+experiment=fit_linear", "tracking.root=/tmp/x", "paths.root=/tmp/p")
    params = result_params(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    assert params["optimizer.lr"] == 0.3 and params["epochs"] == 400 and params["seed"] == 0
    assert params["dataset.standardize"] is True and params["checks.baseline_rtol"] == 1e-6
    leaked = [
        k
        for k in params
        if k.startswith(("tracking.", "paths.", "output.", "hydra."))
        or k in ("progress_min_epochs", "log_every", "description", "experiment_name")
    ]
    assert leaked == []
    assert len(params) < 45
    # Prefixes match whole components only; plain keys match exactly.
    assert is_plumbing("tracking.flush_every") and is_plumbing("log_every")
    assert not is_plumbing("log_every_other") and not is_plumbing("trackingx")
    assert result_params({"a": {"b": 1}, "paths": {"root": "/x"}}) == {"a.b": 1}


# -- names -----------------------------------------------------------------------


def test_run_names_say_experiment_backend_and_the_distinguishing_overrides(monkeypatch):
    from gradtrack.tracking.naming import ENV_SWEPT, run_name

    monkeypatch.delenv(ENV_SWEPT, raising=False)

    def name(*overrides):
        return run_name(compose(*overrides), list(overrides))

    assert name("+experiment=seed_backprop") == "seed_backprop · numpy"
    assert name("+experiment=seed_backprop_scaled") == "seed_backprop_scaled · numpy"
    assert (
        name("+experiment=fit_linear", "backend=torch", "optimizer.lr=0.1", "tracking.root=/t")
        == "fit_linear · torch · lr=0.1"
    )
    assert name("model=linear", "dataset=auto_mpg", "optimizer=adam") == (
        "linear · auto_mpg · numpy · adam"
    )
    assert name("+experiment=fit_linear", "tracking.run_name=mine") == "mine"
    # A sweep child: only the swept values.
    monkeypatch.setenv(ENV_SWEPT, "optimizer.lr")
    assert name("+experiment=fit_linear", "epochs=9", "optimizer.lr=0.1") == (
        "fit_linear · numpy · lr=0.1"
    )


def test_sweep_labels_are_the_swept_values():
    from gradtrack.sweep import job_label, swept_keys

    jobs = [
        ["+experiment=fit_linear", f"backend={b}", f"optimizer.lr={lr}", "epochs=50"]
        for b in ("numpy", "torch")
        for lr in (0.1, 0.2)
    ]
    keys = swept_keys(jobs)
    assert keys == ["backend", "optimizer.lr"]
    assert job_label(" ".join(jobs[3]), keys) == "torch · lr=0.2"


def test_overlay_of_64_jobs_names_the_best_ten_and_greys_the_rest(tmp_path):
    from PIL import Image

    from gradtrack.artifacts import loss_overlay

    steps = np.arange(100)
    curves = {f"lr={i / 100:g}": (steps, 10.0 / (1 + i + steps)) for i in range(64)}
    order = [f"lr={i / 100:g}" for i in (5, 3, 60, 0, 1, 2, 4, 6, 7, 8, 9)]
    legend = loss_overlay(curves, tmp_path / "o.png", "64 jobs", order=order)
    assert legend[:3] == ["1. lr=0.05", "2. lr=0.03", "3. lr=0.6"]
    assert len(legend) == 11 and legend[-1] == "54 others"
    # Without an order: the lowest final losses (here the largest i) first.
    legend = loss_overlay(curves, tmp_path / "d.png", "64 jobs")
    assert legend[:2] == ["1. lr=0.63", "2. lr=0.62"] and legend[-1] == "54 others"
    w, h = Image.open(tmp_path / "o.png").size
    assert w > 1.4 * h  # the legend sits beside the plot instead of covering it


def test_overlay_of_a_few_runs_names_each_in_the_given_order(tmp_path):
    from gradtrack.artifacts import loss_overlay

    steps = np.arange(10)
    curves = {name: (steps, 1.0 / (1 + k + steps)) for k, name in enumerate("cab")}
    assert loss_overlay(curves, tmp_path / "o.png", "3 runs") == ["c", "a", "b"]


def _converging_and_diverged():
    steps = np.arange(200)
    ok = 594.0 * np.exp(-steps / 8.0) + 24.0  # a finished job's loss: 618 -> 24
    diverged = 600.0 * 10.0 ** (12.5 * np.arange(25))  # lr=1e6: ~1.7e305 at step 24
    return {"lr=0.05": (steps, ok), "lr=1000000.0 [FAILED]": (steps[:25], diverged)}


def test_a_diverged_job_leaves_the_sweep_overlay_at_the_top_and_the_others_stay_drawn(
    tmp_path,
):
    """A log axis padded past the largest float fell back to 1..10: an empty plot."""
    import warnings

    from gradtrack.artifacts import _COLORS, loss_overlay

    curves = _converging_and_diverged()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of the overflow
        loss_overlay(curves, tmp_path / "sweep.png", "sweep", scale_from=["lr=0.05"])
        loss_overlay(curves, tmp_path / "report.png", "report")  # every curve sets the axis
    # The finished job's curve is drawn across the plot (a legend line is ~30 pixels),
    # falling over most of its height when it alone sets the axis.
    pixels, height = pixels_of(tmp_path / "sweep.png", _COLORS[0])
    assert pixels > 500 and height > 200
    pixels, height = pixels_of(tmp_path / "report.png", _COLORS[0])
    assert pixels > 300


def test_loss_limits_are_matplotlibs_own_unless_those_would_overflow():
    from matplotlib.figure import Figure

    from gradtrack.artifacts import AXIS_LIMIT, loss_limits

    steps = np.arange(200)
    for losses, log in (
        (594.0 * np.exp(-steps / 8.0) + 24.0, False),
        (10.0 / (1 + steps), True),
        (np.full(200, 3.0), False),
    ):
        ax = Figure().add_subplot()
        ax.plot(steps, losses)
        if log:
            ax.set_yscale("log")
        ax.autoscale_view()
        assert loss_limits([losses], log) == pytest.approx(ax.get_ylim(), rel=1e-9)
    diverged = _converging_and_diverged()["lr=1000000.0 [FAILED]"][1]
    lo, hi = loss_limits([diverged], log=True)
    assert 0 < lo < 600 and hi == pytest.approx(AXIS_LIMIT)
    assert loss_limits([[np.nan, np.inf]], log=False) is None


def test_a_diverged_runs_loss_curve_is_drawn_and_the_next_run_autoscales_again(tmp_path):
    """A single run's loss_curve.png of a diverged run (~1e305) is drawn, without the
    overflow warning; its fixed y-limits do not stick to the figure the next run reuses."""
    import threading
    import warnings

    from PIL import Image

    from gradtrack.artifacts import loss_curve

    curves = _converging_and_diverged()
    ok, diverged = curves["lr=0.05"][1], curves["lr=1000000.0 [FAILED]"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_curve(diverged, tmp_path / "diverged.png", "diverged")
        loss_curve(ok, tmp_path / "after.png", "ok")  # reuses this thread's figure
    pixels, height = pixels_of(tmp_path / "diverged.png", "#1f77b4")
    assert pixels > 300 and height > 200  # the curve climbs most of the plot
    fresh = threading.Thread(target=loss_curve, args=(ok, tmp_path / "fresh.png", "ok"))
    fresh.start()  # another thread: a figure of its own, built new
    fresh.join()
    after, new = (np.asarray(Image.open(tmp_path / n)) for n in ("after.png", "fresh.png"))
    assert np.array_equal(after, new)


def test_long_runs_that_settle_early_get_a_log_step_axis():
    from gradtrack.artifacts import wants_log_steps
    from gradtrack.tracking.budget import kept_steps

    def settling(n):  # falls 618 -> 24 in the first ~50 steps, then flat
        return 594.0 * np.exp(-np.arange(n) / 8.0) + 24.0

    assert not wants_log_steps(np.arange(400), settling(400), log_y=False)  # short
    steps = kept_steps(1_000_000, 1000)  # a budgeted history: true step numbers
    assert wants_log_steps(steps, settling(1_000_000)[steps], log_y=False)
    assert not wants_log_steps(steps, 1e6 - steps, log_y=False)  # falls all along
    growth = 600.0 * 10.0 ** (steps / 1e4)  # diverging: most of its rise comes late
    assert not wants_log_steps(steps, growth, log_y=True)
    assert not wants_log_steps(steps, np.full(steps.size, 3.0), log_y=False)  # flat


def test_a_million_step_loss_curve_shows_its_fall_not_a_vertical_line(tmp_path, monkeypatch):
    """On a linear step axis a curve that settles in 50 of 1e6 steps was a vertical line
    at step 0: the fall now spreads over the plot's width, in a run's loss_curve.png and
    a sweep's overlay; a short run stays linear."""
    from PIL import Image

    from gradtrack import artifacts
    from gradtrack.artifacts import loss_curve, loss_overlay
    from gradtrack.tracking.budget import kept_steps

    step_axes = []  # (scale, limits) of each loss_curve's step axis
    real = artifacts.save_png

    def keep(fig, path, **kw):
        step_axes.append((fig.axes[0].get_xscale(), fig.axes[0].get_xlim()))
        return real(fig, path, **kw)

    monkeypatch.setattr(artifacts, "save_png", keep)

    def fall_width(png):  # columns where the curve is in the plot's upper half
        rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float) / 255
        hit = np.abs(rgb - np.array([0.122, 0.467, 0.706])).max(axis=2) < 0.05
        return int(hit[: hit.shape[0] // 2].any(axis=0).sum()), hit.shape[1]

    long = 594.0 * np.exp(-np.arange(1_000_000) / 8.0) + 24.0
    loss_curve(long, tmp_path / "long.png", "1e6 steps")
    width, image = fall_width(tmp_path / "long.png")
    assert width > image // 10  # steps 0..13 of 1e6: on a linear axis 1 or 2 columns
    loss_curve(long[:400], tmp_path / "short.png", "400 steps")  # the same figure, reused
    width, _ = fall_width(tmp_path / "short.png")
    assert width < image // 20  # linear again: steps 0..13 of 400 (symlog: a third)
    (log_scale, (left, right)), (lin_scale, (lin_left, lin_right)) = step_axes
    assert (log_scale, left) == ("symlog", 0) and right >= 999_999  # no negative steps
    assert lin_scale == "linear" and lin_left < 0 and 399 <= lin_right < 500  # autoscaled
    steps = kept_steps(len(long), 1000)  # a sweep's overlay draws the stored points
    loss_overlay({"lr=0.1": (steps, long[steps])}, tmp_path / "sweep.png", "sweep")
    width, image = fall_width(tmp_path / "sweep.png")
    assert width > image // 10


# -- ranking -----------------------------------------------------------------------


def _row(i, value, status="FINISHED", baseline=None):
    from gradtrack.sweep import ChildRow

    m = {"final_loss": value}
    if baseline is not None:
        m["baseline/pass"] = baseline
    return ChildRow(f"job={i}", f"run{i}", status, m)


def test_best_child_ranks_finished_then_baseline_then_metric_and_reports_ties():
    from gradtrack.sweep import best_sentence, rank

    rows = [
        _row(0, 0.5, status="FAILED"),
        _row(1, 0.9, baseline=0.0),  # lowest finished loss, but failed its baseline
        _row(2, 1.0, baseline=1.0),
        _row(3, 1.0 * (1 + 1e-12), baseline=1.0),  # a tie within 1e-9
        _row(4, 1.1, baseline=1.0),
    ]
    r = rank(rows, "final_loss")
    assert r.best.overrides == "job=2"
    assert [t.overrides for t in r.tied] == ["job=3"]
    text = best_sentence(r, "final_loss")
    assert "tied within relative 1e-09" in text and "earliest job" in text
    # The later of two equal jobs never wins by a rounding difference.
    r = rank([_row(0, 1.0 + 1e-13), _row(1, 1.0)], "final_loss")
    assert r.best.overrides == "job=0" and [t.overrides for t in r.tied] == ["job=1"]
    # A clear winner has no ties.
    assert rank([_row(0, 2.0), _row(1, 1.0)], "final_loss").tied == []
    assert rank([_row(0, math.nan), _row(1, 1.0, status="KILLED")], "final_loss").best is None


def test_the_last_line_of_a_sweep_names_a_few_tied_and_failed_jobs_at_any_size():
    from gradtrack.sweep import NAMED_AT_MOST, ChildRow, rank, summary_line

    def line(jobs: int) -> str:
        def row(i, loss, status="FINISHED"):
            return ChildRow(f"+experiment=e paths.root=/p optimizer.lr={i}", f"r{i}", status, loss)

        rows = [row(i, {"final_loss": 1.0}) for i in range(jobs)]  # all converge together
        rows += [row(jobs + i, {}, "FAILED") for i in range(jobs // 2)]
        rows.append(row(10 * jobs, {}, "KILLED"))
        return summary_line(rows, rank(rows, "final_loss"), "final_loss", ["optimizer.lr"])

    small, big = line(64), line(640)
    assert small.startswith("gradtrack sweep: 64/97 jobs finished, 32 failed (lr=64; lr=65; ")
    assert "; and 27 more, listed in sweep_summary.md), 1 stopped (lr=640);" in small
    assert (
        "tied within relative 1e-09 with 63 other job(s) (lr=1; lr=2; lr=3; lr=4; lr=5; " in small
    )
    assert "and 58 more, listed in sweep_summary.md): chosen as the earliest job" in small
    # the best job is named in full: its overrides reproduce it
    assert "best final_loss=1 (+experiment=e paths.root=/p optimizer.lr=0, run r0)" in small
    # five failed, the stopped one, five tied and the best
    assert big.count("lr=") == small.count("lr=") == 2 * NAMED_AT_MOST + 2
    assert len(big) - len(small) < 40  # only the counts grew
    # a few are all named
    assert line(2).endswith("(lr=1): chosen as the earliest job")


def test_the_last_line_tells_failed_stopped_and_never_run_jobs_apart():
    """After Ctrl-C, the jobs it stopped and those it kept from starting are not failures."""
    from gradtrack.sweep import ChildRow, _markdown, rank, summary_line
    from gradtrack.tracking.reuse import sweep_counts

    statuses = ["FINISHED", "KILLED", "KILLED", "NO_RUN", "FAILED", "RUNNING", "NO_RUN"]
    rows = [
        ChildRow(f"optimizer.lr={i}", None if s == "NO_RUN" else f"r{i}", s, {})
        for i, s in enumerate(statuses)
    ]
    line = summary_line(rows, rank(rows, "final_loss"), "final_loss", ["optimizer.lr"])
    assert line == (
        "gradtrack sweep: 1/7 jobs finished, 1 failed (lr=4), 2 stopped (lr=1; lr=2), "
        "1 still running (lr=5), 2 not run (lr=3; lr=6)"
    )
    counts = sweep_counts(rows, invocation=None)
    assert counts == {"reused": 0, "run": 1, "failed": 2, "stopped": 2, "not_run": 2}
    md = _markdown("| table |", rows, rank(rows, "final_loss"), "final_loss")
    assert md.startswith(
        "# Sweep summary (7 jobs: 1 finished, 1 failed, 2 stopped, 1 still running, 2 not run)"
    )
    assert md.count("\n- `optimizer.lr=") == 6  # every unfinished job, with its status


# -- a real run, through the CLI -------------------------------------------------------


def _mlflow_warnings(stderr: str) -> list[str]:
    """Lines of Python/MLflow warnings (gradtrack's own convergence note excluded)."""
    return [
        line
        for line in stderr.splitlines()
        if not line.startswith("gradtrack:")
        and any(w in line.lower() for w in ("warning", "pickle", "deprecat"))
    ]


def test_tracked_run_has_source_description_model_and_no_mlflow_warnings(project):
    import mlflow.pyfunc

    out = run_cli(["+experiment=fit_logistic", "epochs=100"], project)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _mlflow_warnings(out.stderr) == [], out.stderr
    [run] = mlflow_runs(project)
    t = run.data.tags
    assert len(t["mlflow.source.git.commit"]) == 40
    assert t["mlflow.source.type"] == "LOCAL" and t["mlflow.user"] == run.info.user_id
    assert "Pima" in t["mlflow.note.content"]
    assert "gradtrack +experiment=fit_logistic epochs=100" in t["mlflow.note.content"]
    assert not [k for k in run.data.params if k.startswith(("tracking.", "paths."))]
    client = _client(project)
    [lm] = client.search_logged_models([run.info.experiment_id])
    assert lm.source_run_id == run.info.run_id and lm.name == "fit_logistic"
    os.environ["MLFLOW_TRACKING_URI"] = client.tracking_uri
    try:
        model = mlflow.pyfunc.load_model(f"models:/{lm.model_id}")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    coef = pd.read_csv(client.download_artifacts(run.info.run_id, "coefficients.csv", str(project)))
    w = coef.set_index("term")["learned"]
    X = pd.read_csv(project / "data" / "classification.csv")[w.index[:-1]].astype(float)
    want = 1.0 / (1.0 + np.exp(-(X.to_numpy() @ w.to_numpy()[:-1] + w["intercept"])))
    np.testing.assert_allclose(model.predict(X), want, rtol=1e-12)


@pytest.mark.slow  # four CLI jobs in one process: ~40 s on two busy cores
def test_sweep_names_children_by_swept_values_and_registers_the_champion(project):
    import mlflow.pyfunc

    out = run_cli(
        [
            "-m",
            "+experiment=fit_linear_1d",
            "epochs=100",
            "optimizer.lr=0.1,0.05",
            "seed=0,1",
            "tracking.register_best=mpg",
        ],
        project,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert _mlflow_warnings(out.stderr) == [], out.stderr
    runs = mlflow_runs(project)
    [parent] = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r is not parent]
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(
        f"fit_linear_1d · numpy · lr={lr} · seed={s}" for lr in (0.1, 0.05) for s in (0, 1)
    )
    assert parent.info.run_name == "sweep · fit_linear_1d · lr, seed · 4 jobs"
    assert parent.data.tags["baseline_passed_jobs"].endswith("of 4")
    # The seeds converge to the same loss at each lr: reported as a tie, earliest job.
    assert "tied within relative 1e-09" in parent.data.tags["best_choice"]
    client = _client(project)
    assert len(client.search_logged_models([parent.info.experiment_id])) == 4
    mv = client.get_model_version_by_alias("mpg", "champion")
    assert mv.run_id == parent.data.tags["best_run_id"]
    os.environ["MLFLOW_TRACKING_URI"] = client.tracking_uri
    try:
        model = mlflow.pyfunc.load_model("models:/mpg@champion")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    X = pd.DataFrame({"cylinders": [4.0, 8.0]})
    pred = np.asarray(model.predict(X))
    assert pred[0] > pred[1] > 0  # fewer cylinders, more miles per gallon
