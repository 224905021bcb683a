"""gradtrack next to the loop you would write by hand, per backend, in one process.

Each case trains the same problem twice, interleaved, best of ``repeats``:

* gradtrack: ``train.run(cfg)`` with tracking and checks off; its own
  ``train_seconds`` (the chunked loop, per-chunk bookkeeping included);
* plain: a hand-written loop in numpy / PyTorch / TensorFlow that does the same
  work: same data, initial parameters and optimizer rule, and it records the loss
  and the gradient norm of every step.

Both must end at the same loss (1e-12 relative in float64), so neither side can
win by doing less. TensorFlow is measured twice: the first run in a fresh process
(tracing included on both sides) and the steady state (traced functions reused on
both sides). The big-data section times one step on the synthetic 1e6×100 set
against the two matvecs it needs, each backend against its own.

    python benchmarks/plain_loops.py [--quick] [--out PATH]
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# the kernels gradtrack's TensorFlow backend uses (gradtrack.backends.prepare_tensorflow),
# whatever this CPU's default: the loops are compared on the same ones
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

TARGET = 1.10
FIT = ["dataset.features=[]", "dataset.standardize=true", "backend.dtype=float64"]
ZEROS = ["model.init=zeros"]
# name -> (overrides, steps). Full-batch fits start at zeros like the table.
CASES: dict[str, tuple[list[str], int]] = {
    "fit_linear/sgd": (
        ["dataset=auto_mpg", "dataset.dropna=true", "model=linear", "optimizer=sgd",
         "optimizer.lr=0.1", *FIT, *ZEROS], 3000),
    "fit_linear/momentum": (
        ["+experiment=fit_linear", "optimizer=momentum", "optimizer.lr=0.3",
         "optimizer.momentum=0.7", *ZEROS], 3000),
    "fit_linear/adam": (
        ["+experiment=fit_linear", "optimizer=adam", "optimizer.lr=0.05", *ZEROS], 3000),
    "fit_logistic/sgd": (["+experiment=fit_logistic", "optimizer.lr=2.0", *ZEROS], 3000),
    "fit_logistic/momentum": (
        ["+experiment=fit_logistic", "optimizer=momentum", "optimizer.lr=0.5", *ZEROS], 3000),
    "fit_logistic/adam": (
        ["+experiment=fit_logistic", "optimizer=adam", "optimizer.lr=0.05", *ZEROS], 3000),
    # Per-sample SGD: 200 epochs × 15 updates.
    "tanh_net/per_sample_sgd": (["+experiment=seed_backprop_scaled", "backend.dtype=float64"], 200),
}  # fmt: skip
BACKENDS = ("numpy", "torch", "tensorflow")


# ---------------------------------------------------------------------------------
# Configuration and data: exactly what train.run sees.


def config(case: str, backend: str, steps: int | None = None, root: Path = REPO):
    sys.path.insert(0, str(HERE))
    import measure

    overrides, default_steps = CASES[case]
    return measure.compose(
        *overrides,
        f"backend={backend}",
        "backend.dtype=float64",
        f"epochs={steps or default_steps}",
        "tracking.enabled=false",
        "checks.gradcheck=false",
        "checks.baseline=false",
        "progress_min_epochs=1000000000",
        root=root,
    )


def problem_data(cfg):
    """(model name, X, y, params0, optimizer config) as train.run draws them."""
    from gradtrack.build import build_problem, prepare

    _, ds = prepare(cfg)
    _, params0 = build_problem(cfg, ds)
    return cfg.model.name, ds.X, ds.y, params0, cfg.optimizer


def gradtrack_run(cfg) -> tuple[float, np.ndarray]:
    """Seconds of train.run's training loop, and the per-step losses."""
    from gradtrack import train

    res = train.run(cfg)
    return res.metrics["train_seconds"], res.losses


# ---------------------------------------------------------------------------------
# The plain loops. Written the way a practitioner would: arrays of the framework,
# in-place updates, the optimizer rule inline. Each returns (losses, grad_norms).


def _hp(opt) -> tuple[float, float, float, float, float]:
    return opt.lr, opt.momentum, opt.beta1, opt.beta2, opt.eps


