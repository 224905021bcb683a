"""``run(cfg)``: config → data → backend → checks → tracker. Plain function, easy to test.

Everything that can be wrong with the input (config values, data files, the
tracking store) is checked before an MLflow run is created; once a run exists it
always ends with the status that really happened.
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradtrack import config as C
from gradtrack.backends import get_backend
from gradtrack.backends.base import BatchPlan
from gradtrack.data.load import Dataset, load_dataset, to_original_units
from gradtrack.errors import DivergedError
from gradtrack.interrupts import uninterrupted
from gradtrack.models import InitSpec, get_problem
from gradtrack.optimizers import OptimizerSpec
from gradtrack.pipeline.lineage import dvc_tags
from gradtrack.progress import Progress
from gradtrack.tracking import naming
from gradtrack.tracking.naming import STEP_GRAD_NORM, STEP_LOSS, STEP_X

# The loop hands the backend chunks of steps sized by elapsed time, not by count: a
# chunk of a compiled TensorFlow loop cannot be interrupted, so a Ctrl-C or SIGTERM
# is honoured within about CHUNK_SECONDS whatever the step cost. Sizes are powers of
# two (few distinct lengths) and grow at most CHUNK_GROWTH-fold per chunk.
CHUNK_SECONDS = 0.25
FIRST_CHUNK_STEPS = 16
MAX_CHUNK_STEPS = 1 << 20
CHUNK_GROWTH = 8
# The kept per-step points (tracking.max_points per metric) are buffered while
# training and sent after the loop, or at a chunk end once this many seconds passed
# since the last send (live curves for long runs). Storing one value costs more than a
# whole step of a small model (see benchmarks/), so short runs never pay for it inside
# the training loop.
LIVE_SEND_SECONDS = 10.0


@dataclass
class RunResult:
    losses: np.ndarray
    grad_norms: np.ndarray
    values: np.ndarray | None  # scalar problems: x after each step
    params: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    coef_: np.ndarray | None = None  # linear/logistic, original feature units
    intercept_: float | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    reused_from: str | None = None  # set when a FINISHED run answered (tracking/reuse.py)


def project_root(cfg: C.Config) -> Path:
    return Path(cfg.paths.root).expanduser().resolve() if cfg.paths.root else Path.cwd()


def resolve_path(root: Path, p: str | None) -> Path | None:
    if not p:
        return None
    path = Path(p).expanduser()
    return path if path.is_absolute() else root / path


def optimizer_spec(o: C.OptimizerConfig) -> OptimizerSpec:
    return OptimizerSpec(
        name=o.name,
        lr=o.lr,
        momentum=o.momentum,
        beta1=o.beta1,
        beta2=o.beta2,
        eps=o.eps,
        clip_norm=o.clip_norm,
    )


def prepare(cfg: C.Config) -> tuple[Path, Dataset]:
    """Validate the config and load the data: every input error surfaces here."""
    C.validate(cfg)
    root = project_root(cfg)
    ds = load_dataset(cfg.dataset, resolve_path(root, cfg.dataset.path), cfg.dataset.task)
    return root, ds


def run(cfg: C.Config, overrides: list[str] | None = None) -> RunResult:
    """Train one configured experiment and track it. ``cfg`` is a Config object."""
    from omegaconf import OmegaConf

    root, ds = prepare(cfg)
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    # [reuse] fingerprint; a FINISHED run with the same one answers (tracking/reuse.py)
    from gradtrack.tracking import reuse

    decision = reuse.decide(cfg, root, plain, ds.digest)
    if decision.match is not None:
        return reuse.result_of(decision)
    problem = get_problem(cfg.model.name, cfg.model.loss_form, cfg.model.tol)
    rng = np.random.default_rng(cfg.seed)
    spec = InitSpec(cfg.model.init, cfg.model.init_scale, cfg.model.init_value, cfg.model.x0)
    params0 = problem.init_params(ds.n_features, spec, rng)
    backend = get_backend(cfg.backend.name)

    tracker = _open_tracker(cfg, root, overrides or [])
    with tracker as trk:
        # Only what changes the result; config.yaml (an artifact) keeps the plumbing.
        trk.log_params(C.result_params(plain))
        trk.set_tags({**_tags(cfg, root, ds), **decision.tags})  # [reuse] fingerprint tags
        if ds.X_raw is not None:  # (ds.frame would build a frame of every row)
            trk.log_input(ds)
        result = _train(cfg, problem, backend, params0, ds, trk)
        result.run_id, result.experiment_id = trk.run_id, trk.experiment_id
        _finish(cfg, root, problem, ds, result, trk, plain, overrides or [])
        if decision.enabled:  # [reuse] a concurrent start trained it too: say so
            trk.set_tags(reuse.mark_duplicates(cfg, root, trk.run_id, decision.fingerprint))
    return result


def _open_tracker(cfg: C.Config, root: Path, overrides: list[str]):
    from gradtrack.tracking import open_run, resolve_tracking

    if not cfg.tracking.enabled:
        return open_run(False, None, "", "")
    target = resolve_tracking(cfg.tracking.uri, resolve_path(root, cfg.tracking.root))
    try:
        return open_run(
            cfg.tracking.enabled,
            target,
            cfg.tracking.experiment,
            naming.run_name(cfg, overrides),
            cfg.tracking.flush_every,
            tags=naming.context_tags(cfg, root, overrides),
        )
    except OSError as exc:  # MlflowClient creates the SQLite folder itself
        from gradtrack.errors import TrackingError

        raise TrackingError(
            f"tracking store {target.uri if target else ''}: cannot be created "
            f"({exc.strerror}: {exc.filename}). Set tracking.root to a writable folder."
        ) from exc


def _tags(cfg: C.Config, root: Path, ds: Dataset) -> dict[str, str]:
    tags = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "backend": cfg.backend.name,
        "optimizer": cfg.optimizer.name,
        "experiment": cfg.experiment_name,
    }
    if ds.digest:
        tags["data_sha256"] = ds.digest
        tags["data_rows"] = str(ds.n_rows)
        tags["data_rows_dropped"] = str(ds.n_dropped)
    # Started by `dvc repro`: the stage name and the md5 dvc.lock records for the data.
    tags.update(dvc_tags(ds.path))
    return tags


def next_chunk(n: int, seconds: float, remaining: int) -> int:
    """Steps for the next chunk so that it lasts about CHUNK_SECONDS (a power of two)."""
    if seconds > 0:
        target = n * CHUNK_SECONDS / seconds
        n = int(min(max(target, 1), n * CHUNK_GROWTH, MAX_CHUNK_STEPS))
    n = 1 << (max(n, 1).bit_length() - 1)  # round down to a power of two
    return max(1, min(n, remaining))


def _train(cfg: C.Config, problem, backend, params0, ds: Dataset, trk) -> RunResult:
    from gradtrack.tracking.budget import StepSelector

    metrics: dict[str, float] = {}
    every = cfg.checks.gradcheck_every if cfg.checks.gradcheck else 0
    floor = 0.0  # later checks: see checks.LATER_CHECK_FLOOR
    if cfg.checks.gradcheck:
        floor = _gradcheck(cfg, backend, problem, params0, ds, trk, metrics, 0, 0.0).floor()
    plan = (
        None
        if ds.X is None
        else BatchPlan(ds.n_rows, cfg.optimizer.batch_size, cfg.optimizer.shuffle, cfg.seed)
    )
    trainer = backend.make_trainer(
        problem,
        params0,
        ds.X,
        ds.y,
        optimizer_spec(cfg.optimizer),
        cfg.backend.dtype,
        cfg.backend.eager,
        plan,
        device=cfg.backend.device,
    )
    trk.set_tags({"device": getattr(trainer, "device", "cpu")})  # what device=auto chose
    keep = StepSelector(cfg.epochs, cfg.tracking.max_points, cfg.log_every)
    losses, norms, values = [], [], []
    done = 0
    n = FIRST_CHUNK_STEPS
    unsent: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    # The last completed step when the budget did not keep it: queued too if training
    # stops early, so the stored curve of a KILLED or FAILED run ends where it ended.
    last_done: list = []
    t0 = last_send = time.perf_counter()
    with (
        Progress(cfg.epochs, enabled=cfg.epochs >= cfg.progress_min_epochs) as bar,
        _send_on_error(trk, unsent, last_done),
    ):
        while done < cfg.epochs:
            n = min(n, cfg.epochs - done)
            if every:  # a chunk ends at the next checked epoch
                n = min(n, every - done % every)
            t_chunk = time.perf_counter()
            with uninterrupted():  # a signal waits for the chunk (a fraction of a second)
                rec = trainer.run(n)
            elapsed = time.perf_counter() - t_chunk
            bad = ~np.isfinite(rec.losses)
            series = {STEP_LOSS: rec.losses, STEP_GRAD_NORM: rec.grad_norms}
            if rec.values is not None:
                series[STEP_X] = rec.values
            if bad.any():
                first = int(np.argmax(bad))
                unsent.append(_kept(keep, done, first, series))
                _send_series(trk, unsent)
                last = done + first - 1
                last_loss = (
                    float(rec.losses[first - 1])
                    if first
                    else (float(losses[-1][-1]) if losses else None)
                )
                trk.log_metrics({"last_finite_step": max(last, -1)})
                raise DivergedError(done + first, last, last_loss)
            unsent.append(_kept(keep, done, n, series))
            if time.perf_counter() - last_send >= LIVE_SEND_SECONDS:
                _send_series(trk, unsent)
                trk.flush()
                last_send = time.perf_counter()
            losses.append(rec.losses)
            norms.append(rec.grad_norms)
            if rec.values is not None:
                values.append(rec.values)
            done += n
            if len(keep.in_chunk(done - 1, 1)):
                last_done.clear()  # already queued with its chunk
            else:
                last_done[:] = [np.array([done - 1]), {k: v[-1:] for k, v in series.items()}]
            bar.update(n, float(rec.losses[-1]))
            if every and done % every == 0:
                _gradcheck(cfg, backend, problem, trainer.params(), ds, trk, metrics, done, floor)
            n = next_chunk(n, elapsed, cfg.epochs - done)
    wall = time.perf_counter() - t0
    _send_series(trk, unsent)
    params = trainer.params()
    result = RunResult(
        losses=np.concatenate(losses),
        grad_norms=np.concatenate(norms),
        values=np.concatenate(values) if values else None,
        params=params,
        metrics=metrics,
    )
    metrics.update(
        {
            "final_loss": float(result.losses[-1]),
            "initial_loss": float(result.losses[0]),
            "train_seconds": wall,
            "epochs_per_second": cfg.epochs / wall if wall > 0 else 0.0,
        }
    )
    return result


def _kept(keep, start: int, n: int, series: dict[str, np.ndarray]):
    """The budgeted points of a chunk's first ``n`` steps: (step numbers, values)."""
    steps = keep.in_chunk(start, n)
    idx = steps - start
    return steps, {k: v[idx] for k, v in series.items()}


