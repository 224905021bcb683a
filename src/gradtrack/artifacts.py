"""Files that describe a run: config, loss curve, trajectory and coefficient plots/tables.

Written to a local folder first (so they survive a tracking outage), then logged.
matplotlib is imported only when plots are drawn; how they are drawn cheaply (same
pixels as matplotlib's savefig) is plot_render.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gradtrack.plot_render import PLOT_POINTS, new_figure, reused_figure, save_png

# A loss whose largest and smallest values differ by at least this factor is drawn on
# a log axis: on a linear one, everything after the first steps is a flat line.
LOG_AXIS_RATIO = 30.0

# A long run whose loss does nearly all of its falling (or rising) in the first tenth
# of its steps is drawn on a logarithmic step axis (symlog: step 0 stays on it). On a
# linear one, a million-step run's curve was a vertical line at step 0, then a flat one.
LOG_STEPS_MIN = 1000  # steps
LOG_STEPS_EARLY = 0.1  # the first tenth of the steps ...
LOG_STEPS_SHARE = 0.9  # ... holds at least 90% of the change


def wants_log_axis(*series) -> bool:
    """True when every finite value is positive and they span >= LOG_AXIS_RATIO."""
    vals = [np.asarray(v, dtype=float) for v in series]
    vals = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
    if vals.size == 0 or np.any(vals <= 0):
        return False
    return float(vals.max() / vals.min()) >= LOG_AXIS_RATIO


def wants_log_steps(steps, losses, log_y: bool) -> bool:
    """True for a curve of at least LOG_STEPS_MIN steps that changes by at least
    LOG_STEPS_SHARE of its whole change (first to last finite value, measured in
    decades when ``log_y``) within its first LOG_STEPS_EARLY of the steps."""
    steps = np.asarray(steps, dtype=float)
    v = np.asarray(losses, dtype=float)
    ok = np.isfinite(v) & (v > 0 if log_y else True)
    steps, v = steps[ok], v[ok]
    if v.size < 2 or steps[-1] - steps[0] < LOG_STEPS_MIN:
        return False
    if log_y:
        v = np.log10(v)
    whole = v[-1] - v[0]
    if whole == 0:
        return False
    cut = steps[0] + LOG_STEPS_EARLY * (steps[-1] - steps[0])
    early = v[np.searchsorted(steps, cut, side="right") - 1] - v[0]
    return early / whole >= LOG_STEPS_SHARE


def use_log_steps(ax) -> None:
    """Switch an autoscaled plot to a symlog step axis (linear below step 1, so that
    step 0 is drawn), starting at step 0: the margin below it reached negative steps,
    labelled -10^0 over the 0. Its linear part is a decade wide, so that 0 and 10^0
    are not drawn over each other either."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
    ax.autoscale_view(scaley=False)  # the margins again, in the new scale
    ax.set_xlim(left=0)


def loss_curve(losses: np.ndarray, path: Path, title: str) -> None:
    from gradtrack.tracking.budget import kept_steps

    losses = np.asarray(losses, dtype=float)
    steps = kept_steps(len(losses), PLOT_POINTS)

    def build():
        fig, ax = new_figure(6, 4, left=0.14)
        (line,) = ax.plot(steps, losses[steps])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        return fig, ax, line

    fig, ax, line = reused_figure(("loss_curve",), build)
    # Everything that depends on this run is set again: data, scale, limits, title.
    line.set_data(steps, losses[steps])
    ax.relim()  # (before the scale: a log scale checks the data limits)
    log = wants_log_axis(losses)
    limits = loss_limits([losses], log)
    if limits is not None and max(map(abs, limits)) >= AXIS_LIMIT / 1e10:
        ax.set_ylim(*limits)  # a diverged run's curve (see AXIS_LIMIT); before the scale
    else:
        ax.set_autoscaley_on(True)  # (a reused figure's last run may have fixed them)
    ax.set_yscale("log" if log else "linear")
    ax.set_xscale("linear")  # (a reused figure's last run may have had a log step axis)
    ax.set_autoscalex_on(True)
    ax.autoscale_view()
    if wants_log_steps(steps, losses[steps], log):
        use_log_steps(ax)
    save_png(fig, path, title=(ax, title, {}))


