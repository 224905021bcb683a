"""Per-run plots: drawing on a thread's shared Agg renderer gives the same PNG bytes as
drawing each figure on a renderer of its own (artifacts._shared_renderer)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gradtrack import artifacts


def _plots(out: Path) -> list:
    """Plots of different kinds and sizes (log and linear axes, 1 and 6 features)."""
    steps = np.arange(300)
    falling = 30 + 600 * 0.8**steps  # a log axis (mathtext labels)
    flat = 5 + 0.01 * np.sin(steps)  # a linear one
    names = ["cylinders", "displacement", "horsepower", "weight", "acceleration", "year"]
    coef = np.array([-0.3, 0.02, -0.01, -0.006, 0.1, 0.75])
    return [
        lambda: artifacts.loss_curve(falling, out / "a.png", "linear · numpy · sgd"),
        lambda: artifacts.coefficient_chart(
            names[:1], coef[:1], 42.9, coef[:1] * 1.01, 42.8, out / "b.png", np.array([1.7])
        ),
        lambda: artifacts.loss_curve(flat, out / "c.png", "mlp · torch · adam"),
        lambda: artifacts.coefficient_chart(names, coef, -17.2, None, None, out / "d.png"),
        lambda: artifacts.trajectory(
            lambda x: (x - 3) ** 2, 3 - 2 * 0.7 ** np.arange(20), 1.0, 3.0, out / "e.png", "q"
        ),
        lambda: artifacts.loss_curve(falling[:40] * 3, out / "f.png", "logistic · numpy · sgd"),
    ]


def _render(plots, out: Path, fresh: bool) -> list[bytes]:
    got = []
    for plot in plots:
        if fresh:  # a renderer of its own, as a plain FigureCanvasAgg would make
            vars(artifacts._renderers).clear()
        plot()
        got.append(max(out.glob("*.png"), key=lambda p: p.stat().st_mtime_ns).read_bytes())
    return got


def test_shared_renderer_draws_the_same_pngs_as_a_fresh_one(tmp_path):
    shared_dir, fresh_dir = tmp_path / "shared", tmp_path / "fresh"
    shared_dir.mkdir()
    fresh_dir.mkdir()
    # Twice in a row and interleaved: each plot drawn after others of other sizes/scales.
    order = [0, 1, 2, 3, 4, 5, 2, 0, 3, 1, 5, 4]
    plots_s, plots_f = _plots(shared_dir), _plots(fresh_dir)
    shared = _render([plots_s[i] for i in order], shared_dir, fresh=False)
    fresh = _render([plots_f[i] for i in order], fresh_dir, fresh=True)
    assert all(png.startswith(b"\x89PNG") for png in shared)
    for i, (a, b) in enumerate(zip(shared, fresh)):
        assert a == b, f"plot #{order[i]} (draw {i}) differs on the shared renderer"
    assert len(vars(artifacts._renderers)["by_size"]) <= artifacts.SHARED_RENDERERS


def test_threads_draw_on_their_own_renderers(tmp_path):
    """Concurrent jobs in one process (joblib threads) never share a renderer."""
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    reference = _render(_plots(ref_dir), ref_dir, fresh=True)

    def job(k: int) -> list[bytes]:
        out = tmp_path / f"t{k}"
        out.mkdir()
        return [got for _ in range(3) for got in _render(_plots(out), out, fresh=False)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(job, range(4)))
    for got in results:
        assert got == reference * 3