def _send_series(
    trk, unsent: list[tuple[np.ndarray, dict[str, np.ndarray]]], send: bool = True
) -> None:
    """Hand the buffered points to the tracker (which batches them), emptying ``unsent``.

    ``send=False`` only queues them: the run's end sends them, within its time limit
    when a signal stopped the run.
    """
    while unsent:
        steps, series = unsent.pop(0)
        if len(steps):
            trk.log_step_points(steps, series, send=send)


@contextmanager
def _send_on_error(trk, unsent: list, last_done: list):
    """If training stops early (divergence, Ctrl-C, SIGTERM), still record the steps made."""
    try:
        yield
    except BaseException:
        if last_done:
            unsent.append(tuple(last_done))
        with suppress(Exception):  # the original error is what the run must report
            _send_series(trk, unsent, send=False)
        raise


def _gradcheck(cfg, backend, problem, params, ds, trk, metrics, step: int, floor: float):
    """Check the backend's gradient at ``params``, log it at ``step`` and keep it in
    ``metrics``. ``gradcheck/pass`` is 1 while every check so far passed."""
    from gradtrack.checks import gradient_check

    gc = gradient_check(backend, problem, params, ds.X, ds.y, floor)
    ok = gc.passed(cfg.checks.gradcheck_tol) and metrics.get(GRADCHECK_PASS, 1.0) == 1.0
    found = {
        "gradcheck/max_rel_err": gc.max_rel_err,
        "gradcheck/max_rel_err_fd": gc.max_rel_err_fd,
        GRADCHECK_PASS: float(ok),
    }
    if gc.max_rel_err_handwritten is not None:
        found["gradcheck/max_rel_err_handwritten"] = gc.max_rel_err_handwritten
    metrics.update(found)
    trk.log_metrics(found, step=step)
    return gc