class NumpyPlain:
    def __init__(self, model, X, y, params0, opt):
        self.model, self.X, self.y, self.p0, self.opt = model, X, y, params0, opt

    def run(self, steps: int):
        if self.model == "tanh_net":
            return self._tanh(steps)
        X, y, model = self.X, self.y, self.model
        n = X.shape[0]
        lr, mu, b1, b2, eps = _hp(self.opt)
        kind = self.opt.name
        w, b = self.p0["w"].copy(), float(self.p0["b"])
        vw, vb = np.zeros_like(w), 0.0  # momentum velocity / Adam first moment
        sw, sb = np.zeros_like(w), 0.0  # Adam second moment
        losses, norms = np.empty(steps), np.empty(steps)
        for i in range(steps):
            z = X @ w + b
            if model == "linear":
                r = z - y
                losses[i] = r @ r / n
                dz = r * (2 / n)
            else:
                sp = np.logaddexp(0.0, z)  # softplus: the stable log-loss
                losses[i] = np.mean(sp - y * z)
                dz = (np.exp(z - sp) - y) / n  # σ(z), reusing softplus
            gw = X.T @ dz
            gb = float(dz.sum())
            norms[i] = math.sqrt(gw @ gw + gb * gb)
            if kind == "sgd":
                w -= lr * gw
                b -= lr * gb
            elif kind == "momentum":
                vw *= mu
                vw += gw
                vb = mu * vb + gb
                w -= lr * vw
                b -= lr * vb
            else:
                t = i + 1
                vw *= b1
                vw += (1 - b1) * gw
                sw *= b2
                sw += (1 - b2) * (gw * gw)
                vb = b1 * vb + (1 - b1) * gb
                sb = b2 * sb + (1 - b2) * (gb * gb)
                c1, c2 = 1 - b1**t, 1 - b2**t
                w -= lr * (vw / c1) / (np.sqrt(sw / c2) + eps)
                b -= lr * (vb / c1) / (math.sqrt(sb / c2) + eps)
        return losses, norms

    def _tanh(self, epochs: int):
        """The notebook's per-sample loop: one row at a time, numpy scalars throughout.

        (The same loop on Python floats with math.tanh is several times faster still:
        it leaves numpy altogether, so it is not this backend's reference.)"""
        xs, ts = self.X[:, 0], self.y
        w1, w2, b = (self.p0[k][()] for k in ("w1", "w2", "b"))
        lr, n, tanh = self.opt.lr, len(xs), np.tanh
        losses, norms = np.empty(epochs), np.empty(epochs)
        for e in range(epochs):
            tot_l = tot_g = 0.0
            for x, t in zip(xs, ts):
                a1 = tanh(w1 * x)
                out = tanh(w2 * a1 + b)
                d = out - t
                tot_l += d * d * 0.5
                dz2 = d * (1 - out * out)
                dz1 = dz2 * w2 * (1 - a1 * a1)
                g1, g2, gb = dz1 * x, dz2 * a1, dz2
                tot_g += math.sqrt(g1 * g1 + g2 * g2 + gb * gb)
                w1 -= lr * g1
                w2 -= lr * g2
                b -= lr * gb
            losses[e], norms[e] = tot_l / n, tot_g / n
        return losses, norms


