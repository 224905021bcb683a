"""Proofs attached to a run: gradient checks and scikit-learn baselines.

Both take and return plain numpy data and dicts of metrics; scikit-learn is
imported only when a baseline is actually computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradtrack.models.base import NUMPY_OPS, NumpyOps, Params

TINY = 1e-30


def rel_err(a: np.ndarray, b: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """CS231n relative error |a−b| / max(|a|, |b|, floor, tiny), elementwise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), max(floor, TINY))


def finite_difference_grad(problem, params: Params, X, y, eps: float = 1e-6) -> Params:
    """Central differences of the problem's loss in float64, one coordinate at a time."""
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
            up = float(problem.loss(NUMPY_OPS, base, Xf, yf))
            value[idx] = orig - h
            down = float(problem.loss(NUMPY_OPS, base, Xf, yf))
            value[idx] = orig
            g[idx] = (up - down) / (2 * h)
        grads[name] = g
    return grads


class ComplexOps(NumpyOps):
    """The forward-pass namespace over complex numbers, for complex-step derivatives.

    Every operation is complex-analytic, so f(x + ih) = f(x) + ih·f'(x) + O(h²) and
    Im f(x + ih) / h is the derivative with no subtraction: accurate to rounding for
    any h (1e-20 here), unlike finite differences. It evaluates the problem's own
    forward ``loss``, not its hand-written backward pass. numpy's tanh, exp, log, mean
    and matmul take complex input as they are; only softplus needs another form.
    """

    @staticmethod
    def softplus(z):
        # log(1 + e^z), analytic on each branch: z + log1p(e^-z) for Re z > 0 (no overflow).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.where(z.real > 0, z + _log1p(np.exp(-z)), _log1p(np.exp(z)))

    @staticmethod
    def matvec(X, w):
        # Two real products: X @ complex w would first copy X to complex (16 bytes/entry).
        return X @ w.real + 1j * (X @ w.imag) if np.iscomplexobj(w) else X @ w


def _log1p(u):
    """log(1 + u) for complex u, accurate for small |u| (numpy's complex log1p is not:
    1e-3 relative at u = 1e-13). Kahan's trick: the rounding of 1 + u cancels out."""
    v = 1 + u
    d = v - 1
    return np.where(d == 0, u, np.log(v) * (u / np.where(d == 0, 1, d)))


COMPLEX_STEP = 1e-20


def complex_step_grad(problem, params: Params, X, y, h: float = COMPLEX_STEP) -> Params:
    """The gradient of the problem's forward loss by complex step, one coordinate at a time.

    Independent of ``problem.loss_and_grad`` (the hand-written backward pass) and of
    any autograd: the reference every backend's gradient is checked against.
    """
    Xf = None if X is None else np.asarray(X, dtype=np.float64)
    yf = None if y is None else np.asarray(y, dtype=np.float64)
    base = {k: np.array(v, dtype=np.complex128) for k, v in params.items()}
    ops = ComplexOps()
    grads: Params = {}
    for name, value in base.items():
        g = np.zeros(value.shape, dtype=np.float64)
        for idx in np.ndindex(value.shape):
            orig = value[idx]
            value[idx] = orig + 1j * h
            try:
                out = problem.loss(ops, base, Xf, yf)
            except TypeError as exc:  # an operation outside ComplexOps
                raise TypeError(
                    f"gradient check: the {problem.name} model's loss(ops, ...) does not "
                    f"accept complex parameters ({exc}); build it from ops.* only, or "
                    "set checks.gradcheck=false"
                ) from exc
            finally:
                value[idx] = orig
            g[idx] = np.imag(out) / h
        grads[name] = g
    return grads


@dataclass
class GradCheck:
    # The backend's float64 gradient vs the complex-step derivative of the forward loss
    # (an independent reference on every backend): what ``passed`` judges.
    max_rel_err: float
    max_rel_err_fd: float  # backend gradient vs central finite differences
    worst: str  # "param[idx]: backend=…, reference=…, rel_err=…"
    worst_fd: str = ""
    # Autograd backends only: autograd vs the numpy hand-written gradient. A wrong
    # hand-written gradient shows here while the backend's own check still passes.
    max_rel_err_handwritten: float | None = None
    worst_handwritten: str = ""
    scale: float = 0.0  # the reference gradient's largest |entry|

    def floor(self) -> float:
        """The denominator floor for later checks of the same run (see ``gradient_check``)."""
        return LATER_CHECK_FLOOR * self.scale

    def passed(self, tol: float) -> bool:
        return self.max_rel_err < tol


def _worst(a: Params, b: Params, floor: float = 0.0) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        err = rel_err(a[k], b[k], floor)
        if err.size and float(err.max()) >= worst:
            i = np.unravel_index(int(np.argmax(err)), err.shape) if err.shape else ()
            worst = float(err.max())
            idx = [int(j) for j in i]  # plain ints: "w[7]", not "w[np.int64(7)]"
            where = (
                f"{k}{idx if idx else ''}: backend={float(np.asarray(a[k])[i])!r}, "
                f"reference={float(np.asarray(b[k])[i])!r}, rel_err={worst:.3e}"
            )
    return worst, where


