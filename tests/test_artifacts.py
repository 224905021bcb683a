"""Per-run plots: drawing on a thread's shared Agg renderer, and redrawing a kept figure
with a new run's values, give the same PNG bytes as a new figure on a renderer of its
own (plot_render._shared_renderer, plot_render.reused_figure); with the text-caching
renderer, the title placed without measuring and the PNG writer, the same pixels as
plain matplotlib's savefig (plot_render._make_renderer_class, save_png, png_bytes)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gradtrack import artifacts, plot_render


@pytest.fixture(autouse=True)
def _no_kept_figures_or_renderers():
    """Each test starts and ends without this thread's kept figures and renderers (a
    test that draws as plain matplotlib leaves plain renderers behind)."""
    vars(plot_render._renderers).clear()
    vars(plot_render._figures).clear()
    yield
    vars(plot_render._renderers).clear()
    vars(plot_render._figures).clear()


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
            vars(plot_render._renderers).clear()
            vars(plot_render._figures).clear()
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
    assert len(vars(plot_render._renderers)["by_size"]) <= plot_render.SHARED_RENDERERS
    assert len(vars(plot_render._figures)["by_key"]) <= plot_render.REUSED_FIGURES


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


# --- Cheaper drawing and encoding (plot_render.TextCachingRendererAgg, save_png):
# the pixels must stay those plain matplotlib draws, savefig's PNG, for every kind of plot.


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("RGBA"))


def test_the_pixel_tests_reference_is_plain_matplotlib(tmp_path, monkeypatch):
    """plot_render.plain_matplotlib, the reference the pixel tests compare with, really
    draws through savefig on a plain RendererAgg; otherwise they would compare the
    fast path with itself."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

    renderers = []
    savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        renderers.append(type(fig.canvas.get_renderer()))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    losses = np.geomspace(10.0, 0.01, 50)
    with plot_render.plain_matplotlib():
        artifacts.loss_curve(losses, tmp_path / "plain.png", "t")
    assert renderers == [RendererAgg]
    renderers.clear()
    artifacts.loss_curve(losses, tmp_path / "fast.png", "t")
    assert renderers == []  # the fast path writes its own PNG


def _varied_plots() -> list:
    """More shapes than _plots: long and short curves, an offset axis, many features,
    bars far from zero, long titles (each takes its path)."""
    rng = np.random.default_rng(7)
    long = 3 + 900 * np.exp(-np.arange(20_000) / 700.0) + 0.3 * rng.random(20_000)
    names12 = [f"feature_{i}" for i in range(12)]
    coef12 = rng.normal(0, 3, 12)
    tilted = 1e4 + 1e-3 * np.cos(np.arange(50))  # an offset text on the y axis
    return [
        lambda p: artifacts.loss_curve(long, p, "long · " + "very " * 12 + "long title"),
        lambda p: artifacts.loss_curve(np.array([2.0]), p, "one step"),
        lambda p: artifacts.loss_curve(np.array([5.0, 1.0]), p, "two steps"),
        lambda p: artifacts.loss_curve(tilted, p, "offset axis"),
        # the offset text in the title's way: matplotlib moves the title up
        lambda p: artifacts.loss_curve(tilted, p, "an offset axis and a title " * 3),
        lambda p: artifacts.loss_curve(1e-8 * 0.5 ** np.arange(60), p, "tiny and falling"),
        lambda p: artifacts.coefficient_chart(names12, coef12, -0.5, coef12 + 0.2, -0.4, p),
        lambda p: artifacts.coefficient_chart(
            names12, 1e5 + coef12, 3.3e7, None, None, p, np.full(12, 2.5)
        ),
        lambda p: artifacts.coefficient_chart(["a"], np.array([1e-9]), 0.0, None, None, p),
    ]


