"""``gradtrack-compare``: run one experiment on numpy, PyTorch and TensorFlow and compare.

    gradtrack-compare +experiment=fit_linear
    gradtrack-compare +experiment=seed_backprop_scaled backend.dtype=float64

The config is composed once (Hydra overrides, as for ``gradtrack``); only the
backend name changes between the three runs, so data, seed, initial parameters
(drawn once in numpy), optimizer and dtype are identical. Tracking is off. The
loss trajectories must agree to 1e-9 relative in float64 and 1e-4 in float32 over
the whole run; the exit status is 0 when they do, 1 when they do not, 2 for bad
input (an unknown override, an invalid value, missing data).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np

from gradtrack.backends import BACKEND_NAMES

PARITY_RTOL = {"float64": 1e-9, "float32": 1e-4}
USAGE = """usage: gradtrack-compare [OVERRIDE ...]

Run one experiment on numpy, torch and tensorflow with identical data, seed and
initial parameters, and compare loss trajectories and learned parameters.
OVERRIDEs are Hydra overrides, as for `gradtrack`, e.g.
  gradtrack-compare +experiment=fit_linear
  gradtrack-compare +experiment=seed_backprop_scaled backend.dtype=float64
Parity holds when every backend's loss trajectory is within 1e-9 (float64) or
1e-4 (float32) relative of numpy's. Exit status: 0 parity holds, 1 it does not,
2 bad input."""


@dataclass
class BackendRun:
    backend: str
    losses: np.ndarray
    params: np.ndarray  # learned values, flattened (coef_ + intercept_ in original units)
    epochs_per_second: float


@dataclass
class Row:
    backend: str
    final_loss: float
    max_param_diff: float  # max |param − numpy's param|
    max_loss_rel_diff: float  # max over epochs of |loss − numpy's| / max(|loss|, |numpy's|)
    epochs_per_second: float


def for_backend(cfg, backend: str):
    """The same config on another backend: dtype and everything else unchanged."""
    return dataclasses.replace(
        cfg,
        backend=dataclasses.replace(cfg.backend, name=backend),
        tracking=dataclasses.replace(cfg.tracking, enabled=False),
        output=dataclasses.replace(cfg.output, metrics_path=None, losses_path=None),
        progress_min_epochs=cfg.epochs + 1,  # the table is the output; no bars in between
    )


def run_backend(cfg, backend: str) -> BackendRun:
    from gradtrack.train import run

    res = run(for_backend(cfg, backend))
    if res.coef_ is not None:
        values = np.append(res.coef_, res.intercept_)
    else:
        values = np.concatenate([np.ravel(v) for v in res.params.values()])
    return BackendRun(backend, res.losses, values, res.metrics.get("epochs_per_second", 0.0))


def compare(runs: list[BackendRun]) -> list[Row]:
    """One row per backend, each measured against the first run (numpy)."""
    from gradtrack.checks import rel_err

    ref = runs[0]
    return [
        Row(
            backend=r.backend,
            final_loss=float(r.losses[-1]),
            max_param_diff=float(np.max(np.abs(r.params - ref.params))),
            max_loss_rel_diff=float(np.max(rel_err(r.losses, ref.losses))),
            epochs_per_second=r.epochs_per_second,
        )
        for r in runs
    ]


def parity_holds(rows: list[Row], dtype: str) -> tuple[bool, float]:
    """Whether every trajectory is within the dtype's tolerance, and the worst difference."""
    worst = max(r.max_loss_rel_diff for r in rows)
    return worst <= PARITY_RTOL[dtype], worst


def format_table(rows: list[Row]) -> str:
    head = f"{'backend':<11} {'final loss':>22} {'max |param diff|':>17} {'max rel loss diff':>18} {'epochs/s':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.backend:<11} {r.final_loss:>22.15g} {r.max_param_diff:>17.3e} "
            f"{r.max_loss_rel_diff:>18.3e} {r.epochs_per_second:>10.0f}"
        )
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"gradtrack-compare: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and, as a script, exits with) the status described above."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gradtrack.build import prepare
    from gradtrack.config import compose
    from gradtrack.errors import DivergedError, GradtrackError

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    flags = [a for a in args if a.startswith("-")]
    if flags:
        return _fail(f"unknown option {flags[0]!r}; pass Hydra overrides only (see --help)")
    try:
        cfg = compose(args)
        prepare(cfg)  # validates the config and reads the data: input errors stop here
    except (HydraException, OmegaConfBaseException) as exc:
        return _fail(f"cannot compose the config from {args}: {exc}")
    except GradtrackError as exc:
        return _fail(str(exc))

    dtype = cfg.backend.dtype
    tol = PARITY_RTOL[dtype]
    print(
        f"experiment {cfg.experiment_name}: model={cfg.model.name} dataset={cfg.dataset.name} "
        f"optimizer={cfg.optimizer.name} lr={cfg.optimizer.lr} "
        f"batch_size={cfg.optimizer.batch_size} epochs={cfg.epochs} seed={cfg.seed} dtype={dtype}"
    )
    runs = []
    for backend in BACKEND_NAMES:  # numpy first: it is the reference
        try:
            runs.append(run_backend(cfg, backend))
        except DivergedError as exc:
            print(f"gradtrack-compare: {backend}: {exc}", file=sys.stderr)
            return 1
        except GradtrackError as exc:
            return _fail(str(exc))
    rows = compare(runs)
    print(format_table(rows))
    ok, worst = parity_holds(rows, dtype)
    verdict = "holds" if ok else "FAILS"
    print(
        f"parity {verdict}: max relative loss-trajectory difference {worst:.3e} "
        f"(tolerance {tol:g} for {dtype}, over all {cfg.epochs} epochs)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
