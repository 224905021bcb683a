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
    batch_size: int = 0
    shuffle: bool = False

    @property
    def n_slots(self) -> int:
        """How many state arrays per parameter the rule keeps."""
        return {"sgd": 0, "momentum": 1, "adam": 2}[self.name]


def clip_by_global_norm(ops: Any, grads: list, clip_norm: float) -> list:
    """Scale all gradients so their joint L2 norm is at most ``clip_norm``."""
    if clip_norm <= 0:
        return grads
    sq = ops.sum(grads[0] * grads[0])
    for g in grads[1:]:
        sq = sq + ops.sum(g * g)
    norm = ops.sqrt(sq)
    # clip / max(norm, clip) is exactly 1 when the norm is within bounds.
    scale = clip_norm / ops.maximum(norm, clip_norm)
    return [g * scale for g in grads]


def apply_update(
    ops: Any, spec: OptimizerSpec, params: list, grads: list, slots: list, t: Any
) -> tuple[list, list]:
    """One optimizer step. ``t`` is the 1-based step count; returns (params, slots)."""
    grads = clip_by_global_norm(ops, grads, spec.clip_norm)
    lr = spec.lr
    if spec.name == "sgd":
        return [p - lr * g for p, g in zip(params, grads)], slots
    if spec.name == "momentum":
        mu = spec.momentum
        vs = [mu * v + g for v, g in zip(slots[0], grads)]
        return [p - lr * v for p, v in zip(params, vs)], [vs]
    if spec.name == "adam":
        b1, b2, eps = spec.beta1, spec.beta2, spec.eps
        ms = [b1 * m + (1 - b1) * g for m, g in zip(slots[0], grads)]
        vs = [b2 * v + (1 - b2) * (g * g) for v, g in zip(slots[1], grads)]
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        new = [p - lr * (m / bc1) / (ops.sqrt(v / bc2) + eps) for p, m, v in zip(params, ms, vs)]
        return new, [ms, vs]
    raise ValueError(f"unknown optimizer {spec.name!r}; valid: sgd, momentum, adam")
