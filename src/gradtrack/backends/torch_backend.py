"""The PyTorch backend: gradients from autograd (``loss.backward()``)."""

from __future__ import annotations

import numpy as np
import torch

from gradtrack.backends import sample_loop
from gradtrack.backends.base import EpochTrainer, Trainer
from gradtrack.models.base import Params
from gradtrack.optimizers import OptimizerSpec, make_inplace_update

# The models are tiny: more than one intra-op thread only adds dispatch overhead.
torch.set_num_threads(1)


class TorchOps:
    """The array namespace in torch (see models.base.NumpyOps for what each one means)."""

    tanh, exp, log, sqrt, sum, mean, reciprocal = map(
        staticmethod,
        (torch.tanh, torch.exp, torch.log, torch.sqrt, torch.sum, torch.mean, torch.reciprocal),
    )

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


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend.device={device!r}: valid: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("backend.device=cuda: PyTorch sees no GPU; use auto or cpu")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


def _data(a, dtype, device):
    # as_tensor shares the numpy buffer on the CPU: a 1e6×100 set is not copied.
    return torch.as_tensor(np.ascontiguousarray(a, dtype=dtype), device=device)


def _sq_norm(g):
    # One op per parameter: a dot for a vector, a product for a scalar.
    d = g.dim()
    return torch.dot(g, g) if d == 1 else (g * g if d == 0 else torch.sum(g * g))


class TorchTrainer(EpochTrainer):
    """Eager autograd with the loop a practitioner would write: one backward per step,
    parameters and optimizer state updated in place under ``no_grad``."""

    def __init__(
        self, problem, params0: Params, X, y, spec: OptimizerSpec, dtype: str, plan, device="auto"
    ):
        self.spec = spec
        self.device = resolve_device(device)
        tdt = _DTYPES[dtype]
        self.names = list(params0)
        self._p = [
            torch.tensor(np.asarray(params0[k]), dtype=tdt, device=self.device, requires_grad=True)
            for k in self.names
        ]
        self._params = dict(zip(self.names, self._p))  # same tensors all run long
        self._slots = [[torch.zeros_like(p) for p in self._p] for _ in range(spec.n_slots)]
        self._update = make_inplace_update(OPS, spec, self._p, self._slots)
        X = None if X is None else _data(X, dtype, self.device)
        y = None if y is None else _data(y, dtype, self.device)
        # Per-sample SGD of a problem with a scalar forward (``sample_loss``): each
        # step differentiates that on one row's 0-d tensors, split once per run (or
        # per shuffled epoch), not the batch forward on a 1-row slice (see
        # backends/sample_loop.py). The same operations, so the same bits.
        self.rows = sample_loop.takes_samples(problem, self.names, self._p, plan, "sample_loss")
        if self.rows:
            X = problem.sample_inputs(X)
        self._setup_loop(problem, X, y, plan)

    def _stepper(self):
        params, ps, update = self._params, self._p, self._update
        no_grad, sqrt = torch.no_grad, torch.sqrt
        if self.rows:
            sample_loss = self.problem.sample_loss

            def forward(x, y):
                return sample_loss(OPS, *ps, x, y)

        else:
            loss_fn = self.problem.loss

            def forward(Xb, yb):
                return loss_fn(OPS, params, Xb, yb)

        def step(Xb, yb, t):
            loss = forward(Xb, yb)
            loss.backward()
            with no_grad():
                grads = [p.grad for p in ps]
                sq = _sq_norm(grads[0])
                for g in grads[1:]:
                    sq = sq + _sq_norm(g)
                update(grads, t)
                for p in ps:
                    p.grad = None  # the notebook's lesson: gradients accumulate unless reset
            # Results stay on the tensor side: one host copy per chunk, not per step.
            return loss.detach(), sqrt(sq)

        return step

    def _value(self):
        return self._p[0].detach().clone()

    @staticmethod
    def _mean(xs):
        return torch.stack(xs).to(torch.float64).mean()

    @staticmethod
    def _array(xs):
        return torch.stack(xs).to(torch.float64).cpu().numpy()

    def _order(self, order):
        return torch.from_numpy(order).to(self.device)

    def params(self) -> Params:
        return {k: p.detach().cpu().numpy().astype(np.float64) for k, p in self._params.items()}


def make_trainer(
    problem, params0, X, y, *, spec, dtype="float32", plan=None, eager=False, device="auto"
) -> Trainer:
    """A trainer at ``params0`` (see backends/base.py); ``eager``: TensorFlow only."""
    return TorchTrainer(problem, params0, X, y, spec, dtype, plan, device)
