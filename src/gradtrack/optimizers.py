"""Optimizer update rules, written once and shared by every backend.

Each rule is a pure function of the parameters, gradients and optimizer state,
built from arithmetic and ``ops.sqrt`` only, so numpy, PyTorch and TensorFlow run
the same sequence of floating-point operations (that is what makes the float64
loss trajectories agree to 1e-9). Conventions follow PyTorch: momentum keeps
``v ← μ·v + g`` and steps ``p ← p − lr·v``; Adam uses bias-corrected moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 0.0

    @property
    def n_slots(self) -> int:
        """How many state arrays per parameter the rule keeps."""
        return {"sgd": 0, "momentum": 1, "adam": 2}[self.name]


def clip_by_global_norm(ops: Any, grads: list, clip_norm: Any) -> list:
    """Scale all gradients so their joint L2 norm is at most ``clip_norm`` (> 0)."""
    sq = ops.sum(grads[0] * grads[0])
    for g in grads[1:]:
        sq = sq + ops.sum(g * g)
    norm = ops.sqrt(sq)
    # clip / max(norm, clip) is exactly 1 when the norm is within bounds.
    scale = clip_norm / ops.maximum(norm, clip_norm)
    return [g * scale for g in grads]


def apply_update(
    ops: Any,
    spec: OptimizerSpec,
    params: list,
    grads: list,
    slots: list,
    t: Any,
    hyper: Hyper | None = None,
) -> tuple[list, list]:
    """One optimizer step. ``t`` is the 1-based step count; returns (params, slots).

    ``hyper`` overrides the spec's numbers (TensorFlow passes tensors); only
    ``spec.name`` and whether clipping is on then shape the computation.
    """
    steps, slots = update_steps(ops, spec, grads, slots, t, hyper)
    return [p - s for p, s in zip(params, steps)], slots


def update_steps(
    ops: Any, spec: OptimizerSpec, grads: list, slots: list, t: Any, hyper: Hyper | None = None
) -> tuple[list, list]:
    """:func:`apply_update` without the last subtraction: (steps, slots), where each
    parameter's new value is ``p - step``. For arrays updated in place
    (``p.assign_sub(step)`` in TensorFlow), which rounds exactly like ``p - step``.
    """
    h = hyper if hyper is not None else Hyper.of(spec)
    if spec.clip_norm > 0:
        grads = clip_by_global_norm(ops, grads, h.clip_norm)
    lr = h.lr
    if spec.name == "sgd":
        return [lr * g for g in grads], slots
    if spec.name == "momentum":
        mu = h.momentum
        vs = [mu * v + g for v, g in zip(slots[0], grads)]
        return [lr * v for v in vs], [vs]
    if spec.name == "adam":
        b1, b2, eps = h.beta1, h.beta2, h.eps
        ms = [b1 * m + h.one_minus_beta1 * g for m, g in zip(slots[0], grads)]
        vs = [b2 * v + h.one_minus_beta2 * (g * g) for v, g in zip(slots[1], grads)]
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        return [lr * (m / bc1) / (ops.sqrt(v / bc2) + eps) for m, v in zip(ms, vs)], [ms, vs]
    raise ValueError(f"unknown optimizer {spec.name!r}; valid: sgd, momentum, adam")


@dataclass(frozen=True)
class Hyper:
    """The rule's numbers, derived in Python double once (``1 - β`` is not recomputed
    in the array dtype), so every backend rounds them the same way. TensorFlow passes
    them into its compiled loop as a tensor, so a new lr never retraces."""

    lr: Any
    momentum: Any
    beta1: Any
    one_minus_beta1: Any
    beta2: Any
    one_minus_beta2: Any
    eps: Any
    clip_norm: Any

    @classmethod
    def of(cls, spec: OptimizerSpec) -> Hyper:
        s = spec
        return cls(s.lr, s.momentum, s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.eps, s.clip_norm)

    def as_list(self) -> list:
        return [getattr(self, f) for f in self.__dataclass_fields__]

    @classmethod
    def from_list(cls, values) -> Hyper:
        return cls(*values)


def make_inplace_update(ops: Any, spec: OptimizerSpec, params: list, slots: list):
    """``update(grads, t)``: :func:`apply_update` done in place on ``params``/``slots``.

    For numpy arrays and torch tensors (under ``no_grad``): the same operations in
    the same order as :func:`apply_update` (``p -= lr·g`` rounds exactly like
    ``p − lr·g``), without building new lists and arrays every step.
    """
    h = Hyper.of(spec)
    lr, clip = h.lr, h.clip_norm
    pairs = list(zip(params, *slots)) if slots else [(p,) for p in params]

    def clipped(grads: list) -> list:
        return clip_by_global_norm(ops, grads, clip) if clip > 0 else grads

    if spec.name == "sgd":

        def update(grads: list, t: int) -> None:
            for p, g in zip(params, clipped(grads)):
                p -= lr * g

    elif spec.name == "momentum":
        mu = h.momentum

        def update(grads: list, t: int) -> None:
            for (p, v), g in zip(pairs, clipped(grads)):
                v *= mu
                v += g
                p -= lr * v

    elif spec.name == "adam":
        b1, b2, eps, c1, c2 = h.beta1, h.beta2, h.eps, h.one_minus_beta1, h.one_minus_beta2
        sqrt = ops.sqrt

        def update(grads: list, t: int) -> None:
            bc1 = 1 - b1**t
            bc2 = 1 - b2**t
            for (p, m, v), g in zip(pairs, clipped(grads)):
                m *= b1
                m += c1 * g
                v *= b2
                v += c2 * (g * g)
                p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)

    else:
        raise ValueError(f"unknown optimizer {spec.name!r}; valid: sgd, momentum, adam")
    return update


# The rules once more, as source lines on scalars, for loops generated per model
# (backends/sample_loop.py): ``{p}`` a parameter, ``{g}`` its gradient, ``{s0}``/``{s1}``
# its state; ``lr, mu, b1, b2, c1, c2, eps`` as in :func:`make_inplace_update` and
# ``bc1``/``bc2`` from ``pre``, run once per update before the parameters'. The same
# operations in the same order as the in-place rules, so the same bits.
SCALAR_RULES: dict[str, dict[str, list[str]]] = {
    "sgd": {"pre": [], "each": ["{p} -= lr * {g}"]},
    "momentum": {"pre": [], "each": ["{s0} = {s0} * mu + {g}", "{p} -= lr * {s0}"]},
    "adam": {
        "pre": ["t += 1", "bc1 = 1 - b1**t", "bc2 = 1 - b2**t"],
        "each": [
            "{s0} = {s0} * b1 + c1 * {g}",
            "{s1} = {s1} * b2 + c2 * ({g} * {g})",
            "{p} -= lr * ({s0} / bc1) / (sqrt({s1} / bc2) + eps)",
        ],
    },
}