GRADCHECK_PASS = "gradcheck/pass"


def _once_per_check(m: dict[str, float]) -> dict[str, float]:
    """The final metrics without gradcheck/*: those are logged at the epochs checked."""
    return {k: v for k, v in m.items() if not k.startswith("gradcheck/")}


def _finish(cfg, root, problem, ds: Dataset, result: RunResult, trk, plain, overrides) -> None:
    """Final metrics, baseline, local outputs, then artifacts and model."""
    m = result.metrics
    baseline = None
    if cfg.model.name in ("linear", "logistic"):
        coef, intercept = to_original_units(ds, result.params["w"], float(result.params["b"]))
        result.coef_, result.intercept_ = coef, intercept
        z = ds.X_raw @ coef + intercept
        if cfg.model.name == "linear":
            ss_res = float(np.sum((ds.y_raw - z) ** 2))
            ss_tot = float(np.sum((ds.y_raw - ds.y_raw.mean()) ** 2))
            m["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
            mse = ss_res / len(z)  # final_loss is the same number: not logged twice
        else:
            m["accuracy"] = float(np.mean((z > 0) == (ds.y_raw > 0.5)))
        if cfg.checks.baseline:
            from gradtrack.checks import sklearn_baseline

            task = "regression" if cfg.model.name == "linear" else "classification"
            baseline = sklearn_baseline(
                task,
                ds.X_raw,
                ds.y_raw,
                coef,
                intercept,
                cfg.checks.baseline_rtol,
                cfg.checks.baseline_atol,
            )
            own = (
                mse if task == "regression" else float(np.mean(np.logaddexp(0.0, z) - ds.y_raw * z))
            )
            m.update(
                {
                    "baseline/coef_max_abs_err": baseline.coef_max_abs_err,
                    "baseline/coef_max_rel_err": baseline.coef_max_rel_err,
                    "baseline/loss": baseline.loss,
                    "baseline/loss_gap": float(own) - baseline.loss,
                    "baseline/pass": float(baseline.passed),
                }
            )
    elif result.values is not None:
        m["final_x"] = float(result.values[-1])
    _write_local_outputs(cfg, root, result)
    if cfg.tracking.enabled and cfg.tracking.log_model and result.coef_ is not None:
        from gradtrack.tracking.model import LinearModelSpec

        # The model first, so the final metrics are logged once, to run and model alike.
        spec = LinearModelSpec.of(ds.feature_names, result.coef_, result.intercept_, cfg.model.name)
        final = _once_per_check(m)
        trk.log_model(spec, naming.model_name(cfg), C.result_params(plain), final, cfg.epochs)
    else:
        trk.log_metrics(_once_per_check(m), step=cfg.epochs)
    if baseline is not None:
        trk.set_tags({"baseline_pass": str(baseline.passed).lower()})
    _converged(cfg, ds, result, trk)
    trk.flush()  # results are in the store before the (slower) artifacts go out
    if cfg.tracking.enabled and cfg.tracking.log_artifacts:
        _log_artifacts(cfg, problem, ds, result, baseline, trk, plain, overrides)


def _converged(cfg, ds: Dataset, result: RunResult, trk) -> None:
    """Tag the run converged=true/false; say so on stderr when it did not."""
    from gradtrack.convergence import assess

    m = result.metrics
    verdict = assess(
        result.losses,
        result.grad_norms,
        minibatch=0 < cfg.optimizer.batch_size < max(ds.n_rows, 1),
        loss_gap=m.get("baseline/loss_gap"),
        baseline_loss=m.get("baseline/loss"),
        standardized=cfg.dataset.standardize if ds.X is not None else None,
        lr=cfg.optimizer.lr,
        epochs=cfg.epochs,
    )
    trk.set_tags(verdict.tags())
    note = verdict.message(cfg.expect_converged, cfg.experiment_name)
    if note:
        print(note, file=sys.stderr)


def _write_local_outputs(cfg, root: Path, result: RunResult) -> None:
    """DVC metrics JSON and per-step loss CSV (deterministic bytes, see pipeline/outputs.py)."""
    from gradtrack.pipeline import outputs

    mp = resolve_path(root, cfg.output.metrics_path)
    if mp is not None:
        outputs.write_metrics(mp, result.metrics)
    lp = resolve_path(root, cfg.output.losses_path)
    if lp is not None:
        outputs.write_losses(lp, result.losses.tolist())


def _save_history(result: RunResult, path: Path) -> None:
    """Every step's values, full resolution, in one binary file (the store keeps a budget).

    ``np.load(path)`` gives arrays ``step``, ``loss``, ``grad_norm`` (and ``x``).
    """
    series = {"loss": result.losses, "grad_norm": result.grad_norms}
    if result.values is not None:
        series["x"] = result.values
    np.savez(path, step=np.arange(len(result.losses), dtype=np.int64), **series)


def _log_artifacts(cfg, problem, ds, result, baseline, trk, plain, overrides) -> None:
    import yaml

    from gradtrack import artifacts as A

    title = f"{cfg.model.name} · {cfg.backend.name} · {cfg.optimizer.name}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
        (d / "overrides.txt").write_text("\n".join(overrides) + ("\n" if overrides else ""))
        _save_history(result, d / "history.npz")
        A.loss_curve(result.losses, d / "loss_curve.png", title)
        if result.values is not None:
            A.trajectory(
                problem.curve,
                result.values,
                cfg.model.x0,
                problem.minimum,
                d / "trajectory.png",
                title,
            )
        if result.coef_ is not None:
            bw = None if baseline is None else baseline.coef
            bb = None if baseline is None else baseline.intercept
            A.coefficient_table(
                ds.feature_names, result.coef_, result.intercept_, bw, bb, d / "coefficients.csv"
            )
            A.coefficient_chart(
                ds.feature_names,
                result.coef_,
                result.intercept_,
                bw,
                bb,
                d / "coefficients.png",
                # column by column: std(axis=0) holds a temporary the size of X
                scale=np.array([ds.X_raw[:, j].std() for j in range(ds.X_raw.shape[1])]),
            )
        trk.log_artifacts(d)