def trajectory(
    curve, values: np.ndarray, x0: float, minimum: float, path: Path, title: str
) -> None:
    """The scalar problem's function with the optimizer's path drawn on it.

    A long run's path is drawn through PLOT_POINTS of its iterates, dense at the start
    (the budget's choice of steps): a marker for each of a million iterates took
    seconds and a gigabyte to draw points that all sit on the minimum.
    """
    from gradtrack.tracking.budget import kept_steps

    values = np.asarray(values)
    if len(values) > PLOT_POINTS:
        values = values[kept_steps(len(values), PLOT_POINTS)]
    xs_path = np.concatenate([[x0], values])
    lo, hi = min(xs_path.min(), minimum), max(xs_path.max(), minimum)
    pad = 0.2 * (hi - lo or 1.0)
    lo = lo - pad if lo - pad > 0 or title.startswith("quadratic") else lo * 0.5
    grid = np.linspace(lo, hi + pad, 400)
    fig, ax = new_figure(6, 4, left=0.14)
    ax.plot(grid, curve(grid), label="f(x)")
    ax.plot(xs_path, curve(xs_path), "o-", ms=3, label="iterates")
    ax.axvline(minimum, ls="--", c="gray", lw=0.8, label=f"minimum x={minimum:.4g}")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.legend()
    save_png(fig, path, title=(ax, title, {}))


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
        fig, ax = new_figure(width, max(2.5, 0.45 * len(names) + 1.5), left=left)
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
    fig, ax, bars = reused_figure(key, build)
    for container, values in zip(bars, [lv] if bv is None else [lv, bv]):
        for bar, value in zip(container, values * factor):
            bar.set_width(value)
    ax.relim()
    ax.autoscale_view()
    intercept = f"intercept: learned {learned_b:.6g}"
    if bv is not None:
        intercept += f", scikit-learn {baseline_b:.6g}"
    save_png(fig, path, title=(ax, intercept, {"fontsize": 10}))


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


# Matplotlib pads a log axis by 5% of its span in decades. A diverged run's last losses
# (~1e305) pad past the largest float, and the axis falls back to 1..10: an empty plot,
# and a RuntimeWarning on the console. Such limits are computed here instead, in
# decades, and kept below this (the log axis's tick locator reaches a few dozen
# decades beyond its top).
AXIS_LIMIT = 1e250


def loss_limits(series, log: bool) -> tuple[float, float] | None:
    """Matplotlib's default y-limits for these curves (5% margins; on a log axis, in
    decades), never beyond ±AXIS_LIMIT; None when no value can be drawn."""
    vals = np.concatenate([np.asarray(v, dtype=float).ravel() for v in series] or [[]])
    vals = vals[np.isfinite(vals) & (vals > 0 if log else True)]
    if vals.size == 0:
        return None
    lo, hi = float(vals.min()), float(vals.max())
    if log:
        lo, hi = np.log10(lo), np.log10(hi)
        if lo == hi:  # a flat curve: a decade either side
            lo, hi = lo - 1, hi + 1
        pad = 0.05 * (hi - lo)
        top = np.log10(AXIS_LIMIT)
        return float(10 ** (lo - pad)), float(10 ** min(hi + pad, top))
    if lo == hi:  # a flat curve: 5% of its value either side, as matplotlib does
        lo, hi = lo - (0.05 * abs(lo) or 0.05), hi + (0.05 * abs(hi) or 0.05)
    pad = 0.05 * (hi - lo)
    return max(lo - pad, -AXIS_LIMIT), min(hi + pad, AXIS_LIMIT)


def loss_overlay_png(curves: dict[str, tuple], title: str, **options) -> tuple[bytes, list[str]]:
    """``loss_overlay``'s PNG as bytes, and its legend's labels: for drawing it in
    another process (sweep_workers.call_in_a_worker)."""
    out = io.BytesIO()
    labels = loss_overlay(curves, out, title, **options)
    return out.getvalue(), labels


def loss_overlay(
    curves: dict[str, tuple],
    path: Path | BinaryIO,
    title: str,
    order: list[str] | None = None,
    by: str = "final loss",
    scale_from: list[str] | None = None,
) -> list[str]:
    """Several runs' loss histories on one plot: label → (steps, losses).

    Readable at any count: up to LEGEND_BEST curves each get a colour and a legend entry
    beside the axes, in the given order. With more, the first LEGEND_BEST labels of
    ``order`` (default: the lowest final losses first; ``by`` names the ranking) are
    drawn in colour, numbered by rank, on top of the others in light grey, which share
    one legend entry. Returns the legend's labels.

    The y-axis (its range, and whether it is logarithmic) fits the curves labelled in
    ``scale_from`` (default: all): a sweep's finished jobs, so that a diverged job's
    curve leaves the plot at the top instead of flattening every other curve.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(curves)
    ranked = [k for k in (order or []) if k in curves]
    ranked += sorted((k for k in curves if k not in ranked), key=lambda k: _final(curves[k][1]))
    best = list(curves) if n <= LEGEND_BEST else ranked[:LEGEND_BEST]
    # A bare Figure, not pyplot's: the same pixels, without importing pyplot (a sweep's
    # main process draws nothing else) or registering the figure with its manager.
    fig = Figure(figsize=(9.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
    fitted = [curves[k] for k in (scale_from or ()) if k in curves] or list(curves.values())
    basis = [losses for _, losses in fitted]
    log = bool(n) and wants_log_axis(*basis)
    limits = loss_limits(basis, log) if n else None
    if limits is not None and (len(basis) < n or max(map(abs, limits)) >= AXIS_LIMIT / 1e10):
        # (before the scale, which autoscales at once unless limits are set)
        ax.set_ylim(*limits)  # else matplotlib's own: the same when they do not overflow
    if log:
        ax.set_yscale("log")
    if fitted and all(wants_log_steps(steps, losses, log) for steps, losses in fitted):
        use_log_steps(ax)
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
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return labels