def _assert_plain_matplotlibs_pixels(plots, order, tmp_path, style=None):
    import matplotlib

    with matplotlib.rc_context(style or {}):
        fast_dir, plain_dir = tmp_path / "fast", tmp_path / "plain"
        fast_dir.mkdir()
        plain_dir.mkdir()
        _render([plots[i] for i in order], fast_dir, fresh=False)
        with plot_render.plain_matplotlib():
            _render([plots[i] for i in order], plain_dir, fresh=True)
    for i, k in enumerate(order):
        got, want = _pixels(fast_dir / f"{i}.png"), _pixels(plain_dir / f"{i}.png")
        assert got.shape == want.shape, f"plot #{k}: size {got.shape} != {want.shape}"
        bad = np.argwhere((got != want).any(axis=2))
        assert bad.size == 0, f"plot #{k} (draw {i}): {len(bad)} pixels differ, e.g. {bad[:3]}"


def test_plots_are_plain_matplotlibs_pixels(tmp_path):
    """Kept figures, the text-caching renderer, the title placed without measuring and
    the PNG writer give exactly the pixels of a new figure on a plain Agg renderer
    through savefig, drawn after plots of other kinds and sizes."""
    plots = _plots() + _varied_plots()
    order = list(range(len(plots))) + [5, 14, 0, 13, 19, 3, 17, 12, 8, 16, 1, 20, 18, 15]
    _assert_plain_matplotlibs_pixels(plots, order, tmp_path)


@pytest.mark.parametrize(
    "style",
    [
        {"xtick.top": True, "xtick.labeltop": True},  # tick labels in the title's way
        {"axes.titlepad": 0.0},  # the title's descent below the axes' top
        {"axes.titley": 1.02},  # a fixed title position
    ],
)
def test_titles_are_where_matplotlib_places_them_under_styles(tmp_path, style):
    plots = _plots() + _varied_plots()
    order = [0, 1, 2, 3, 4, 15, 16, 2, 0, 3, 16]
    _assert_plain_matplotlibs_pixels(plots, order, tmp_path, style)


def _text_figure(canvas_class, seed: int):
    """A figure of text at many sub-pixel places and angles: plain, bold, mathtext with
    rules (a fraction, a root), unantialiased, partly off the canvas."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import IdentityTransform

    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(3.1, 2.3), dpi=97)
    canvas_class(fig)
    texts = ["step", "loss", "−0.25", "Wg·ÿ", r"$\frac{1}{2}\sqrt{x}$", r"$10^{-3}$"]
    for i in range(40):
        fig.text(
            rng.uniform(-0.05, 0.95),
            rng.uniform(-0.05, 0.95),
            texts[i % len(texts)],
            rotation=[0, 90, 33.3, -12][i % 4],
            fontsize=[7, 10, 13.5][i % 3],
            weight="bold" if i % 5 == 0 else "normal",
            antialiased=i % 7 != 0,
            color=["k", "tab:red", (0.2, 0.4, 0.9, 0.6)][i % 3],
        )
    # The same text at the same place within a pixel, whole pixels apart: antialiased
    # and not, in colours, at each angle (a cache hit must tell these apart).
    for j, (x, y) in enumerate(rng.uniform(10, 120, (6, 2))):
        for k, aa in enumerate([True, False, True]):
            fig.text(
                x + 41 * k,
                y + 23 * k,
                texts[j % len(texts)],
                transform=IdentityTransform(),
                rotation=[0, 90, 33.3][j % 3],
                antialiased=aa,
                color=["k", "tab:green", "tab:red"][k],
            )
    return fig


def test_cached_glyphs_are_the_glyphs_freetype_renders(tmp_path):
    """A glyph's bitmap is kept by its place within a pixel and moved to its pixel: the
    same pixels as rendering it there, for every angle, size, weight and mathtext."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def canvas_class_with(renderer):
        class Canvas(FigureCanvasAgg):
            def get_renderer(self):
                self.renderer = renderer
                return renderer

        return Canvas

    fig = _text_figure(FigureCanvasAgg, 0)
    w, h = fig.canvas.get_width_height(physical=True)
    caching = plot_render._renderer_class()(w, h, fig.dpi)
    if type(caching).__name__ != "TextCachingRendererAgg":
        pytest.skip("this matplotlib lacks Agg's glyph hooks: plain RendererAgg draws")
    for seed in [0, 1, 2, 0]:  # the last one draws from a warm cache only
        fig = _text_figure(FigureCanvasAgg, seed)
        fig.canvas.draw()
        want = np.asarray(fig.canvas.buffer_rgba()).copy()
        fig = _text_figure(canvas_class_with(caching), seed)
        caching.clear()
        fig.canvas.draw()
        got = np.asarray(fig.canvas.buffer_rgba())
        bad = np.argwhere((got != want).any(axis=2))
        assert bad.size == 0, f"seed {seed}: {len(bad)} pixels differ, e.g. {bad[:3]}"
    assert len(caching._glyphs) > 0 and len(caching._layouts) > 0


