"""``gradtrack-runs``: look after the runs in a store.

``gradtrack-runs stale`` lists the runs still marked RUNNING and whether their owner
process is alive; ``--fix`` ends FAILED those whose process is gone on this machine
(killed, out of memory, rebooted). ``gradtrack`` does the same for an experiment each
time it opens the store; this command covers every experiment, now.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradtrack-runs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    stale = sub.add_parser(
        "stale",
        help="list RUNNING runs and their owner process; --fix ends the dead ones FAILED",
    )
    stale.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<cwd>/mlruns/mlflow.db)",
    )
    stale.add_argument("--experiment", help="only this experiment (default: all)")
    stale.add_argument(
        "--fix",
        action="store_true",
        help="end FAILED every run whose owner process on this machine is gone",
    )
    return p


def _experiment_ids(client, name: str | None) -> list[str]:
    if not name:
        return [e.experiment_id for e in client.search_experiments()]
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ValueError(f"--experiment: no experiment {name!r} (existing: {names})")
    return [exp.experiment_id]


def stale(uri: str, experiment: str | None, fix: bool) -> int:
    from mlflow.tracking import MlflowClient

    from gradtrack.tracking import owner

    client = MlflowClient(tracking_uri=uri)
    ids = _experiment_ids(client, experiment)
    owner.deliver_pending(client)
    here = owner.owner_tags()
    running = []
    for i in range(0, len(ids), 100):  # search_runs takes at most 100 experiments at once
        filt = "attributes.status = 'RUNNING'"
        running += list(client.search_runs(ids[i : i + 100], filt, max_results=50_000))
    dead = 0
    for r in running:
        state = owner.owner_state(r.data.tags, here)
        who = f"pid {r.data.tags.get(owner.PID, '?')} on {r.data.tags.get(owner.HOST, '?')}"
        line = f"{r.info.run_id}  {r.info.run_name or '':<40}  {who}: {state}"
        if state == owner.GONE:
            dead += 1
            if fix:
                ended = owner.end_dead_run(client, r)
                step = ended.last_step if ended.last_step is not None else "none"
                line += f" -> ended FAILED (last recorded step {step})"
        print(line)
    print(f"{len(running)} RUNNING, {dead} with their process gone", end="")
    if dead and not fix:
        print("; gradtrack-runs stale --fix ends them FAILED")
    else:
        print(f"{', ended FAILED' if dead else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gradtrack.tracking.store import store_command

    return store_command(
        "gradtrack-runs",
        args.tracking_uri,
        "pass --tracking-uri or run from the project folder",
        lambda uri: stale(uri, args.experiment, args.fix),
        errors=(ValueError,),
    )


if __name__ == "__main__":
    sys.exit(main())
