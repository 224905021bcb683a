"""Per-run plots: drawing on a thread's shared Agg renderer, and redrawing a kept figure
with a new run's values, give the same PNG bytes as a new figure on a renderer of its
own (artifacts._shared_renderer, artifacts._reused)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gradtrack import artifacts


def _plots() -> list:
    """Plots of different kinds, sizes and values (log and linear axes, 1 and 6 features,
    bars changing sign, a missing baseline, a NaN in a curve); each takes its path."""
    steps = np.arange(300)
    falling = 0.5 + 600 * 0.8**steps  # a log axis (mathtext labels)
    flat = 5 + 0.01 * np.sin(steps)  # a linear one
    holed = falling[:80].copy()
    holed[5] = np.nan
    names = ["cylinders", "displacement", "horsepower", "weight", "acceleration", "year"]
    coef = np.array([-0.3, 0.02, -0.01, -0.006, 0.1, 0.75])
    one, sd = names[:1], np.array([1.7])
    quadratic = 3 - 2 * 0.7 ** np.arange(20)
    return [
        lambda p: artifacts.loss_curve(falling, p, "linear · numpy · sgd"),
        lambda p: artifacts.coefficient_chart(one, coef[:1], 42.9, coef[:1] * 1.01, 42.8, p, sd),
        lambda p: artifacts.loss_curve(flat, p, "mlp · torch · adam"),
        lambda p: artifacts.coefficient_chart(names, coef, -17.2, None, None, p),
        lambda p: artifacts.trajectory(lambda x: (x - 3) ** 2, quadratic, 1.0, 3.0, p, "q"),
        lambda p: artifacts.loss_curve(falling[:40] * 3, p, "logistic · numpy · sgd"),
        lambda p: artifacts.coefficient_chart(one, -40 * coef[:1], 3.1, coef[:1], -2.0, p, sd),
        lambda p: artifacts.loss_curve(holed, p, "with a hole"),
        lambda p: artifacts.coefficient_chart(names, coef[::-1], 1e6, None, None, p),
        lambda p: artifacts.loss_curve(-flat, p, "negative"),
        lambda p: artifacts.coefficient_chart(["weight"], coef[1:2], 0.0, coef[1:2], 0.1, p, sd),
        lambda p: artifacts.coefficient_chart(names, coef, 2.0, None, None, p, coef + 1),
    ]


def _render(plots, out: Path, fresh: bool) -> list[bytes]:
    got = []
    for i, plot in enumerate(plots):
        if fresh:  # a new figure on a renderer of its own, as a plain Figure would
            vars(artifacts._renderers).clear()
            vars(artifacts._figures).clear()
        path = out / f"{i}.png"
        plot(path)
        got.append(path.read_bytes())
    return got


def test_kept_figures_and_renderers_draw_the_same_pngs_as_new_ones(tmp_path):
    shared_dir, fresh_dir = tmp_path / "shared", tmp_path / "fresh"
    shared_dir.mkdir()
    fresh_dir.mkdir()
    # Twice in a row and interleaved: each plot drawn after others of other sizes/scales.
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 2, 0, 3, 1, 5, 11, 4, 10, 9, 6, 7, 8, 1]
    plots = _plots()
    assert artifacts.wants_log_axis(0.5 + 600 * 0.8 ** np.arange(300))  # as plot #0
    shared = _render([plots[i] for i in order], shared_dir, fresh=False)
    fresh = _render([plots[i] for i in order], fresh_dir, fresh=True)
    assert all(png.startswith(b"\x89PNG") for png in shared)
    for i, (a, b) in enumerate(zip(shared, fresh)):
        assert a == b, f"plot #{order[i]} (draw {i}) differs from a new figure's"
    assert len(vars(artifacts._renderers)["by_size"]) <= artifacts.SHARED_RENDERERS
    assert len(vars(artifacts._figures)["by_key"]) <= artifacts.REUSED_FIGURES


def test_threads_draw_on_their_own_renderers(tmp_path):
    """Concurrent jobs in one process (joblib threads) never share a renderer or figure."""
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    reference = _render(_plots(), ref_dir, fresh=True)

    def job(k: int) -> list[bytes]:
        out = tmp_path / f"t{k}"
        out.mkdir()
        return [got for _ in range(2) for got in _render(_plots(), out, fresh=False)]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(job, range(3)))
    for got in results:
        assert got == reference * 2


def test_a_kept_figure_is_not_reused_under_other_matplotlib_settings(tmp_path):
    """A notebook that changes rcParams between runs gets plots in the new style."""
    import matplotlib

    plots = _plots()
    order = [0, 3, 1]
    _render([plots[i] for i in order], tmp_path, fresh=False)  # kept, default style
    style = {"lines.linewidth": 4.0, "font.size": 14.0, "axes.grid": True}
    with matplotlib.rc_context(style):
        restyled = _render([plots[i] for i in order], tmp_path, fresh=False)
        fresh = _render([plots[i] for i in order], tmp_path, fresh=True)
    assert restyled == fresh