def test_png_writer_keeps_size_dpi_metadata_and_alpha(tmp_path):
    from PIL import Image

    from gradtrack import plot_render as a

    rng = np.random.default_rng(3)
    for opaque in (True, False):
        rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
        rgba[:10] = 255  # some flat rows
        if opaque:
            rgba[..., 3] = 255
        path = tmp_path / f"{opaque}.png"
        path.write_bytes(a.png_bytes(rgba, 100.0, "Matplotlib version9, https://matplotlib.org/"))
        with Image.open(path) as im:
            im.load()
            assert im.mode == ("RGB" if opaque else "RGBA")
            assert im.size == (53, 37)
            assert im.info["Software"] == "Matplotlib version9, https://matplotlib.org/"
            assert [round(v) for v in im.info["dpi"]] == [100, 100]
            assert np.array_equal(np.asarray(im.convert("RGBA")), rgba)


def test_plots_under_savefig_settings_are_what_savefig_writes(tmp_path):
    """A style that changes savefig's output (dpi, transparency) gets savefig's PNG."""
    import matplotlib

    plots = _plots()
    style = {"savefig.dpi": 50, "savefig.transparent": True}
    with matplotlib.rc_context(style):
        fast = _render([plots[i] for i in (0, 1)], tmp_path, fresh=False)
        with plot_render.plain_matplotlib():
            plain = _render([plots[i] for i in (0, 1)], tmp_path, fresh=True)
    assert fast == plain
    (tmp_path / "a.png").write_bytes(fast[0])
    assert _pixels(tmp_path / "a.png").shape == (200, 300, 4)  # 6 × 4 inches at 50 dpi


def test_a_long_runs_trajectory_is_drawn_through_the_budgets_iterates(tmp_path, monkeypatch):
    """A million iterates are drawn through PLOT_POINTS of them, the start dense and
    the last one kept (a marker for each took seconds and a gigabyte)."""
    from gradtrack.tracking.budget import kept_steps

    drawn = {}
    real = artifacts.save_png

    def keep(fig, path, **kw):
        drawn["x"] = fig.axes[0].lines[1].get_xdata()  # the iterates ("o-")
        return real(fig, path, **kw)

    monkeypatch.setattr(artifacts, "save_png", keep)
    n = 1_000_000
    path = -2 + 3 * 0.99 ** np.arange(n)  # x0 = 1.0, then towards the minimum at -2
    artifacts.trajectory(lambda x: (x + 2) ** 2, path, 1.0, -2.0, tmp_path / "t.png", "q")
    x = drawn["x"]
    assert len(x) == plot_render.PLOT_POINTS + 1  # x0, then the kept iterates
    np.testing.assert_array_equal(x[1:], path[kept_steps(n, plot_render.PLOT_POINTS)])
    assert x[-1] == path[-1] and np.array_equal(x[1:31], path[:30])  # dense at the start
    short = path[:50]  # a short run: every iterate, as before
    artifacts.trajectory(lambda x: (x + 2) ** 2, short, 1.0, -2.0, tmp_path / "s.png", "q")
    np.testing.assert_array_equal(drawn["x"], np.concatenate([[1.0], short]))
