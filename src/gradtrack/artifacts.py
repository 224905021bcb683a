"""Files that describe a run: config, loss curve, trajectory and coefficient plots/tables.

Written to a local folder first (so they survive a tracking outage), then logged.
matplotlib is imported here only, and only when plots are drawn.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI toolkit import
    import matplotlib.pyplot as plt

    return plt


# Per-run plots are drawn on a bare ``Figure`` with fixed margins: no pyplot state
# and no layout pass. ``tight_layout`` draws the figure once more just to measure
# it, which tripled the cost of every run's PNGs (a run pays for three of them).
# A long curve is drawn from at most PLOT_POINTS of its steps (the metric budget's
# log-spaced + even choice), which keeps its shape at a PNG's resolution.
PLOT_POINTS = 4000
_Canvas = None  # SharedRendererCanvas, made on first use (matplotlib imports lazily)


# A figure's first draw on a new Agg renderer pays for what the renderer caches: text
# metrics, and parsing the mathtext of a log axis's labels ("2×10¹", ~30 ms a plot).
# A sweep's jobs each draw the same kinds of plot, so every figure of a thread draws on
# that thread's renderer for its size and dpi (cleared before each draw): the same
# pixels as a new renderer, without the first-draw cost. At most SHARED_RENDERERS per
# thread (an RGBA buffer each, ~1 MB at 6 × 4 inches).
SHARED_RENDERERS = 4
_renderers = threading.local()


def _shared_renderer(width: int, height: int, dpi: float):
    cache = getattr(_renderers, "by_size", None)
    if cache is None:
        cache = _renderers.by_size = collections.OrderedDict()
    key = (width, height, dpi)
    renderer = cache.pop(key, None)
    if renderer is None:
        renderer = _renderer_class()(width, height, dpi)
    cache[key] = renderer  # most recently used last
    while len(cache) > SHARED_RENDERERS:
        cache.popitem(last=False)
    return renderer


# Text is most of a plot's drawing: each draw lays every label out again (HarfBuzz) and
# renders every glyph again (FreeType), though a sweep's plots show the same titles,
# axis labels and tick labels. The shared renderer keeps both: a string's layout by
# font, size and string, and a glyph's coverage bitmap by font, size, glyph, rotation
# and where it falls inside a pixel (1/64 pixel, FreeType's own precision). A glyph
# drawn a whole number of pixels away is the same bitmap moved, so the pixels are
# those of a new renderer (tests/test_artifacts.py compares them with plain Agg's).
# It also answers Text's font height query from a cache, and finds each font once a
# draw. It uses Agg's private glyph drawing hooks (matplotlib 3.11); without them a
# plain RendererAgg draws.
TEXT_CACHE_ITEMS = 5000  # per renderer and kind; ~0.5 kB a glyph with its key: ~2.5 MB
_Renderer = None


def _renderer_class():
    global _Renderer
    if _Renderer is None:
        _Renderer = _make_renderer_class()
    return _Renderer


def _make_renderer_class():
    import math

    from matplotlib import font_manager, ft2font
    from matplotlib.backends import backend_agg

    base = backend_agg.RendererAgg
    hooks = (
        hasattr(base, "_draw_text_glyphs_and_boxes")
        and hasattr(base, "_prepare_font")
        and all(hasattr(ft2font.FT2Font, m) for m in ("_layout", "_render_glyph", "_set_transform"))
        and hasattr(ft2font, "RenderMode")
    )
    if not hooks:
        return base
    get_hinting_flag = backend_agg.get_hinting_flag
    get_font = font_manager.get_font
    normal, mono = ft2font.RenderMode.NORMAL, ft2font.RenderMode.MONO

    class TextCachingRendererAgg(base):
        """RendererAgg that keeps text layouts and glyph bitmaps (see above)."""

        def __init__(self, width, height, dpi):
            super().__init__(width, height, dpi)
            self._layouts: dict = {}
            self._glyphs: dict = {}
            self._heights: dict = {}
            self._fonts: dict = {}

        def clear(self):
            super().clear()  # a new draw: fonts are found again (rcParams may differ)
            self._fonts = {}

        def _font(self, prop):
            # The font file for these properties: matplotlib's lookup (findfont's rcParams
            # key, ~20 us) once per properties a draw, not once per label.
            key = hash(prop)  # what FontProperties equality compares
            font = self._fonts.get(key)
            if font is None:
                paths = font_manager.fontManager._find_fonts_by_props(prop)
                font = self._fonts[key] = get_font(paths)
            return font

        def _prepare_font(self, font_prop):
            font = self._font(font_prop)
            font.clear()
            font.set_size(font_prop.get_size_in_points(), self.dpi)
            return font

        def _get_font_height_metrics(self, prop):
            # Text asks every label's font for its ascent, descent and line gap (two
            # sfnt table reads, ~25 us a label) unless the renderer answers: Text's own
            # computation, kept per font, size and dpi.
            font = self._font(prop)
            size = prop.get_size_in_points()
            key = (font, size, self.dpi)
            hit = self._heights.get(key)
            if hit is None:
                hit = (None, None, None)  # Text measures "lp" instead
                possible = [
                    ("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
                    ("hhea", "lineGap", "ascent", "descent"),
                ]
                for table_name, linegap_key, ascent_key, descent_key in possible:
                    table = font.get_sfnt_table(table_name)
                    if table is None:
                        continue
                    units_per_em = font.get_sfnt_table("head")["unitsPerEm"]
                    scale = 1 / units_per_em * size * self.dpi / 72
                    hit = (
                        table[ascent_key] * scale,
                        -table[descent_key] * scale,
                        table[linegap_key] * scale,
                    )
                    break
                if len(self._heights) >= TEXT_CACHE_ITEMS:
                    self._heights.clear()
                self._heights[key] = hit
            return hit

        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            if ismath:
                return self.draw_mathtext(gc, x, y, s, prop, angle)
            font = self._font(prop)
            size = prop.get_size_in_points()
            flags = get_hinting_flag()
            features = mtext.get_fontfeatures() if mtext is not None else None
            language = mtext.get_language() if mtext is not None else None
            key = (font, size, self.dpi, s, flags, _hashable(features), _hashable(language))
            items = self._layouts.get(key)
            if items is None:
                font = self._prepare_font(prop)
                if len(self._layouts) >= TEXT_CACHE_ITEMS:
                    self._layouts.clear()
                items = self._layouts[key] = [
                    (item.ft_object, size, item.glyph_index, 0, 1, item.x, item.y)
                    for item in font._layout(s, flags=flags, features=features, language=language)
                ]
            self._draw_text_glyphs_and_boxes(gc, x, y, angle, items, [])

        def _draw_text_glyphs_and_boxes(self, gc, x, y, angle, glyphs, boxes):
            # RendererAgg's, with each glyph's bitmap looked up before it is rendered.
            cos = math.cos(math.radians(angle))
            sin = math.sin(math.radians(angle))
            load_flags = get_hinting_flag()
            antialiased = bool(gc.get_antialiased())
            height, dpi = self.height, self.dpi
            cache, draw = self._glyphs, self._renderer.draw_text_image
            matrices: dict = {}
            for font, size, glyph_index, slant, extend, dx, dy in glyphs:
                matrix = matrices.get((slant, extend))
                if matrix is None:
                    rotation = np.array([[cos, -sin], [sin, cos]])
                    m = (
                        (0x10000 * rotation @ [[extend, extend * slant], [0, 1]])
                        .round()
                        .astype(int)
                    )
                    matrix = matrices[slant, extend] = (m, m.tobytes())
                # The pen position in 1/64 pixel, as RendererAgg gives it to FreeType.
                px = round(0x40 * (x + dx * cos - dy * sin))
                py = round(0x40 * (height - y + dx * sin + dy * cos))
                key = (font, size, dpi, glyph_index, matrix[1], px & 63, py & 63, load_flags)
                key += (antialiased,)
                hit = cache.get(key)
                if hit is None:
                    font.set_size(size, dpi)
                    font._set_transform(matrix[0], [px & 63, py & 63])
                    bitmap = font._render_glyph(
                        glyph_index, load_flags, normal if antialiased else mono
                    )
                    buffer = np.array(bitmap.buffer)  # a copy: kept
                    if not antialiased:
                        buffer *= 0xFF
                    if len(cache) >= TEXT_CACHE_ITEMS:
                        cache.clear()
                    hit = cache[key] = (
                        buffer,
                        bitmap.left,
                        int(height) - bitmap.top + buffer.shape[0],
                    )
                # The bitmap rendered at the pen's place within its pixel, moved to its pixel.
                buffer, left, bottom = hit
                draw(buffer, left + (px >> 6), bottom - (py >> 6), 0, gc)
            if boxes:  # mathtext's rules (fraction bars, roots): RendererAgg's code
                super()._draw_text_glyphs_and_boxes(gc, x, y, angle, (), boxes)

    return TextCachingRendererAgg


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _canvas_class():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    class SharedRendererCanvas(FigureCanvasAgg):
        """An Agg canvas drawing on its thread's shared renderer (see above)."""

        def get_renderer(self):
            w, h = self.get_width_height(physical=True)
            self.renderer = _shared_renderer(w, h, self.figure.dpi)
            return self.renderer

    return SharedRendererCanvas