class TorchPlain:
    def __init__(self, model, X, y, params0, opt):
        import torch

        torch.set_num_threads(1)  # as gradtrack's torch backend: tiny models
        self.torch = torch
        self.model, self.opt, self.p0 = model, opt, params0
        self.X = torch.from_numpy(np.ascontiguousarray(X))
        self.y = torch.from_numpy(np.ascontiguousarray(y))

    def run(self, steps: int):
        torch = self.torch
        if self.model == "tanh_net":
            return self._tanh(steps)
        X, y, model, kind = self.X, self.y, self.model, self.opt.name
        lr, mu, b1, b2, eps = _hp(self.opt)
        w = torch.tensor(self.p0["w"], requires_grad=True)
        b = torch.tensor(self.p0["b"], requires_grad=True)
        state = [[torch.zeros_like(p) for p in (w, b)] for _ in range(2)]
        losses, norms = [], []
        softplus = torch.nn.functional.softplus
        for i in range(steps):
            z = torch.mv(X, w) + b
            if model == "linear":
                r = z - y
                loss = torch.mean(r * r)
            else:
                loss = torch.mean(softplus(z, threshold=float("inf")) - y * z)
            loss.backward()
            with torch.no_grad():
                gw, gb = w.grad, b.grad
                norms.append(torch.sqrt(gw @ gw + gb * gb))
                losses.append(loss.detach())
                _torch_update(kind, (w, b), (gw, gb), state, i + 1, lr, mu, b1, b2, eps)
                w.grad = b.grad = None
        return torch.stack(losses).numpy(), torch.stack(norms).numpy()

    def _tanh(self, epochs: int):
        torch = self.torch
        x, t = self.X[:, 0], self.y
        w1, w2, b = (torch.tensor(self.p0[k], requires_grad=True) for k in ("w1", "w2", "b"))
        lr, n = self.opt.lr, len(t)
        losses, norms = [], []
        for _ in range(epochs):
            tot_l = tot_g = 0.0
            for i in range(n):
                out = torch.tanh(w2 * torch.tanh(w1 * x[i]) + b)
                d = out - t[i]
                loss = d * d * 0.5
                loss.backward()
                with torch.no_grad():
                    g = (w1.grad, w2.grad, b.grad)
                    tot_g += torch.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
                    tot_l += loss
                    for p, gi in zip((w1, w2, b), g):
                        p -= lr * gi
                        p.grad = None
            losses.append(tot_l / n)
            norms.append(tot_g / n)
        return torch.stack(losses).numpy(), torch.stack(norms).numpy()


def _torch_update(kind, params, grads, state, t, lr, mu, b1, b2, eps):
    import torch

    for p, g, m, v in zip(params, grads, state[0], state[1]):
        if kind == "sgd":
            p -= lr * g
        elif kind == "momentum":
            m.mul_(mu).add_(g)
            p -= lr * m
        else:
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * (g * g))
            p -= lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)


class TensorFlowPlain:
    """One tf.function over the whole loop, closing over its variables. ``run`` resets
    the variables and calls it again: traced on the first call only."""

    def __init__(self, model, X, y, params0, opt):
        import tensorflow as tf

        self.tf, self.model, self.opt, self.p0 = tf, model, opt, params0
        self.X = tf.constant(X)
        self.y = tf.constant(y)
        names = ("w1", "w2", "b") if model == "tanh_net" else ("w", "b")
        self.names = names
        self.vars = [tf.Variable(params0[k]) for k in names]
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.fn = tf.function(self._tanh if model == "tanh_net" else self._fit)

    def run(self, steps: int):
        for var, k in zip(self.vars, self.names):
            var.assign(self.p0[k])
        for s in self.m + self.v:
            s.assign(self.tf.zeros_like(s))
        losses, norms = self.fn(self.tf.constant(steps))
        return losses.numpy(), norms.numpy()

    def _update(self, grads, t):
        tf = self.tf
        lr, mu, b1, b2, eps = _hp(self.opt)
        for p, g, m, v in zip(self.vars, grads, self.m, self.v):
            if self.opt.name == "sgd":
                p.assign_sub(lr * g)
            elif self.opt.name == "momentum":
                m.assign(mu * m + g)
                p.assign_sub(lr * m)
            else:
                m.assign(b1 * m + (1 - b1) * g)
                v.assign(b2 * v + (1 - b2) * (g * g))
                p.assign_sub(lr * (m / (1 - b1**t)) / (tf.sqrt(v / (1 - b2**t)) + eps))

    def _fit(self, steps):
        tf = self.tf
        X, y = self.X, self.y
        w, b = self.vars
        losses = tf.TensorArray(tf.float64, size=steps)
        norms = tf.TensorArray(tf.float64, size=steps)
        for i in tf.range(steps):
            with tf.GradientTape() as tape:
                z = tf.linalg.matvec(X, w) + b
                if self.model == "linear":
                    r = z - y
                    loss = tf.reduce_mean(r * r)
                else:
                    loss = tf.reduce_mean(tf.math.softplus(z) - y * z)
            gw, gb = tape.gradient(loss, [w, b])
            losses = losses.write(i, loss)
            norms = norms.write(i, tf.sqrt(tf.reduce_sum(gw * gw) + gb * gb))
            self._update((gw, gb), tf.cast(i + 1, tf.float64))
        return losses.stack(), norms.stack()

    def _tanh(self, epochs):
        tf = self.tf
        x, t = self.X[:, 0], self.y
        n = x.shape[0]
        w1, w2, b = self.vars
        losses = tf.TensorArray(tf.float64, size=epochs)
        norms = tf.TensorArray(tf.float64, size=epochs)
        for e in tf.range(epochs):
            tot_l = tf.constant(0.0, tf.float64)
            tot_g = tf.constant(0.0, tf.float64)
            for i in tf.range(n):
                with tf.GradientTape() as tape:
                    out = tf.tanh(w2 * tf.tanh(w1 * x[i]) + b)
                    d = out - t[i]
                    loss = d * d * 0.5
                g = tape.gradient(loss, self.vars)
                tot_l += loss
                tot_g += tf.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
                self._update(g, tf.cast(e * n + i + 1, tf.float64))
            losses = losses.write(e, tot_l / n)
            norms = norms.write(e, tot_g / n)
        return losses.stack(), norms.stack()


