"""Proofs attached to a run: gradient checks and scikit-learn baselines.

Both take and return plain numpy data and dicts of metrics; scikit-learn is
imported only when a baseline is actually computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradtrack.models.base import Params

TINY = 1e-30


def rel_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CS231n relative error |a−b| / max(|a|, |b|, tiny), elementwise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), TINY)


def finite_difference_grad(problem, params: Params, X, y, eps: float = 1e-6) -> Params:
    """Central differences of the problem's loss in float64, one coordinate at a time."""
    from gradtrack.backends.numpy_backend import OPS

    Xf = None if X is None else np.asarray(X, dtype=np.float64)
    yf = None if y is None else np.asarray(y, dtype=np.float64)
    base = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    grads: Params = {}
    for name, value in base.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            h = eps * max(1.0, abs(float(value[idx])))
            orig = float(value[idx])
            value[idx] = orig + h
            up = float(problem.loss(OPS, base, Xf, yf))
            value[idx] = orig - h
            down = float(problem.loss(OPS, base, Xf, yf))
            value[idx] = orig
            g[idx] = (up - down) / (2 * h)
        grads[name] = g
    return grads


@dataclass
class GradCheck:
    max_rel_err: float  # backend gradient vs the numpy hand-written gradient (float64)
    max_rel_err_fd: float  # backend gradient vs central finite differences
    worst: str  # "param[idx]: backend=…, reference=…, err=…"
    # The same for finite differences. On the numpy backend the backend gradient
    # *is* the hand-written one (max_rel_err is 0 by construction), so this is the
    # independent evidence there; it is noisy where the loss saturates.
    worst_fd: str = ""

    def passed(self, tol: float) -> bool:
        return self.max_rel_err < tol


def _worst(a: Params, b: Params) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        err = rel_err(a[k], b[k])
        if err.size and float(err.max()) >= worst:
            i = np.unravel_index(int(np.argmax(err)), err.shape) if err.shape else ()
            worst = float(err.max())
            idx = [int(j) for j in i]  # plain ints: "w[7]", not "w[np.int64(7)]"
            where = (
                f"{k}{idx if idx else ''}: backend={float(np.asarray(a[k])[i])!r}, "
                f"reference={float(np.asarray(b[k])[i])!r}, rel_err={worst:.3e}"
            )
    return worst, where


def gradient_check(backend, problem, params: Params, X, y) -> GradCheck:
    """Compare the backend's float64 gradient with the hand-written one and with finite differences."""
    from gradtrack.backends import numpy_backend

    _, g_backend = backend.loss_and_grad(problem, params, X, y, dtype="float64")
    _, g_manual = numpy_backend.loss_and_grad(problem, params, X, y, dtype="float64")
    g_fd = finite_difference_grad(problem, params, X, y)
    err, where = _worst(g_backend, g_manual)
    err_fd, where_fd = _worst(g_backend, g_fd)
    return GradCheck(max_rel_err=err, max_rel_err_fd=err_fd, worst=where, worst_fd=where_fd)


@dataclass
class Baseline:
    coef: np.ndarray
    intercept: float
    loss: float
    coef_max_abs_err: float
    coef_max_rel_err: float
    passed: bool


def _logistic_reference(X_raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The unpenalized logistic optimum, accurate to ~1e-12 relative, in original units.

    lbfgs on unscaled features (glucose ~100, insulin ~800) stops at its tolerance
    1e-6 relative or more away from the optimum, too far to compare against at 1e-6.
    Newton's method on standardized features converges quadratically to machine
    precision in a handful of iterations; the fit is mapped back exactly like
    ``data.load.to_original_units`` maps the learned one.
    """
    from sklearn.linear_model import LogisticRegression

    mean = X_raw.mean(axis=0)
    scale = X_raw.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant column stays as it is
    Z = (X_raw - mean) / scale
    # C=inf is the unpenalized fit (penalty= is deprecated in scikit-learn 1.9).
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    model.fit(Z, y)
    w_std = model.coef_.ravel()
    coef = w_std / scale
    intercept = float(model.intercept_[0]) - float(np.sum(w_std * mean / scale))
    return coef, intercept


def sklearn_baseline(
    task: str,
    X_raw: np.ndarray,
    y: np.ndarray,
    coef: np.ndarray,
    intercept: float,
    rtol: float,
    atol: float,
) -> Baseline:
    """Fit the unpenalized scikit-learn model on the same rows and compare coefficients.

    Comparison is in original feature units; an entry passes when it is within
    ``rtol`` relative or ``atol`` absolute (for coefficients near zero).
    """
    if task == "regression":
        from sklearn.linear_model import LinearRegression

        model = LinearRegression().fit(X_raw, y)
        ref_w, ref_b = model.coef_.ravel(), float(np.ravel(model.intercept_)[0])
        loss = float(np.mean((X_raw @ ref_w + ref_b - y) ** 2))
    else:
        ref_w, ref_b = _logistic_reference(X_raw, y)
        z = X_raw @ ref_w + ref_b
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    learned = np.append(np.asarray(coef, dtype=np.float64), intercept)
    ref = np.append(ref_w, ref_b)
    abs_err = np.abs(learned - ref)
    rel = rel_err(learned, ref)
    ok = bool(np.all((rel <= rtol) | (abs_err <= atol)))
    return Baseline(
        coef=ref_w,
        intercept=ref_b,
        loss=loss,
        coef_max_abs_err=float(abs_err.max()),
        coef_max_rel_err=float(rel.max()),
        passed=ok,
    )
