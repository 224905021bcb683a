"""``run(cfg)``: config → data → backend → checks → tracker. Plain function, easy to test.

Everything that can be wrong with the input (config values, data files, the
tracking store) is checked before an MLflow run is created; once a run exists it
always ends with the status that really happened. Building the pieces lives in
build.py, what the run records (tags, metrics, files, model, artifacts) in record.py;
this module is the run and its training loop.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, suppress

import numpy as np

from gradtrack import config
from gradtrack.backends import get_backend
from gradtrack.build import build_problem, build_trainer, prepare
from gradtrack.errors import DivergedError
from gradtrack.interrupts import Terminated, uninterrupted
from gradtrack.progress import Progress
from gradtrack.record import (
    RunResult,
    finish,
    keep_diverged,
    keep_stopped,
    open_tracker,
    run_tags,
)
from gradtrack.tracking.naming import STEP_GRAD_NORM, STEP_LOSS, STEP_X, current_job

__all__ = ["RunResult", "first_chunk", "next_chunk", "run"]

# The loop hands the backend chunks of steps sized by elapsed time, not by count: a
# chunk of a compiled TensorFlow loop cannot be interrupted, so a Ctrl-C or SIGTERM
# is honoured within about CHUNK_SECONDS whatever the step cost. Sizes are powers of
# two (few distinct lengths) and grow at most CHUNK_GROWTH-fold per chunk. The first
# chunk is a short probe, unless the trainer already knows its step cost (see first_chunk).
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


def run(cfg: config.Config, overrides: list[str] | None = None) -> RunResult:
    """Train one configured experiment and track it. ``cfg`` is a Config object."""
    from omegaconf import OmegaConf

    root, ds = prepare(cfg)
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    # The run's fingerprint; with reuse on, a FINISHED run with the same one answers.
    from gradtrack.tracking import reuse

    decision = reuse.decide(cfg, root, plain, ds.digest)
    if decision.match is not None:
        return reuse.result_of(decision)
    problem, params0 = build_problem(cfg, ds)
    backend = get_backend(cfg.backend.name)

    tracker = open_tracker(cfg, root, overrides or [])
    try:
        with tracker as trk:
            # Only what changes the result; config.yaml (an artifact) keeps the plumbing.
            trk.log_params(config.result_params(plain))
            trk.set_tags({**run_tags(cfg, ds), **decision.tags})  # fingerprint tags
            if ds.X_raw is not None:  # (ds.frame would build a frame of every row)
                trk.log_input(ds)
            try:
                result = _train(cfg, problem, backend, params0, ds, trk)
            except DivergedError as exc:
                keep_diverged(cfg, problem, ds, exc, trk, plain, overrides or [])
                raise
            except (KeyboardInterrupt, Terminated):
                keep_stopped(cfg, trk, plain, overrides or [])
                raise
            result.run_id, result.experiment_id = trk.run_id, trk.experiment_id
            finish(cfg, root, problem, ds, result, trk, plain, overrides or [])
            if decision.enabled:  # a concurrent start trained it too: say so
                trk.set_tags(reuse.mark_duplicates(cfg, root, trk.run_id, decision.fingerprint))
    except BaseException as exc:
        # The run this error ended (FAILED, or KILLED by a signal): the command names it
        with suppress(Exception):  # (an exception type without attributes stays as is)
            exc.gradtrack_run_id = getattr(tracker, "run_id", None)
            exc.gradtrack_experiment = cfg.tracking.experiment
        raise
    return result


def next_chunk(n: int, seconds: float, remaining: int) -> int:
    """Steps for the next chunk so that it lasts about CHUNK_SECONDS (a power of two)."""
    if seconds > 0:
        target = n * CHUNK_SECONDS / seconds
        n = int(min(max(target, 1), n * CHUNK_GROWTH, MAX_CHUNK_STEPS))
    n = 1 << (max(n, 1).bit_length() - 1)  # round down to a power of two
    return max(1, min(n, remaining))


def first_chunk(seconds_per_step: float | None) -> int:
    """Steps for the first chunk: FIRST_CHUNK_STEPS to measure the step cost, unless the
    trainer already knows it (TensorFlow: from an earlier run of the same compiled loop in
    this process, e.g. a sweep's later jobs); then one chunk of about CHUNK_SECONDS at once,
    as next_chunk would size it, without the probe and the growth steps."""
    if not seconds_per_step or seconds_per_step <= 0:
        return FIRST_CHUNK_STEPS
    n = int(min(max(CHUNK_SECONDS / seconds_per_step, 1), MAX_CHUNK_STEPS))
    return 1 << (n.bit_length() - 1)


def _train(cfg: config.Config, problem, backend, params0, ds, trk) -> RunResult:
    from gradtrack.tracking.budget import StepSelector

    metrics: dict[str, float] = {}
    every = cfg.checks.gradcheck_every if cfg.checks.gradcheck else 0
    floor = 0.0  # later checks: see checks.LATER_CHECK_FLOOR
    if cfg.checks.gradcheck:
        floor = _gradcheck(cfg, backend, problem, params0, ds, trk, metrics, 0, 0.0).floor()
    trainer = build_trainer(cfg, ds, backend=backend, start=(problem, params0))
    trk.set_tags({"device": getattr(trainer, "device", "cpu")})  # what device=auto chose
    keep = StepSelector(cfg.epochs, cfg.tracking.max_points, cfg.log_every)
    # Every step's values, for the run's files and results: filled chunk by chunk, so
    # that a long run holds them once (a list of chunks joined at the end held them
    # twice). Made at the first chunk, in the backend's dtype; values: the scalar x.
    losses = norms = values = None
    done = 0
    n = first_chunk(getattr(trainer, "seconds_per_step", None))
    unsent: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    # The last completed step when the budget did not keep it: queued too if training
    # stops early, so the stored curve of a KILLED or FAILED run ends where it ended.
    last_done: list = []
    t0 = last_send = time.perf_counter()
    with (
        Progress(
            cfg.epochs, enabled=cfg.epochs >= cfg.progress_min_epochs, label=current_job()
        ) as bar,
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
            if losses is None:
                losses, norms, values = (
                    None if a is None else np.empty(cfg.epochs, dtype=a.dtype)
                    for a in (rec.losses, rec.grad_norms, rec.values)
                )
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
                    else (float(losses[done - 1]) if done else None)
                )
                trk.log_metrics({"last_finite_step": max(last, -1)})
                diverged = DivergedError(done + first, last, last_loss, divergence_advice(cfg))
                # Every finite step, for the run's files (run() logs them; not pickled)
                end = done + first
                losses[done:end], norms[done:end] = rec.losses[:first], rec.grad_norms[:first]
                if values is not None:
                    values[done:end] = rec.values[:first]
                diverged.history = RunResult(
                    losses=losses[:end],
                    grad_norms=norms[:end],
                    values=None if values is None else values[:end],
                    params={},
                    metrics=dict(metrics),
                )
                raise diverged
            unsent.append(_kept(keep, done, n, series))
            if time.perf_counter() - last_send >= LIVE_SEND_SECONDS:
                _send_series(trk, unsent)
                trk.flush()
                last_send = time.perf_counter()
            losses[done : done + n], norms[done : done + n] = rec.losses, rec.grad_norms
            if values is not None:
                values[done : done + n] = rec.values
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
        losses=losses,
        grad_norms=norms,
        values=values,
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


def divergence_advice(cfg: config.Config) -> str:
    """What a diverged run can try, from what it was set to: no "set clip_norm" when it
    clips already, no "standardize" for standardized data or a problem without any."""
    o = cfg.optimizer
    tips = [f"lower optimizer.lr (now {o.lr:g})"]
    if o.clip_norm > 0:
        tips.append(f"lower optimizer.clip_norm (now {o.clip_norm:g})")
    else:
        tips.append("set optimizer.clip_norm (e.g. optimizer.clip_norm=1.0)")
    if cfg.dataset.name != "none" and not cfg.dataset.standardize:
        tips.append("standardize the features (dataset.standardize=true)")
    text = ", ".join(tips[:-1]) + f" or {tips[-1]}"
    return text[0].upper() + text[1:] + "."


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
