"""Drawing gradtrack's per-run plots cheaply: the same pixels as matplotlib's savefig.

A sweep draws the same kinds of plot once per job, and a plot's cost is mostly what
matplotlib redoes for every new figure and every draw: text layout and glyph
rendering, tick making, PNG encoding. Here: bare figures with fixed margins
(``new_figure``), figures kept per thread and reused with new values
(``reused_figure``), a shared Agg renderer per thread and size that caches text, and a
PNG writer (``save_png``). tests/test_artifacts.py compares the pixels with a new
figure's through plain ``savefig``. artifacts.py says what each plot shows.

matplotlib is imported here only, and only when a plot is drawn.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from pathlib import Path

import numpy as np


def pyplot():
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


def reused_figure(key: tuple, build):
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


def new_figure(width: float, height: float, left: float = 0.12):
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


_savefig_only = False  # see plain_matplotlib


@contextlib.contextmanager
def plain_matplotlib():
    """Draw as plain matplotlib does, the reference the cheaper path is compared with
    (tests/test_artifacts.py, benchmarks/plots.py): a new RendererAgg for each figure
    and ``savefig``. This thread's kept renderers and figures are dropped on the way in
    and out, so neither way of drawing uses the other's."""
    global _Renderer, _savefig_only
    from matplotlib.backends.backend_agg import RendererAgg

    saved = _Renderer, _savefig_only
    _Renderer, _savefig_only = RendererAgg, True
    vars(_renderers).clear()
    vars(_figures).clear()
    try:
        yield
    finally:
        vars(_renderers).clear()
        vars(_figures).clear()
        _Renderer, _savefig_only = saved


def save_png(fig, path: Path, title: tuple | None = None) -> None:
    """``fig.savefig(path)``, drawn and encoded cheaper (same pixels, see above).

    ``title``: (axes, text, set_title keywords), the plot's title, set here (see
    _title_moves).
    """
    import matplotlib

    plain = _savefig_only or any(matplotlib.rcParams[k] != v for k, v in _SAVEFIG_DEFAULTS.items())
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