# Near an optimum the gradient falls to the rounding noise of the sums that make it
# (eps × the size of its terms, e.g. Xᵀr with O(1) residuals), and the relative error
# of noise is O(1) for any correct gradient. Checks after the first therefore compare
# entries smaller than this fraction of the first check's largest entry absolutely.
LATER_CHECK_FLOOR = 1e-6


def gradient_check(backend, problem, params: Params, X, y, floor: float = 0.0) -> GradCheck:
    """Compare the backend's float64 gradient with the complex-step one (and with finite
    differences); on an autograd backend also with the numpy hand-written one.

    ``floor`` (0 at the first check; ``first.floor()`` later) bounds the denominator of
    the relative error from below.
    """
    from gradtrack.backends import numpy_backend

    _, g_backend = backend.loss_and_grad(problem, params, X, y, dtype="float64")
    g_ref = complex_step_grad(problem, params, X, y)
    err, where = _worst(g_backend, g_ref, floor)
    g_fd = finite_difference_grad(problem, params, X, y)
    err_fd, where_fd = _worst(g_backend, g_fd, floor)
    scale = max((float(np.max(np.abs(g))) for g in g_ref.values() if np.size(g)), default=0.0)
    gc = GradCheck(err, err_fd, where, where_fd, scale=scale)
    if backend is not numpy_backend:
        _, g_manual = numpy_backend.loss_and_grad(problem, params, X, y, dtype="float64")
        gc.max_rel_err_handwritten, gc.worst_handwritten = _worst(g_backend, g_manual, floor)
    return gc


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


# Up to this size of X the regression reference is scikit-learn's LinearRegression on
# all rows. It holds two copies of X at once (centering, then scipy's lstsq), which on
# a 50 MB file is most of a run's memory; bigger inputs use _blocked_lstsq below.
SKLEARN_FULL_BYTES = 8 * 2**20
QR_BLOCK_ROWS = 16_384
# The blocked solve must reproduce scikit-learn on a subsample of about this many rows
# (every k-th row) to this relative accuracy, or the reference falls back to sklearn.
CROSS_CHECK_ROWS = 20_000
CROSS_CHECK_RTOL = 1e-9


def _blocked_lstsq(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares with an intercept from scipy's Householder QR, updated block by block.

    Each block of rows [1, x, y] is stacked under the R factor so far and reduced again,
    in place (a Fortran-ordered block, mode="raw"), so memory is one block, not a copy
    of X. The last column of the final R holds Q^T y; its top rows solve R w = Q^T y.
    Same backward stability as a QR of all rows at once.
    """
    from scipy.linalg import qr, solve_triangular

    n, p = X.shape
    width = p + 2
    r = np.zeros((0, width))
    for start in range(0, n, QR_BLOCK_ROWS):
        xb = X[start : start + QR_BLOCK_ROWS]
        block = np.empty((len(r) + len(xb), width), order="F")
        block[: len(r)] = r
        block[len(r) :, 0] = 1.0
        block[len(r) :, 1 : p + 1] = xb
        block[len(r) :, p + 1] = y[start : start + QR_BLOCK_ROWS]
        r = qr(block, mode="raw", overwrite_a=True, check_finite=False)[1]
        del block  # before the next one is made
    sol = solve_triangular(r[: p + 1, : p + 1], r[: p + 1, p + 1], check_finite=False)
    return sol[1:], float(sol[0])


def _sklearn_linear(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(X, y)
    return model.coef_.ravel(), float(np.ravel(model.intercept_)[0])


def _linear_reference(X_raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The unpenalized least-squares fit in original units, independent of gradtrack.

    Small X: scikit-learn on all rows. Big X: scipy's blocked QR (_blocked_lstsq), first
    checked against scikit-learn on a subsample of rows (every k-th), where both must
    agree to CROSS_CHECK_RTOL; if they do not (e.g. collinear features, where QR has no
    unique answer and lstsq picks the minimum norm one), scikit-learn on all rows.
    """
    if X_raw.nbytes <= SKLEARN_FULL_BYTES:
        return _sklearn_linear(X_raw, y)
    step = max(1, len(X_raw) // CROSS_CHECK_ROWS)
    Xs, ys = X_raw[::step], y[::step]
    sk = np.append(*_sklearn_linear(Xs, ys))
    qr_fit = np.append(*_blocked_lstsq(Xs, ys))
    if not np.all(np.isfinite(qr_fit)) or rel_err(qr_fit, sk).max() > CROSS_CHECK_RTOL:
        return _sklearn_linear(X_raw, y)
    return _blocked_lstsq(X_raw, y)


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
    ``rtol`` relative or ``atol`` absolute (for coefficients near zero). ``task`` is
    the model's kind (regression or classification).
    """
    from gradtrack.models.logistic import log_loss
    from gradtrack.models.metrics import mean_squared_error

    if task == "regression":
        ref_w, ref_b = _linear_reference(X_raw, y)
        loss = mean_squared_error(y, X_raw @ ref_w + ref_b)
    else:
        ref_w, ref_b = _logistic_reference(X_raw, y)
        loss = float(log_loss(NUMPY_OPS, X_raw @ ref_w + ref_b, y))
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