PLAIN = {"numpy": NumpyPlain, "torch": TorchPlain, "tensorflow": TensorFlowPlain}


def _same_final_loss(case: str, backend: str, plain: np.ndarray, ours: np.ndarray) -> float:
    rel = abs(plain[-1] - ours[-1]) / abs(plain[-1])
    assert len(plain) == len(ours), (case, backend, len(plain), len(ours))
    assert rel <= 1e-12, f"{case} on {backend}: final losses differ by {rel:.2e} relative"
    return rel


# ---------------------------------------------------------------------------------
# In-process figures: interleaved, best of k.


def in_process(
    cases: tuple[str, ...] = tuple(CASES),
    backends: tuple[str, ...] = BACKENDS,
    repeats: int = 3,
    steps: int | None = None,
    root: Path = REPO,
) -> dict[str, Any]:
    """{case: {backend: {plain_s, gradtrack_s, ratio, ...}}}; TF figures are steady state."""
    out: dict[str, Any] = {}
    for case in cases:
        out[case] = {}
        for be in backends:
            cfg = config(case, be, steps, root)
            model, X, y, p0, opt = problem_data(cfg)
            plain = PLAIN[be](model, X, y, p0, opt)
            # Warm-up on both sides: TF traces (gradtrack's cache, the plain function).
            pl, _ = plain.run(cfg.epochs)
            _, ours = gradtrack_run(cfg)
            rel = _same_final_loss(case, be, pl, ours)
            tp, tg = [], []
            for k in range(repeats):
                for side in ("plain", "ours") if k % 2 == 0 else ("ours", "plain"):
                    gc.collect()  # neither side pays for the other's garbage
                    if side == "plain":
                        t0 = time.perf_counter()
                        plain.run(cfg.epochs)
                        tp.append(time.perf_counter() - t0)
                    else:
                        tg.append(gradtrack_run(cfg)[0])
            updates = cfg.epochs * (len(X) if cfg.optimizer.batch_size == 1 else 1)
            out[case][be] = {
                "steps": cfg.epochs,
                "updates": updates,
                "plain_s": min(tp),
                "gradtrack_s": min(tg),
                "plain_us_per_update": min(tp) / updates * 1e6,
                "gradtrack_us_per_update": min(tg) / updates * 1e6,
                "ratio": min(tg) / min(tp),
                # Each repeat's two runs are adjacent in time: the median of their
                # ratios is steadier where the machine's state flips between repeats
                # (TF spreads a 768-row op over both cores only when both are free).
                "ratio_paired_median": statistics.median(g / p for g, p in zip(tg, tp)),
                "final_loss": float(ours[-1]),
                "final_loss_rel_diff": rel,
            }
    return out


# ---------------------------------------------------------------------------------
# TensorFlow first run: each side in its own fresh process, tracing included.


def _first_run_child(side: str, case: str, steps: int, root: str) -> dict[str, float]:
    cfg = config(case, "tensorflow", steps, Path(root))
    if side == "gradtrack":
        secs, losses = gradtrack_run(cfg)
    else:
        model, X, y, p0, opt = problem_data(cfg)
        # As train.run: the import and the tensors/variables are made before the clock
        # starts; the first call (tracing and the loop) is timed.
        plain = TensorFlowPlain(model, X, y, p0, opt)
        t0 = time.perf_counter()
        losses, _ = plain.run(cfg.epochs)
        secs = time.perf_counter() - t0
    return {"seconds": secs, "final_loss": float(losses[-1])}


