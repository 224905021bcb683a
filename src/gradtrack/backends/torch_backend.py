"""The PyTorch backend: gradients from autograd (``loss.backward()``)."""

from __future__ import annotations

import numpy as np
import torch

from gradtrack.backends.base import BatchPlan, StepRecord
from gradtrack.models.base import Params
from gradtrack.optimizers import OptimizerSpec, apply_update

# The models are tiny: more than one intra-op thread only adds dispatch overhead.
torch.set_num_threads(1)


class TorchOps:
    tanh = staticmethod(torch.tanh)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    sum = staticmethod(torch.sum)
    mean = staticmethod(torch.mean)
    reciprocal = staticmethod(torch.reciprocal)

    @staticmethod
    def softplus(z):
        # threshold=inf: never switch to the linear approximation (exact log1p(exp)).
        return torch.nn.functional.softplus(z, beta=1.0, threshold=float("inf"))

    @staticmethod
    def maximum(a, b):
        return torch.clamp(a, min=b)

    @staticmethod
    def matvec(X, w):
        return torch.mv(X, w)


OPS = TorchOps()
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _tensor(a, dtype, grad=False):
    return torch.tensor(np.asarray(a), dtype=_DTYPES[dtype], requires_grad=grad)


def loss_and_grad(problem, params: Params, X, y, dtype: str = "float64"):
    """Loss and gradient from autograd at ``params``."""
    tp = {k: _tensor(v, dtype, grad=True) for k, v in params.items()}
    Xt = None if X is None else _tensor(X, dtype)
    yt = None if y is None else _tensor(y, dtype)
    loss = problem.loss(OPS, tp, Xt, yt)
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy().astype(np.float64) for k, t in tp.items()}


class TorchTrainer:
    def __init__(self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype: str, plan):
        self.problem = problem
        self.spec = spec
        self.names = list(params0)
        self._p = [_tensor(params0[k], dtype, grad=True) for k in self.names]
        self._slots = [
            [torch.zeros_like(p, requires_grad=False) for p in self._p] for _ in range(spec.n_slots)
        ]
        self.X = None if X is None else _tensor(X, dtype)
        self.y = None if y is None else _tensor(y, dtype)
        self.plan: BatchPlan | None = plan
        self.t = 0

    def _batches(self):
        plan = self.plan
        if self.X is None or plan is None or plan.full:
            yield self.X, self.y
            return
        order, bs = plan.next_order(), plan.batch_size
        if order is not None:
            order = torch.from_numpy(order)
        for start in range(0, plan.n, bs):
            if order is None:
                yield self.X[start : start + bs], self.y[start : start + bs]
            else:
                idx = order[start : start + bs]
                yield self.X[idx], self.y[idx]

    def _step(self, Xb, yb):
        params = dict(zip(self.names, self._p))
        loss = self.problem.loss(OPS, params, Xb, yb)
        loss.backward()
        grads = [p.grad for p in self._p]
        self.t += 1
        with torch.no_grad():
            gnorm = torch.sqrt(sum(torch.sum(g * g) for g in grads))
            new, self._slots = apply_update(OPS, self.spec, self._p, grads, self._slots, self.t)
            for p, v in zip(self._p, new):
                p.copy_(v)
                p.grad = None  # the notebook's lesson: gradients accumulate unless reset
        return loss.detach(), gnorm

    def run(self, n_steps: int) -> StepRecord:
        losses, norms, values = [], [], []
        for _ in range(n_steps):
            ls, gs = [], []
            for Xb, yb in self._batches():
                loss, gnorm = self._step(Xb, yb)
                ls.append(loss)
                gs.append(gnorm)
            # Keep results on the tensor side; one host copy per chunk, not per step.
            losses.append(ls[0] if len(ls) == 1 else torch.stack(ls).to(torch.float64).mean())
            norms.append(gs[0] if len(gs) == 1 else torch.stack(gs).to(torch.float64).mean())
            if not self.problem.uses_data:
                values.append(self._p[0].detach().clone())
        as_np = lambda ts: torch.stack(ts).to(torch.float64).numpy()  # noqa: E731
        return StepRecord(as_np(losses), as_np(norms), as_np(values) if values else None)

    def params(self) -> Params:
        return {k: p.detach().numpy().astype(np.float64) for k, p in zip(self.names, self._p)}


def make_trainer(problem, params0, X, y, spec, dtype="float32", eager=False, plan=None):
    return TorchTrainer(problem, params0, X, y, spec, dtype, plan)