# Drawing a new figure also makes its axes' ticks and measures their labels (~15 ms a
# plot). A sweep's jobs draw the same plots with other values, so loss_curve and
# coefficient_chart keep each figure they build (per thread, at most REUSED_FIGURES,
# keyed by what fixes its layout) and set every value-dependent part again on reuse:
# tests/test_artifacts.py checks the PNG bytes equal a new figure's.
REUSED_FIGURES = 8
_figures = threading.local()


def _reused(key: tuple, build):
    """This thread's figure for ``key`` (``build()`` makes it the first time).

    Only under the same matplotlib settings: a figure takes rcParams when it is built,
    and a notebook may change them between runs.
    """
    import matplotlib

    key = (*key, repr(sorted(dict.items(matplotlib.rcParams))))
    cache = getattr(_figures, "by_key", None)
    if cache is None:
        cache = _figures.by_key = collections.OrderedDict()
    entry = cache.pop(key, None)
    if entry is None:
        entry = build()
    cache[key] = entry  # most recently used last
    while len(cache) > REUSED_FIGURES:
        cache.popitem(last=False)
    return entry


def _figure(width: float, height: float, left: float = 0.12):
    from matplotlib.figure import Figure

    global _Canvas
    if _Canvas is None:
        _Canvas = _canvas_class()
    fig = Figure(figsize=(width, height), dpi=100)
    _Canvas(fig)  # the figure's canvas from now on (savefig draws with it)
    ax = fig.add_subplot()
    # Margins in inches, so labels fit whatever the figure's size.
    fig.subplots_adjust(
        left=left, right=1 - 0.25 / width, bottom=0.55 / height, top=1 - 0.4 / height
    )
    return fig, ax