def tf_first_run(
    cases: tuple[str, ...] = ("fit_linear/sgd", "fit_logistic/adam", "tanh_net/per_sample_sgd"),
    repeats: int = 2,
    steps: int | None = None,
    root: Path = REPO,
) -> dict[str, Any]:
    """Fresh process per measurement, sides alternating; best of ``repeats`` each."""
    out: dict[str, Any] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    for case in cases:
        got: dict[str, list[dict[str, float]]] = {"plain": [], "gradtrack": []}
        n = steps or CASES[case][1]
        for k in range(repeats):
            for side in ("plain", "gradtrack") if k % 2 == 0 else ("gradtrack", "plain"):
                code = (
                    f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import plain_loops as p; "
                    f"print(json.dumps(p._first_run_child({side!r}, {case!r}, {n}, {str(root)!r})))"
                )
                res = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=root,
                    timeout=600,
                )
                if res.returncode != 0:
                    raise RuntimeError(f"first-run child failed: {res.stderr[-2000:]}")
                got[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
        fp, fg = got["plain"][0]["final_loss"], got["gradtrack"][0]["final_loss"]
        rel = _same_final_loss(case, "tensorflow", np.array([fp]), np.array([fg]))
        p = min(r["seconds"] for r in got["plain"])
        g = min(r["seconds"] for r in got["gradtrack"])
        out[case] = {
            "steps": n,
            "plain_s": p,
            "gradtrack_s": g,
            "ratio": g / p,
            "final_loss_rel_diff": rel,
        }
    return out


# ---------------------------------------------------------------------------------
# Big data: one full-batch linear step on 1e6×100 vs the two matvecs it needs.


def _two_matvecs(backend: str, X, y, w):
    """A callable doing ``k`` rounds of X·w and Xᵀ·r in the backend's own arrays."""
    if backend == "numpy":

        def f(k):
            for _ in range(k):
                r = X @ w
                X.T @ r

        return f
    if backend == "torch":
        import torch

        Xt, wt = torch.from_numpy(X), torch.from_numpy(w)

        def f(k):
            for _ in range(k):
                r = torch.mv(Xt, wt)
                torch.mv(Xt.T, r)

        return f
    import tensorflow as tf

    Xt, wt = tf.constant(X), tf.constant(w)

    @tf.function
    def mv(k):
        acc = tf.zeros_like(wt)
        for _ in tf.range(k):
            r = tf.linalg.matvec(Xt, wt + acc * 0)
            acc = tf.linalg.matvec(Xt, r, transpose_a=True)
        return acc

    mv(tf.constant(1))
    return lambda k: mv(tf.constant(k)).numpy()


def big_data(
    n: int = 1_000_000,
    d: int = 100,
    runs: tuple[tuple[str, str], ...] = (
        ("numpy", "float64"),
        ("numpy", "float32"),
        ("torch", "float64"),
        ("torch", "float32"),
        ("tensorflow", "float64"),
        ("tensorflow", "float32"),
    ),
    k: int = 5,
    repeats: int = 3,
) -> dict[str, Any]:
    """ms per step vs ms per two matvecs, alternating chunks; what a numpy step allocates."""
    import resource
    import tracemalloc

    from gradtrack.backends import get_backend
    from gradtrack.backends.base import BatchPlan
    from gradtrack.data.load import synthetic
    from gradtrack.models import get_problem
    from gradtrack.optimizers import OptimizerSpec

    df = synthetic(n, d, 0.1, 0)
    X64 = np.ascontiguousarray(df.iloc[:, :d].to_numpy())
    y64 = df["y"].to_numpy().copy()
    del df
    out: dict[str, Any] = {}
    problem = get_problem("linear")
    for be, dtype in runs:
        X = X64 if dtype == "float64" else X64.astype(np.float32)
        y = y64 if dtype == "float64" else y64.astype(np.float32)
        params0 = {"w": np.zeros(d), "b": np.zeros(())}
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        trainer = get_backend(be).make_trainer(
            problem,
            params0,
            X,
            y,
            spec=OptimizerSpec("sgd", lr=0.1),
            dtype=dtype,
            plan=BatchPlan(n, 0, False, 0),
        )
        mv = _two_matvecs(be, X, y, np.zeros(d, dtype=dtype))
        trainer.run(1)
        mv(1)
        peak = None
        if be == "numpy":  # numpy reports its buffers to tracemalloc: no hidden copies?
            tracemalloc.start()
            trainer.run(1)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        ts, tm = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            trainer.run(k)
            ts.append((time.perf_counter() - t0) / k)
            t0 = time.perf_counter()
            mv(k)
            tm.append((time.perf_counter() - t0) / k)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out[f"{be}/{dtype}"] = {
            "n": n,
            "d": d,
            "step_ms": min(ts) * 1e3,
            "two_matvecs_ms": min(tm) * 1e3,
            "ratio": min(ts) / min(tm),
            "peak_rss_growth_mb": (rss1 - rss0) / 1024,
            "step_peak_alloc_mb": peak,
            "X_mb": X.nbytes / 2**20,
        }
        del trainer, mv, X, y
    return out


# ---------------------------------------------------------------------------------
# For run.py: one section, its ratios and its table.


def measure_all(quick: bool = False, root: Path = REPO) -> dict[str, Any]:
    fig: dict[str, Any] = {
        "in_process": in_process(repeats=1 if quick else 7, steps=20 if quick else None, root=root),
        "tf_first_run": tf_first_run(
            repeats=1 if quick else 2, steps=20 if quick else None, root=root
        ),
    }
    fig["big_data"] = big_data(n=20_000 if quick else 1_000_000, d=10 if quick else 100)
    return fig


def ratios(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def r(v: float) -> dict[str, Any]:
        return {"value": v, "target": TARGET, "op": "<=", "ok": v <= TARGET}

    out: dict[str, dict[str, Any]] = {}
    for case, by in fig.get("in_process", {}).items():
        for be, v in by.items():
            suffix = "_steady" if be == "tensorflow" else ""
            out[f"plain/{case}/{be}{suffix}"] = r(v["ratio"])
    for case, v in fig.get("tf_first_run", {}).items():
        out[f"plain/{case}/tensorflow_first_run"] = r(v["ratio"])
    for key, v in fig.get("big_data", {}).items():
        out[f"plain/big_data/{key}/step_over_two_matvecs"] = r(v["ratio"])
    return out


def table(fig: dict[str, Any]) -> str:
    lines = ["\ngradtrack vs the plain loop (µs per update, best of k; TF steady state)"]
    for case, by in fig.get("in_process", {}).items():
        for be, v in by.items():
            lines.append(
                f"  {case:<24} {be:<11} plain {v['plain_us_per_update']:>8.1f}"
                f"  gradtrack {v['gradtrack_us_per_update']:>8.1f}  ratio {v['ratio']:.2f}"
            )
    for case, v in fig.get("tf_first_run", {}).items():
        lines.append(
            f"  {case:<24} TF first run (fresh process, tracing) plain {v['plain_s']:.3f}s"
            f"  gradtrack {v['gradtrack_s']:.3f}s  ratio {v['ratio']:.2f}"
        )
    for key, v in fig.get("big_data", {}).items():
        lines.append(
            f"  big data n={v['n']} d={v['d']} {key:<19} step {v['step_ms']:>8.2f} ms"
            f"  two matvecs {v['two_matvecs_ms']:>8.2f} ms  ratio {v['ratio']:.2f}"
            f"  X {v['X_mb']:.0f} MB"
            + (
                f", a step allocates {v['step_peak_alloc_mb']:.0f} MB"
                if v.get("step_peak_alloc_mb") is not None
                else ""
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the section runs")
    ap.add_argument("--out", type=Path, help="also write the figures and ratios here (JSON)")
    args = ap.parse_args()
    load_start = list(os.getloadavg())
    f = measure_all(quick=args.quick)
    rat = ratios(f)
    print(table(f))
    for k, v in rat.items():
        print(f"  {k:<62} {v['value']:>6.2f}  target <= {TARGET}  {'ok' if v['ok'] else 'MISSED'}")
    if args.out:
        meta = {"load_avg_start": load_start, "load_avg_end": list(os.getloadavg())}
        args.out.write_text(json.dumps({"meta": meta, "figures": f, "ratios": rat}, indent=1))
