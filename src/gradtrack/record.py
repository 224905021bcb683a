"""What a run records besides its training curve: the tracker it opens, its tags,
and once trained its final metrics, the baseline, the local DVC files, the MLflow
model and the artifacts.

The problem reports its own metrics and coefficients (``Problem.summarise``);
this module only decides where they go.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradtrack.config import Config, resolve_path, result_params
from gradtrack.data.load import Dataset
from gradtrack.pipeline.lineage import dvc_tags
from gradtrack.tracking import naming

log = logging.getLogger(__name__)

# The logged MLflow model of a linear predictor, by the problem's kind.
LOGGED_MODEL_KIND = {"regression": "linear", "classification": "logistic"}


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


def open_tracker(cfg: Config, root: Path, overrides: list[str]):
    """The run's tracker (not yet entered): MLflow, or a no-op when tracking is off."""
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


def run_tags(cfg: Config, ds: Dataset) -> dict[str, str]:
    """What was trained on what: model, data (digest, rows) and the DVC stage."""
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


def finish(cfg, root, problem, ds: Dataset, result: RunResult, trk, plain, overrides) -> None:
    """Final metrics, baseline, local outputs, then model and artifacts."""
    m = result.metrics
    summary = problem.summarise(result.params, result.values, ds)
    m.update(summary.metrics)
    result.coef_, result.intercept_ = summary.coef, summary.intercept
    baseline = None
    if cfg.checks.baseline and summary.coef is not None:
        from gradtrack.checks import sklearn_baseline

        baseline = sklearn_baseline(
            problem.kind,
            ds.X_raw,
            ds.y_raw,
            summary.coef,
            summary.intercept,
            cfg.checks.baseline_rtol,
            cfg.checks.baseline_atol,
        )
        m.update(
            {
                "baseline/coef_max_abs_err": baseline.coef_max_abs_err,
                "baseline/coef_max_rel_err": baseline.coef_max_rel_err,
                "baseline/loss": baseline.loss,
                "baseline/loss_gap": float(summary.raw_loss) - baseline.loss,
                "baseline/pass": float(baseline.passed),
            }
        )
    _write_local_outputs(cfg, root, result)
    # Tags first: they ride in the same store batch as the model's metrics.
    if baseline is not None:
        trk.set_tags({"baseline_pass": str(baseline.passed).lower()})
    _converged(cfg, ds, result, trk)
    if cfg.tracking.enabled and cfg.tracking.log_model and result.coef_ is not None:
        from gradtrack.tracking.model import LinearModelSpec

        # The model first, so the final metrics are logged once, to run and model alike.
        kind = LOGGED_MODEL_KIND[problem.kind]
        spec = LinearModelSpec.of(ds.feature_names, result.coef_, result.intercept_, kind)
        final = _once_per_check(m)
        trk.log_model(spec, naming.model_name(cfg), result_params(plain), final, cfg.epochs)
    else:
        trk.log_metrics(_once_per_check(m), step=cfg.epochs)
    trk.flush()  # results are in the store before the (slower) artifacts go out
    if cfg.tracking.enabled and cfg.tracking.log_artifacts:
        _log_artifacts(cfg, problem, ds, result, baseline, trk, plain, overrides)


def keep_diverged(cfg, problem, ds, diverged, trk, plain, overrides) -> None:
    """A diverged run's files, as a finished run's would be: config.yaml, overrides.txt,
    and its finite steps' history.npz and plots, titled with the step it diverged at
    (the curve up to where it blew up is what a user opens the run for). No model,
    coefficients or baseline: there is no result to keep. A failure here is only
    logged; the divergence (a DivergedError) is what the run reports."""
    history = diverged.history
    if history is None or not len(history.losses):
        return  # not one finite step
    if not (cfg.tracking.enabled and cfg.tracking.log_artifacts):
        return
    note = f"diverged at step {diverged.step}"
    try:
        _log_artifacts(cfg, problem, ds, history, None, trk, plain, overrides, note)
    except Exception as exc:
        log.warning("could not log the diverged run's files: %s", exc)


def keep_stopped(cfg, trk, plain, overrides) -> None:
    """A run stopped by Ctrl-C or SIGTERM keeps ``config.yaml`` and ``overrides.txt`` (what
    it was, to run it again), when its artifacts are local files: a copy takes
    milliseconds of the 2 s a signal allows, an upload to a server has no deadline. Its
    curve so far is in the store; the history file and plots are left out (a long run's
    history takes seconds to write, a first plot imports matplotlib)."""
    if not (cfg.tracking.enabled and cfg.tracking.log_artifacts and trk.artifacts_are_local()):
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _write_config_files(Path(tmp), plain, overrides)
            trk.log_artifacts(Path(tmp))
    except Exception as exc:
        log.warning("could not log the stopped run's config: %s", exc)


def _write_config_files(d: Path, plain, overrides) -> None:
    """``config.yaml`` (the full config, plumbing included) and ``overrides.txt``."""
    import yaml

    (d / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    (d / "overrides.txt").write_text("\n".join(overrides) + ("\n" if overrides else ""))


def _once_per_check(m: dict[str, float]) -> dict[str, float]:
    """The final metrics without gradcheck/*: those are logged at the epochs checked."""
    return {k: v for k, v in m.items() if not k.startswith("gradcheck/")}


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
    note = verdict.message(cfg.expect_converged, cfg.experiment_name, naming.current_job())
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

    ``np.load(path)`` gives arrays ``step``, ``loss``, ``grad_norm`` (and ``x``). It is
    an ``.npz`` whose members are deflated where that pays: ``step`` (0, 1, 2, ...:
    a fifth of its size) and each series whose last steps do (a converged loss repeats
    one value: a 2,000,000-step quadratic run's file went from 64 MB to 3 MB). A noisy
    series is stored as it is: deflating a gradient norm's jitter saved 16% for 0.14 s
    per million steps, a few percent of the training.
    """
    import zipfile

    from numpy.lib import format as npy

    series = {"step": np.arange(len(result.losses), dtype=np.int64)}
    series.update(loss=result.losses, grad_norm=result.grad_norms)
    if result.values is not None:
        series["x"] = result.values
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, compresslevel=1) as zf:
        for name, values in series.items():
            deflate = name == "step" or _compresses(values)
            zf.compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                npy.write_array(fh, np.asarray(values), allow_pickle=False)


# How many of a series' last values decide whether it is deflated (a few milliseconds).
COMPRESSION_SAMPLE = 1 << 16


def _compresses(values: np.ndarray) -> bool:
    """Whether a long series' last values deflate to under half their size."""
    import zlib

    if len(values) < COMPRESSION_SAMPLE:
        return False  # small either way (under 512 KB)
    raw = np.ascontiguousarray(values[-COMPRESSION_SAMPLE:]).tobytes()
    return len(zlib.compress(raw, 1)) < len(raw) // 2


def _log_artifacts(cfg, problem, ds, result, baseline, trk, plain, overrides, note="") -> None:
    from gradtrack import artifacts

    title = f"{cfg.model.name} · {cfg.backend.name} · {cfg.optimizer.name}"
    title += f" · {note}" if note else ""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write_config_files(d, plain, overrides)
        _save_history(result, d / "history.npz")
        artifacts.loss_curve(result.losses, d / "loss_curve.png", title)
        if result.values is not None:
            artifacts.trajectory(
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
            artifacts.coefficient_table(
                ds.feature_names, result.coef_, result.intercept_, bw, bb, d / "coefficients.csv"
            )
            artifacts.coefficient_chart(
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
