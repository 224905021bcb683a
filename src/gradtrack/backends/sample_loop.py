"""Per-sample SGD on scalars: the loop a practitioner writes for a tiny network.

With ``batch_size=1`` an update of a model with a few scalar parameters costs about
a microsecond of numpy scalar arithmetic, so anything the general epoch loop does per
update (a call to ``step``, a dict of gradients, copying them into the flat buffer,
array-valued optimizer arithmetic, a dot product for the norm) costs more than the
update itself. A model opts in by declaring, next to its ``loss_and_grad``:

* ``sample_params``: its parameter names, all 0-d, in the order below;
* ``sample_inputs(X)``: what one row hands the model (iterated row by row);
* ``sample_loss_and_grad(*params, x, y)``: one row's loss and gradients, on scalars,
  with the same operations as ``loss_and_grad`` on that row (so the same bits);
* ``sample_loss(ops, *params, x, y)``: one row's forward loss, for autograd (the
  PyTorch backend differentiates it on 0-d tensors instead of the batch forward).

The numpy backend then runs each chunk as one function generated for the model's
parameters and the optimizer (:data:`gradtrack.optimizers.SCALAR_RULES`): the
optimizer rule and the gradient norm inline, and the model's gradient too where its
body can be pasted safely (else one call per update; see :func:`_inlined`). It
records what
the general loop records (mean loss and mean gradient norm per epoch, summed in
order) and draws the same row orders from the :class:`BatchPlan`. Where the model
does not opt in, or clipping, another dtype or a wider model is asked for, the
general loop runs instead; tests/test_backends_speed.py checks both give the same
bits for every optimizer, shuffled or not.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import textwrap
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
def epochs_function(grad: Callable, n_params: int, optimizer: str, inline: bool = True):
    """``run(XS, TS, params, slots, t, hyper) -> (losses, norms, params, slots, t)``.

    ``XS``/``TS``: one sequence of inputs/targets per epoch; ``params``: the scalars;
    ``slots``: the optimizer's state, one list of scalars per slot. ``grad`` is the
    model's ``sample_loss_and_grad``; with ``inline`` its body is pasted into the
    loop where that is safe (:func:`_inlined`), saving a call per update; otherwise
    the loop calls it.
    """
    rule = SCALAR_RULES[optimizer]
    n_slots = OptimizerSpec(optimizer).n_slots
    gs = [f"_g{i}" for i in range(n_params)]
    slots = [[f"_s{j}_{i}" for i in range(n_params)] for j in range(n_slots)]

    def source(ps: list[str], x: str, y: str, grad_lines: list[str], bound=()) -> str:
        body = [f"{', '.join(ps)}, = params"]
        body += [f"{', '.join(s)}, = slots[{j}]" for j, s in enumerate(slots)]
        body += [
            "lr, mu, b1, c1, b2, c2, eps = hyper",
            "_losses = []",
            "_norms = []",
            "for _xs, _ts in zip(XS, TS):",
            "    _tot_loss = _tot_norm = 0.0",
            f"    for {x}, {y} in zip(_xs, _ts):",
            *(f"        {line}" for line in grad_lines),
            "        _tot_loss += _loss",
            f"        _tot_norm += sqrt({' + '.join(f'{g} * {g}' for g in gs)})",
        ]
        body += [f"        {line}" for line in rule["pre"]]
        for i in range(n_params):
            names = {"p": ps[i], "g": gs[i], **{f"s{j}": slots[j][i] for j in range(n_slots)}}
            body += [f"        {line.format(**names)}" for line in rule["each"]]
        body += ["    _n = len(_xs)"]
        if "t += 1" not in rule["pre"]:  # the step count, when the rule does not keep it
            body += ["    t += _n"]
        state = ", ".join("[" + ", ".join(s) + "]" for s in slots)
        body += [
            "    _losses.append(_tot_loss / _n)",
            "    _norms.append(_tot_norm / _n)",
            f"return _losses, _norms, [{', '.join(ps)}], [{state}], t",
        ]
        # Names the loop reads every update are its own locals (defaults).
        bound = "".join(f", {k}={k}" for k in ("sqrt", "_grad", *bound))
        head = f"def run(XS, TS, params, slots, t, hyper{bound}):\n"
        return head + "\n".join("    " + line for line in body)

    ps = [f"_p{i}" for i in range(n_params)]
    call = [f"_loss, {', '.join(gs)}, = _grad({', '.join(ps)}, _x, _y)"]
    src, scope = source(ps, "_x", "_y", call), dict(grad.__globals__)
    pasted = _inlined(grad, n_params, ast.parse(src)) if inline else None
    if pasted is not None:
        names, lines, defaults = pasted
        x, y = names[n_params : n_params + 2]
        src = source(names[:n_params], x, y, lines, tuple(defaults))
        scope.update(defaults)
    scope.update(sqrt=math.sqrt, _grad=grad)
    where = f"<gradtrack per-sample loop: {n_params} params, {optimizer}>"
    exec(compile(src, where, "exec"), scope)
    run = scope["run"]
    run.source = src  # for a reader (and a failing test) to see what runs
    return run


def _inlined(grad: Callable, n_params: int, loop: ast.Module):
    """``grad``'s body as loop lines: (argument names, lines, globals) or None.

    Only for a plain function whose arguments are the parameters, the input and the
    target (then optional ones with defaults, bound as globals), whose one ``return``
    is its last statement (a tuple of loss and gradients, assigned to the loop's
    names instead), that defines no nested scope and shares no name with the loop.
    """
    try:
        src = textwrap.dedent(inspect.getsource(grad))
        fn = ast.parse(src).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    if not inspect.isfunction(grad) or not isinstance(fn, ast.FunctionDef):
        return None
    a = fn.args
    names = [arg.arg for arg in a.args]
    n_req = len(names) - len(a.defaults)
    if a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg or n_req != n_params + 2:
        return None
    *stmts, last = fn.body
    scoped = (ast.Return, ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    scoped += (ast.Global, ast.Nonlocal, ast.ListComp, ast.SetComp, ast.DictComp)
    scoped += (ast.GeneratorExp, ast.Yield, ast.YieldFrom, ast.Await)
    if any(isinstance(n, scoped) for st in stmts for n in ast.walk(st)):
        return None
    if not (isinstance(last, ast.Return) and isinstance(last.value, ast.Tuple)):
        return None
    results = last.value.elts
    if len(results) != n_params + 1 or any(isinstance(e, ast.Starred) for e in results):
        return None
    used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | set(names)
    reserved = {n.id for n in ast.walk(loop) if isinstance(n, ast.Name)}
    reserved |= {a.arg for a in loop.body[0].args.args} | {"run"}
    if used & reserved:
        return None
    if any(
        isinstance(n, ast.Name) and n.id in names[: n_params + 2] and isinstance(n.ctx, ast.Store)
        for st in stmts
        for n in ast.walk(st)
    ):
        return None  # it rebinds a parameter or the row: the loop's own variables
    lines = [ast.unparse(st) for st in stmts]
    targets = ["_loss", *(f"_g{i}" for i in range(n_params))]
    lines += [f"{t} = {ast.unparse(e)}" for t, e in zip(targets, results)]
    return names, lines, dict(zip(names[n_req:], grad.__defaults__ or ()))


def hyper(spec: OptimizerSpec) -> tuple:
    """The rule's numbers in the order ``epochs_function`` unpacks them."""
    h = Hyper.of(spec)
    return (h.lr, h.momentum, h.beta1, h.one_minus_beta1, h.beta2, h.one_minus_beta2, h.eps)
