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


def loss_curve(losses: np.ndarray, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(len(losses))
    ax.plot(steps, losses)
    if np.all(losses[np.isfinite(losses)] > 0) and losses.max() / max(losses.min(), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def trajectory(
    curve, values: np.ndarray, x0: float, minimum: float, path: Path, title: str
) -> None:
    """The scalar problem's function with the optimizer's path drawn on it."""
    plt = _pyplot()
    xs_path = np.concatenate([[x0], values])
    lo, hi = min(xs_path.min(), minimum), max(xs_path.max(), minimum)
    pad = 0.2 * (hi - lo or 1.0)
    lo = lo - pad if lo - pad > 0 or title.startswith("quadratic") else lo * 0.5
    grid = np.linspace(lo, hi + pad, 400)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, curve(grid), label="f(x)")
    ax.plot(xs_path, curve(xs_path), "o-", ms=3, label="iterates")
    ax.axvline(minimum, ls="--", c="gray", lw=0.8, label=f"minimum x={minimum:.4g}")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
) -> None:
    plt = _pyplot()
    terms = list(names) + ["intercept"]
    lv = np.append(np.asarray(learned, dtype=float), learned_b)
    x = np.arange(len(terms))
    fig, ax = plt.subplots(figsize=(max(6, len(terms) * 0.9), 4))
    width = 0.4 if baseline is not None else 0.8
    ax.bar(x - (width / 2 if baseline is not None else 0), lv, width, label="learned")
    if baseline is not None:
        bv = np.append(np.asarray(baseline, dtype=float), baseline_b)
        ax.bar(x + width / 2, bv, width, label="scikit-learn")
    ax.set_xticks(x, terms, rotation=30, ha="right")
    ax.set_ylabel("coefficient (original units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_overlay(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Several runs' loss histories on one plot: label → (steps, losses)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive, spread = True, 1.0
    for label, (steps, losses) in curves.items():
        ax.plot(steps, losses, label=label, lw=1.2)
        if len(losses):
            positive = positive and bool(np.all(losses > 0))
            spread = max(spread, float(losses.max() / max(losses.min(), 1e-300)))
    if curves and positive and spread > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
