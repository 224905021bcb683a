"""``gradtrack-report``: read runs back from MLflow and compare them side by side.

Writes ``report.md`` (a table of the params that differ, final metrics, baseline
errors and status) and ``loss_curves.png`` (every run's loss history on one plot).
The core, :func:`build_report`, takes an ``MlflowClient`` and runs so a sweep can
call it directly on its children.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

from gradtrack.tracking.naming import STEP_LOSS

FINAL_METRICS = (
    "final_loss",
    "r2",
    "accuracy",
    "final_x",
    "train_seconds",
    "epochs_per_second",
)
BASELINE_METRICS = ("baseline/coef_max_rel_err", "baseline/loss_gap", "baseline/pass")
# The metric columns of a comparison (those at least one run has), in this order.
METRIC_COLUMNS = FINAL_METRICS + BASELINE_METRICS
# Params that differ between every run and say nothing about the configuration.
IGNORED_PARAMS = ("tracking.run_name",)
MAX_RUNS = 10_000


class ReportError(Exception):
    """Bad arguments or an empty selection; the message says what to change."""


def _fmt(value: Any) -> str:
    """A table cell: floats to 10 significant digits (a sweep's ties are 1e-9 apart)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}" if math.isfinite(value) else str(value)
    return str(value)


def _label(run) -> str:
    return f"{run.info.run_name or 'run'} ({run.info.run_id[:8]})"


def differing_params(runs: list) -> list[str]:
    """Param keys whose value is not the same in every run that has params (a missing
    key counts as a value). A run without any param (e.g. one logged by another tool)
    does not make every other run's params "differ"."""
    with_params = [r for r in runs if r.data.params]
    keys = sorted({k for r in with_params for k in r.data.params} - set(IGNORED_PARAMS))
    return [k for k in keys if len({r.data.params.get(k) for r in with_params}) > 1]


def run_status(run, here: dict[str, str] | None = None) -> str:
    """The run's status, except DEAD for a RUNNING run whose process on this host is gone."""
    from gradtrack.tracking.owner import GONE, owner_state

    if run.info.status == "RUNNING" and owner_state(run.data.tags, here) == GONE:
        return "DEAD"
    return run.info.status


def metrics_table(
    records: list[tuple[list[str], dict[str, float], str]],
    lead: list[str],
    first: str | None = None,
    last: str = "note",
) -> tuple[list[str], list[list[str]]]:
    """The comparison table of the report and of a sweep's summary.

    Each record is (its ``lead`` cells, its metrics, its ``last`` cell). The metric
    columns are METRIC_COLUMNS (``first``, e.g. the sweep metric, leading) that at
    least one record has.
    """
    wanted = ([first] if first else []) + [m for m in METRIC_COLUMNS if m != first]
    cols = [m for m in wanted if any(m in met for _, met, _ in records)] or wanted[:1]
    header = [*lead, *cols, last]
    rows = [[*cells, *(_fmt(met.get(c)) for c in cols), note] for cells, met, note in records]
    return header, rows


def comparison_rows(runs: list) -> tuple[list[str], list[list[str]]]:
    """Header and one row per run: run, status, differing params, metrics, errors."""
    from gradtrack.tracking.owner import GONE_TAG, owner_tags

    here = owner_tags()
    params = differing_params(runs)
    records = []
    for r in runs:
        t = r.data.tags
        note = ""
        if t.get("diverged") == "true":
            note = f"diverged after step {t.get('last_finite_step', '?')}"
        elif t.get("error"):
            note = t["error"][:120]
        elif t.get("killed_by"):
            note = f"killed ({t['killed_by']})"
        elif t.get(GONE_TAG):
            note = t[GONE_TAG]
        elif t.get("reused_from"):  # a sweep job answered by an earlier run
            note = f"reused: the result of run {t['reused_from']}"
        elif t.get("duplicate_of"):
            note = f"trained concurrently with {t['duplicate_of']} (same fingerprint)"
        status = run_status(r, here)
        if status == "DEAD":
            note = "process gone; `gradtrack-report --fix-stale` ends it FAILED"
        lead = [_label(r), status, *[_fmt(r.data.params.get(p)) for p in params]]
        records.append((lead, dict(r.data.metrics), note))
    return metrics_table(records, ["run", "status", *params])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; ``|`` and line breaks in cells are escaped."""

    def cell(c: Any) -> str:
        return _fmt(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_table(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue()


def histories(client, run_ids: dict[str, str], key: str = STEP_LOSS) -> dict[str, tuple]:
    """label → (steps, values) of each run's ``key`` history, in step order.

    ``run_ids`` maps a label to a run id; runs without that history are left out. Runs
    recorded before the per-step loss moved to ``Training/loss`` have ``loss``.
    """
    import numpy as np

    from gradtrack.tracking.store import metric_histories

    found = metric_histories(client, list(run_ids.values()), key)
    if key == STEP_LOSS:
        older = [run_id for run_id in run_ids.values() if run_id not in found]
        if older:
            found.update(metric_histories(client, older, "loss"))
    out = {}
    for label, run_id in run_ids.items():
        points = sorted(found.get(run_id, ()), key=lambda p: p[0])  # stable: ties keep order
        if points:
            out[label] = (
                np.array([step for step, _ in points], dtype=np.int64),
                np.array([value for _, value in points], dtype=np.float64),
            )
    return out


def loss_histories(client, runs: list, key: str = STEP_LOSS) -> dict[str, tuple]:
    """label → (steps, values) of each run's metric history, in step order."""
    return histories(client, {_label(r): r.info.run_id for r in runs}, key)


def build_report(client, runs: list, out_dir: Path, title: str = "gradtrack runs") -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/loss_curves.png``; return the .md path.

    ``client`` is an ``mlflow.tracking.MlflowClient``; ``runs`` are ``mlflow.entities.Run``
    objects (e.g. from ``client.search_runs``), reported in the given order.
    """
    from gradtrack.artifacts import loss_overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = comparison_rows(runs)
    curves = loss_histories(client, runs)
    loss_overlay(curves, out_dir / "loss_curves.png", title)
    from gradtrack.tracking.owner import owner_tags

    here = owner_tags()
    statuses = {}
    for r in runs:
        status = run_status(r, here)
        statuses[status] = statuses.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    same = sorted(
        {k for r in runs for k in r.data.params} - set(differing_params(runs)) - set(IGNORED_PARAMS)
    )
    text = [
        f"# {title}",
        "",
        f"{len(runs)} runs ({summary}) from `{client.tracking_uri}`.",
        "",
        "## Comparison",
        "",
        markdown_table(header, rows),
        "",
        "Columns between *status* and the metrics are the params that differ between runs; "
        f"{len(same)} other params are identical.",
        "",
        "## Loss curves",
        "",
        "![loss curves](loss_curves.png)",
        "",
    ]
    missing = [_label(r) for r in runs if _label(r) not in curves]
    if missing:
        text += [f"No loss history for: {', '.join(missing)}.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(text))
    return path


def select_runs(
    client,
    experiment: str | None = None,
    sweep_id: str | None = None,
    run_ids: list[str] | None = None,
) -> list:
    """Runs by explicit ids, by sweep (tag ``sweep_id``) or by experiment name, oldest first."""
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(client.get_run(rid))
            except Exception as exc:
                raise ReportError(f"--run-ids: no run {rid!r} in {client.tracking_uri}") from exc
        return runs
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise ReportError(
                f"--experiment: no experiment {experiment!r} in {client.tracking_uri} "
                f"(existing: {', '.join(names) or 'none'})"
            )
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    filt = f"tags.sweep_id = '{sweep_id}'" if sweep_id else ""
    runs = client.search_runs(
        exp_ids, filter_string=filt, max_results=MAX_RUNS, order_by=["attributes.start_time ASC"]
    )
    if sweep_id:
        # The sweep's parent run carries the id too; the comparison is between children.
        runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags] or runs
    else:
        # A sweep's parent trained nothing (its summary is its own report): the
        # comparison is between the runs that trained, its children among them.
        runs = [r for r in runs if r.data.tags.get("sweep_role") != "parent"] or runs
    if not runs:
        what = f"sweep_id={sweep_id!r}" if sweep_id else f"experiment {experiment!r}"
        raise ReportError(f"no runs found for {what} in {client.tracking_uri}")
    return runs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradtrack-report",
        description="Compare MLflow runs: writes OUT/report.md and OUT/loss_curves.png.",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<cwd>/mlruns/mlflow.db)",
    )
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument("--experiment", help="every run of this MLflow experiment")
    sel.add_argument("--sweep-id", help="the runs tagged sweep_id=<ID> (one Hydra sweep)")
    sel.add_argument("--run-ids", nargs="+", metavar="RUN_ID", help="these runs")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--fix-stale",
        action="store_true",
        help="first end FAILED the runs left RUNNING by a process of this machine that is gone",
    )
    return p


def _fix_stale(client) -> None:
    from gradtrack.tracking.owner import end_dead_runs

    ids = [e.experiment_id for e in client.search_experiments()]
    ended = [d for i in range(0, len(ids), 100) for d in end_dead_runs(client, ids[i : i + 100])]
    for d in ended:
        step = d.last_step if d.last_step is not None else "none"
        print(f"ended FAILED: run {d.run_id} (process gone, last recorded step {step})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gradtrack.tracking.store import store_command

    def report(uri: str) -> int:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        if args.fix_stale:
            _fix_stale(client)
        runs = select_runs(client, args.experiment, args.sweep_id, args.run_ids)
        title = args.experiment or (f"sweep {args.sweep_id}" if args.sweep_id else "runs")
        path = build_report(client, runs, args.out, f"gradtrack: {title}")
        print(f"wrote {path} and {path.parent / 'loss_curves.png'} ({len(runs)} runs)")
        return 0

    return store_command(
        "gradtrack-report",
        args.tracking_uri,
        "run gradtrack first or pass --tracking-uri",
        report,
        errors=(ReportError,),
    )


if __name__ == "__main__":
    sys.exit(main())