# Writing the PNG was a fifth of a plot's cost: Pillow tries every row filter on every
# row and deflates at level 6 (~4-5 ms a plot). A plot is mostly flat colour, so rows
# deflated unfiltered at level 3 come out about as small (~17-19 kB against ~17 kB) in
# ~1 ms. Same pixels, size, dpi and Software text as savefig's PNG; colour type RGB
# when the figure is opaque (it is, unless a style makes it transparent), else RGBA.
PNG_LEVEL = 3
# savefig settings under which drawing the figure's canvas is what savefig writes.
_SAVEFIG_DEFAULTS = {
    "savefig.dpi": "figure",
    "savefig.facecolor": "auto",
    "savefig.edgecolor": "auto",
    "savefig.transparent": False,
    "savefig.bbox": None,
    "savefig.orientation": "portrait",
}


def _save_png(fig, path: Path, title: tuple | None = None) -> None:
    """``fig.savefig(path)``, drawn and encoded cheaper (same pixels, see above).

    ``title``: (axes, text, set_title keywords), the plot's title, set here (see
    _title_moves).
    """
    import matplotlib

    plain = any(matplotlib.rcParams[k] != v for k, v in _SAVEFIG_DEFAULTS.items())
    if title is not None:
        ax, text, kw = title
        ax.set_title(text, **kw)  # at y = 1
    if plain:
        fig.savefig(path)  # a style changes what savefig writes: let it
        return
    # Matplotlib's automatic title placement (see _title_moves) is off for one draw.
    fixed = title is not None and getattr(ax, "_autotitlepos", None) is True
    if fixed:
        ax._autotitlepos = False
    try:
        fig.canvas.draw()
    finally:
        if fixed:
            ax._autotitlepos = True
    if fixed and _title_moves(ax, fig.canvas.get_renderer()):
        fig.canvas.draw()  # again, with matplotlib's placement
    rgba = np.asarray(fig.canvas.buffer_rgba())
    Path(path).write_bytes(
        png_bytes(
            rgba, fig.dpi, f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/"
        )
    )


# Matplotlib places a title on every draw: it measures the x axis (for ticks or a label
# on top) and the y axis's tick labels (for an offset text such as "1e4" in the title's
# way), ~1 ms a plot. Nothing is in the way of these plots' titles unless a style puts
# x ticks on top or the y axis shows an offset text, so the title is drawn at y = 1,
# where matplotlib leaves it then; after the draw, _title_moves says whether it would
# have moved it, and only then is the plot drawn again with matplotlib's placement.
def _title_moves(ax, renderer) -> bool:
    xaxis, offset = ax.xaxis, ax.yaxis.offsetText
    if xaxis.get_ticks_position() in ("top", "unknown") or xaxis.get_label_position() == "top":
        return True
    if offset.get_visible() and offset.get_text():
        return True
    return ax.title.get_window_extent(renderer).ymin < ax.bbox.ymax


