"""Did a run converge? A verdict from its loss and gradient-norm histories.

Pure numpy on plain arrays and numbers, so it is cheap to test: train.py hands it
the histories (and the scikit-learn loss gap when a baseline was fitted) and
records the verdict as tags and one line on stderr. A run can finish with a
finite loss and still be nowhere near a minimum (a too-large learning rate makes
the loss bounce); the verdict says so and names the likely fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Full-batch runs: the last gradient must be this small relative to the first
# (or below GRAD_ATOL outright, for a run that started near the minimum).
GRAD_RTOL = 1e-3
GRAD_ATOL = 1e-8
# The loss may sit at most this far (relative) above scikit-learn's optimum.
GAP_RTOL = 1e-4
# Oscillation: over the last WINDOW of steps the loss rose, and fell, on at least this
# share of steps each, while spanning more than OSC_SPREAD (relative).
WINDOW = 0.2
OSC_UP_SHARE = 0.25
OSC_SPREAD = 1e-3
# Minibatch runs: still falling if the last window's mean loss is this much below
# the window before it.
PLATEAU_RTOL = 1e-2


@dataclass(frozen=True)
class Verdict:
    converged: bool
    reasons: list[str] = field(default_factory=list)
    fix: str = ""

    def tags(self) -> dict[str, str]:
        tags = {"converged": str(self.converged).lower()}
        if not self.converged:
            tags["convergence_reason"] = "; ".join(self.reasons)[:5000]
            tags["convergence_fix"] = self.fix
        return tags

    def message(self, expected: bool = True, name: str = "", job: str = "") -> str | None:
        """One line for stderr, or None when there is nothing to say. ``job``: the
        sweep job's label (its jobs may print at once), named in the line."""
        if self.converged:
            return None
        why = "; ".join(self.reasons)
        if not expected:
            what = f"{name} is" if name else "this is"
            return (
                f"gradtrack: note: {f'job {job} ' if job else ''}not converged ({why}). "
                f"That is expected: {what} a short demonstration run (expect_converged: "
                "false); the fit_* experiments train to convergence."
            )
        subject = f"job {job}" if job else "this run"
        return f"gradtrack: warning: {subject} did not converge: {why}. Likely fix: {self.fix}."


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def assess(
    losses: np.ndarray,
    grad_norms: np.ndarray,
    *,
    minibatch: bool = False,
    loss_gap: float | None = None,
    baseline_loss: float | None = None,
    standardized: bool | None = None,
    lr: float | None = None,
    epochs: int | None = None,
) -> Verdict:
    """Judge a finished run.

    ``losses``/``grad_norms`` hold one value per step. ``baseline_loss`` is
    scikit-learn's optimum on the same rows and ``loss_gap`` the run's final loss
    minus it (both or neither). ``standardized`` is None for problems without
    features.
    """
    losses = np.asarray(losses, dtype=np.float64)
    norms = np.asarray(grad_norms, dtype=np.float64)
    n = losses.size
    reasons: list[str] = []
    unstable = False
    if n == 0:
        return Verdict(False, ["no epochs were run"], "set epochs >= 1")
    first, last = float(losses[0]), float(losses[-1])
    w = min(n, max(5, int(np.ceil(WINDOW * n))))
    tail = losses[-w:]
    rose = n > 1 and last > first and _rel(last, first) > 1e-9
    if not minibatch and tail.size > 2:
        steps_up = np.diff(tail) > 0
        ups, downs = int(steps_up.sum()), int((~steps_up).sum())
        lo, hi = float(tail.min()), float(tail.max())
        share = OSC_UP_SHARE * (tail.size - 1)
        # Up and down: a loss that only climbs is "rising", not oscillating.
        if min(ups, downs) >= share and (hi - lo) > OSC_SPREAD * max(abs(lo), 1e-12):
            reasons.append(
                f"the loss oscillates (it rose on {ups} of the last {tail.size - 1} steps, "
                f"between {lo:.4g} and {hi:.4g}"
                + (f", ending at {last:.4g}, above its start {first:.4g})" if rose else ")")
            )
            unstable = True
    if rose and not unstable:
        reasons.append(f"the loss rose from {first:.4g} to {last:.4g}")
        unstable = True
    if minibatch:
        if n >= 2 * w:
            before, now = float(losses[-2 * w : -w].mean()), float(tail.mean())
            if before - now > PLATEAU_RTOL * max(abs(now), 1e-12):
                reasons.append(
                    f"the loss is still falling (mean {before:.4g} → {now:.4g} over the "
                    f"last {2 * w} epochs)"
                )
    elif norms.size:
        g0, g = float(np.max(norms[: max(1, min(n, 3))])), float(norms[-1])
        if g > GRAD_ATOL and g > GRAD_RTOL * g0:
            reasons.append(f"the gradient norm is still {g:.3g} ({_share(g / g0)} its start)")
    if loss_gap is not None and baseline_loss is not None:
        scale = max(abs(baseline_loss), 1e-12)
        if loss_gap > GAP_RTOL * scale:
            above = loss_gap / scale
            reasons.append(
                "the fitted model's loss is "
                + (f"{above:.2%} above" if above < 10 else f"{above + 1:.3g} times")
                + f" scikit-learn's optimum ({baseline_loss + loss_gap:.6g} vs "
                + f"{baseline_loss:.6g})"
            )
    if not reasons:
        return Verdict(True)
    return Verdict(False, reasons, _fix(unstable, standardized, lr, epochs))


def _share(ratio: float) -> str:
    """``12.50% of`` or, for a diverging run's ratios (1e113), ``1.31e+113 times``."""
    return f"{ratio:.2%} of" if ratio < 10 else f"{ratio:.3g} times"


def _fix(unstable: bool, standardized: bool | None, lr: float | None, epochs: int | None) -> str:
    tips = []
    if unstable:
        tips.append(
            f"lower optimizer.lr (try optimizer.lr={lr / 10:g})" if lr else "lower optimizer.lr"
        )
    if standardized is False:
        tips.append("standardize the features (dataset.standardize=true)")
    if not unstable:
        tips.append(
            f"train longer (epochs={epochs * 10})" if epochs else "train longer (more epochs)"
        )
    return "; ".join(tips)
