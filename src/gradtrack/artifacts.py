"""Files that describe a run: config, loss curve, trajectory and coefficient plots/tables.

Written to a local folder first (so they survive a tracking outage), then logged.
matplotlib is imported here only, and only when plots are drawn.
"""

from __future__ import annotations

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


def _figure(width: float, height: float, left: float = 0.12):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_subplot()
    # Margins in inches, so labels fit whatever the figure's size.
    fig.subplots_adjust(
        left=left, right=1 - 0.25 / width, bottom=0.55 / height, top=1 - 0.4 / height
    )
    return fig, ax


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
    fig, ax = _figure(6, 4, left=0.14)
    ax.plot(steps, losses[steps])
    if wants_log_axis(losses):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.savefig(path)


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
    ax.set_title(title)
    ax.legend()
    fig.savefig(path)


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
    y = np.arange(len(names))
    width = 7.0
    # Room for the longest feature name (about 0.075 inch per character at 10 pt).
    left = min(0.5, (0.3 + 0.075 * max((len(n) for n in names), default=4)) / width)
    fig, ax = _figure(width, max(2.5, 0.45 * len(names) + 1.5), left=left)
    height = 0.4 if baseline is not None else 0.7
    off = height / 2 if baseline is not None else 0.0
    ax.barh(y - off, lv * factor, height, label="learned")
    intercept = f"intercept: learned {learned_b:.6g}"
    if baseline is not None:
        bv = np.asarray(baseline, dtype=float)
        ax.barh(y + off, bv * factor, height, label="scikit-learn")
        intercept += f", scikit-learn {baseline_b:.6g}"
    ax.axvline(0.0, color="gray", lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()  # first feature on top, as in the table
    ax.set_xlabel(
        "standardized effect (coefficient × feature SD)"
        if scale is not None
        else "coefficient (original units)"
    )
    ax.set_title(intercept, fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path)


def loss_overlay(curves: dict[str, tuple], path: Path, title: str) -> None:
    """Several runs' loss histories on one plot: label → (steps, losses).

    Readable at any count: the legend sits outside the axes (in columns when long)
    and many runs get colours from one colormap rather than a repeating cycle.
    """
    plt = _pyplot()
    n = len(curves)
    ncol = max(1, -(-n // 24))  # at most 24 legend rows
    fig, ax = plt.subplots(figsize=(7 + 2.2 * ncol if n else 7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.95, n)) if n > 10 else [None] * n
    for (label, (steps, losses)), color in zip(curves.items(), colors):
        ax.plot(steps, losses, label=label, lw=1.2, color=color)
    if n and wants_log_axis(*(c[1] for c in curves.values())):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if n:
        ax.legend(
            fontsize=7 if n <= 24 else 6,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=ncol,
            frameon=False,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