def png_bytes(rgba: np.ndarray, dpi: float, software: str) -> bytes:
    """An (h, w, 4) uint8 image as PNG: RGB when fully opaque, rows unfiltered."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = rgba.shape
    opaque = bool(rgba[..., 3].min() == 255)
    channels = 3 if opaque else 4
    rows = np.empty((h, 1 + w * channels), np.uint8)
    rows[:, 0] = 0  # filter type None
    out = rows[:, 1:].reshape(h, w, channels)
    for c in range(channels):  # channel by channel: ~4x faster than one strided copy
        out[..., c] = rgba[..., c]
    per_metre = int(dpi / 0.0254 + 0.5)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if opaque else 6, 0, 0, 0)),
            chunk(b"tEXt", b"Software\0" + software.encode("latin-1")),
            chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
            chunk(b"IDAT", zlib.compress(rows, PNG_LEVEL)),
            chunk(b"IEND", b""),
        ]
    )


# A loss whose largest and smallest values differ by at least this factor is drawn on
# a log axis: on a linear one, everything after the first steps is a flat line.
LOG_AXIS_RATIO = 30.0


def wants_log_axis(*series) -> bool:
    """True when every finite value is positive and they span >= LOG_AXIS_RATIO."""
    vals = [np.asarray(v, dtype=float) for v in series]
    vals = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
    if vals.size == 0 or np.any(vals <= 0):
        return False
    return float(vals.max() / vals.min()) >= LOG_AXIS_RATIO


def loss_curve(losses: np.ndarray, path: Path, title: str) -> None:
    from gradtrack.tracking.budget import kept_steps

    losses = np.asarray(losses, dtype=float)
    steps = kept_steps(len(losses), PLOT_POINTS)

    def build():
        fig, ax = _figure(6, 4, left=0.14)
        (line,) = ax.plot(steps, losses[steps])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        return fig, ax, line

    fig, ax, line = _reused(("loss_curve",), build)
    # Everything that depends on this run is set again: data, scale, limits, title.
    line.set_data(steps, losses[steps])
    ax.relim()  # (before the scale: a log scale checks the data limits)
    ax.set_yscale("log" if wants_log_axis(losses) else "linear")
    ax.autoscale_view()
    _save_png(fig, path, title=(ax, title, {}))


def trajectory(
    curve, values: np.ndarray, x0: float, minimum: float, path: Path, title: str
) -> None:
    """The scalar problem's function with the optimizer's path drawn on it."""
    xs_path = np.concatenate([[x0], values])
    lo, hi = min(xs_path.min(), minimum), max(xs_path.max(), minimum)
    pad = 0.2 * (hi - lo or 1.0)
    lo = lo - pad if lo - pad > 0 or title.startswith("quadratic") else lo * 0.5
    grid = np.linspace(lo, hi + pad, 400)
    fig, ax = _figure(6, 4, left=0.14)
    ax.plot(grid, curve(grid), label="f(x)")
    ax.plot(xs_path, curve(xs_path), "o-", ms=3, label="iterates")
    ax.axvline(minimum, ls="--", c="gray", lw=0.8, label=f"minimum x={minimum:.4g}")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.legend()
    _save_png(fig, path, title=(ax, title, {}))


def coefficient_table(
    names: list[str],
    learned: np.ndarray,
    learned_b: float,
    baseline: np.ndarray | None,
    baseline_b: float | None,
    path: Path,
) -> None:
    """CSV: term, learned, baseline, abs_err (intercept last)."""
    rows = ["term,learned,baseline,abs_err"]
    terms = list(names) + ["intercept"]
    # .tolist() gives Python floats: repr() of a numpy scalar is "np.float64(…)".
    lv = np.asarray(learned, dtype=float).tolist() + [float(learned_b)]
    bv = (
        (np.asarray(baseline, dtype=float).tolist() + [float(baseline_b)])
        if baseline is not None
        else [None] * len(lv)
    )
    for t, a, b in zip(terms, lv, bv):
        err = "" if b is None else repr(abs(a - b))
        rows.append(f"{t},{a!r},{'' if b is None else repr(b)},{err}")
    path.write_text("\n".join(rows) + "\n")


def coefficient_chart(
    names: list[str],
    learned: np.ndarray,
    learned_b: float,
    baseline: np.ndarray | None,
    baseline_b: float | None,
    path: Path,
    scale: np.ndarray | None = None,
) -> None:
    """Horizontal bars, one per feature, learned beside scikit-learn's.

    With ``scale`` (each feature's standard deviation) the bars are standardized
    effects, coefficient × SD: the change in the output for a one-SD change of that
    feature, comparable across features whatever their units. The intercept, on a
    scale of its own, is written in the title instead of drawn as a bar.
    """
    lv = np.asarray(learned, dtype=float)
    factor = np.ones_like(lv) if scale is None else np.asarray(scale, dtype=float)
    bv = None if baseline is None else np.asarray(baseline, dtype=float)

    def build():
        y = np.arange(len(names))
        width = 7.0
        # Room for the longest feature name (about 0.075 inch per character at 10 pt).
        left = min(0.5, (0.3 + 0.075 * max((len(n) for n in names), default=4)) / width)
        fig, ax = _figure(width, max(2.5, 0.45 * len(names) + 1.5), left=left)
        height = 0.4 if bv is not None else 0.7
        off = height / 2 if bv is not None else 0.0
        bars = [ax.barh(y - off, lv * factor, height, label="learned")]
        if bv is not None:
            bars.append(ax.barh(y + off, bv * factor, height, label="scikit-learn"))
        ax.axvline(0.0, color="gray", lw=0.8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()  # first feature on top, as in the table
        ax.set_xlabel(
            "standardized effect (coefficient × feature SD)"
            if scale is not None
            else "coefficient (original units)"
        )
        ax.legend(fontsize=8)
        return fig, ax, bars

    # The same features, bars and axis label: the same figure, new values.
    key = ("coefficient_chart", tuple(names), bv is None, scale is None)
    fig, ax, bars = _reused(key, build)
    for container, values in zip(bars, [lv] if bv is None else [lv, bv]):
        for bar, value in zip(container, values * factor):
            bar.set_width(value)
    ax.relim()
    ax.autoscale_view()
    intercept = f"intercept: learned {learned_b:.6g}"
    if bv is not None:
        intercept += f", scikit-learn {baseline_b:.6g}"
    _save_png(fig, path, title=(ax, intercept, {"fontsize": 10}))


# An overlay names at most this many curves; with more, the best LEGEND_BEST are drawn
# in colour and named, the rest in grey under one "others" entry.
LEGEND_BEST = 10
# tab10 without its grey (kept for "others"), then black: ten distinct colours.
_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000000",
]  # fmt: skip


def _final(losses) -> float:
    """The last finite value of a curve (inf when it has none: it ranks last)."""
    v = np.asarray(losses, dtype=float)
    v = v[np.isfinite(v)]
    return float(v[-1]) if v.size else float("inf")


def loss_overlay(
    curves: dict[str, tuple],
    path: Path,
    title: str,
    order: list[str] | None = None,
    by: str = "final loss",
) -> list[str]:
    """Several runs' loss histories on one plot: label → (steps, losses).

    Readable at any count: up to LEGEND_BEST curves each get a colour and a legend entry
    beside the axes, in the given order. With more, the first LEGEND_BEST labels of
    ``order`` (default: the lowest final losses first; ``by`` names the ranking) are
    drawn in colour, numbered by rank, on top of the others in light grey, which share
    one legend entry. Returns the legend's labels.
    """
    plt = _pyplot()
    n = len(curves)
    ranked = [k for k in (order or []) if k in curves]
    ranked += sorted((k for k in curves if k not in ranked), key=lambda k: _final(curves[k][1]))
    best = list(curves) if n <= LEGEND_BEST else ranked[:LEGEND_BEST]
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    rest = [k for k in curves if k not in best]
    for i, label in enumerate(rest):
        steps, losses = curves[label]
        name = f"{len(rest)} others" if i == 0 else None
        ax.plot(steps, losses, lw=0.8, color="0.75", label=name, zorder=1)
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(best))]
    numbered = len(best) < n
    for i, (label, color) in enumerate(zip(best, colors)):
        steps, losses = curves[label]
        text = f"{i + 1}. {label}" if numbered else label
        ax.plot(steps, losses, lw=1.5, color=color, label=text, zorder=3 + len(best) - i)
    if n and wants_log_axis(*(c[1] for c in curves.values())):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    labels: list[str] = []
    if n:
        handles, labels = ax.get_legend_handles_labels()
        if rest:  # the named curves first, "others" last
            handles, labels = handles[1:] + handles[:1], labels[1:] + labels[:1]
        ax.legend(
            handles,
            labels,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            title=f"best {len(best)} of {n} by {by}" if rest else None,
            title_fontsize=7,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return labels
