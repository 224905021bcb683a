"""Per-sample SGD on scalars: the loop a practitioner writes for a tiny network.

With ``batch_size=1`` an update of a model with a few scalar parameters costs about
a microsecond of numpy scalar arithmetic, so anything the general epoch loop does per
update (a call to ``step``, a dict of gradients, copying them into the flat buffer,
array-valued optimizer arithmetic, a dot product for the norm) costs more than the
update itself. A model opts in by declaring, next to its ``loss_and_grad``:

* ``sample_params``: its parameter names, all 0-d, in the order below;
* ``sample_inputs(X)``: what one row hands the model (iterated row by row);
* ``sample_loss_and_grad(*params, x, y)``: one row's loss and gradients, on scalars,
  with the same operations as ``loss_and_grad`` on that row (so the same bits).

The numpy backend then runs each chunk as one function generated for the model's
parameter count and the optimizer (:data:`gradtrack.optimizers.SCALAR_RULES`): one
call per update, the optimizer rule and the gradient norm inline. It records what
the general loop records (mean loss and mean gradient norm per epoch, summed in
order) and draws the same row orders from the :class:`BatchPlan`. Where the model
does not opt in, or clipping, another dtype or a wider model is asked for, the
general loop runs instead; tests/test_backends_speed.py checks both give the same
bits for every optimizer, shuffled or not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from gradtrack.optimizers import SCALAR_RULES, Hyper, OptimizerSpec

# The gradient norm is summed left to right on scalars, as numpy's dot does for a
# short vector (the general loop's ``sqrt(g @ g)``); longer vectors are summed in
# blocks by BLAS, so wider models keep the general loop.
MAX_PARAMS = 8


def takes_samples(problem, names: list[str], params: list, plan, method: str) -> bool:
    """Per-sample SGD of a problem that offers ``method`` for its scalar parameters."""
    return bool(
        plan is not None
        and not plan.full
        and plan.batch_size == 1
        and getattr(problem, method, None) is not None
        and list(getattr(problem, "sample_params", ())) == names
        and all(tuple(p.shape) == () for p in params)
    )


def applies(problem, names: list[str], params: list, spec: OptimizerSpec, dtype, plan) -> bool:
    """Whether the numpy scalar loop can stand in for the general one, bit for bit."""
    return bool(
        takes_samples(problem, names, params, plan, "sample_loss_and_grad")
        and len(names) <= MAX_PARAMS
        and np.dtype(dtype) == np.float64  # float32 norms: BLAS sdot's order differs
        and spec.clip_norm <= 0
        and spec.name in SCALAR_RULES
    )


@functools.cache
def epochs_function(n_params: int, optimizer: str) -> Callable:
    """``run(grad, XS, TS, params, slots, t, hyper) -> (losses, norms, params, slots, t)``.

    ``XS``/``TS``: one sequence of inputs/targets per epoch; ``params``: the scalars;
    ``slots``: the optimizer's state, one list of scalars per slot.
    """
    rule = SCALAR_RULES[optimizer]
    n_slots = OptimizerSpec(optimizer).n_slots
    ps = [f"p{i}" for i in range(n_params)]
    gs = [f"g{i}" for i in range(n_params)]
    slots = [[f"s{j}_{i}" for i in range(n_params)] for j in range(n_slots)]
    body = [f"{', '.join(ps)}, = params"]
    body += [f"{', '.join(s)}, = slots[{j}]" for j, s in enumerate(slots)]
    body += [
        "lr, mu, b1, c1, b2, c2, eps = hyper",
        "losses = []",
        "norms = []",
        "for xs, ts in zip(XS, TS):",
        "    tot_loss = tot_norm = 0.0",
        "    for x, y in zip(xs, ts):",
        f"        loss, {', '.join(gs)}, = grad({', '.join(ps)}, x, y)",
        "        tot_loss += loss",
        f"        tot_norm += sqrt({' + '.join(f'{g} * {g}' for g in gs)})",
    ]
    body += [f"        {line}" for line in rule["pre"]]
    for i in range(n_params):
        names = {"p": ps[i], "g": gs[i], **{f"s{j}": slots[j][i] for j in range(n_slots)}}
        body += [f"        {line.format(**names)}" for line in rule["each"]]
    body += ["    n = len(xs)"]
    if "t += 1" not in rule["pre"]:  # the step count, when the rule does not keep it
        body += ["    t += n"]
    state = ", ".join("[" + ", ".join(s) + "]" for s in slots)
    body += [
        "    losses.append(tot_loss / n)",
        "    norms.append(tot_norm / n)",
        f"return losses, norms, [{', '.join(ps)}], [{state}], t",
    ]
    src = "def run(grad, XS, TS, params, slots, t, hyper, sqrt=sqrt):\n" + "\n".join(
        "    " + line for line in body
    )
    scope: dict = {"sqrt": math.sqrt}
    exec(
        compile(src, f"<gradtrack per-sample loop: {n_params} params, {optimizer}>", "exec"), scope
    )
    run = scope["run"]
    run.source = src  # for a reader (and a failing test) to see what runs
    return run


def hyper(spec: OptimizerSpec) -> tuple:
    """The rule's numbers in the order ``epochs_function`` unpacks them."""
    h = Hyper.of(spec)
    return (h.lr, h.momentum, h.beta1, h.one_minus_beta1, h.beta2, h.one_minus_beta2, h.eps)
