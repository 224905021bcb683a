"""``gradtrack-sync``: deliver what runs spooled while their tracking server was away.

A run whose tracking server stopped answering keeps training and keeps what it could
not send under ``<tracking.root>/.gradtrack-spool/`` (``mlruns/.gradtrack-spool`` by
default). The run delivers it itself if the server is back before it ends, and the
next gradtrack run against that server does too; this command delivers it now.
Exit status: 0 when nothing is left to deliver, 1 when some runs still wait (their
server does not answer, or refused an operation), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradtrack-sync", description=__doc__.splitlines()[0])
    p.add_argument(
        "--spool",
        default=None,
        help="spool folder (default: ./mlruns/.gradtrack-spool, the spool of the default "
        "tracking.root)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="send to this server instead of the one each run recorded (it moved)",
    )
    p.add_argument("--list", action="store_true", help="only list what waits; deliver nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gradtrack.tracking import spool

    root = Path(args.spool).expanduser() if args.spool else spool.default_root()
    if args.spool and not root.is_dir():
        print(
            f"gradtrack-sync: error: --spool {root}: no such folder. Pass the "
            f"<tracking.root>/{spool.SPOOL_DIRNAME} folder the run printed.",
            file=sys.stderr,
        )
        return 2
    runs = spool.spooled_runs(root)
    if not runs:
        print(f"nothing spooled in {root}")
        return 0
    waiting = 0
    clients: dict[str, object] = {}
    for run_dir in runs:
        try:
            meta = spool.read_meta(run_dir)
            ops = spool.read_ops(run_dir)
        except (OSError, ValueError) as exc:
            print(f"{run_dir.name}: unreadable spool ({exc})")
            waiting += 1
            continue
        uri = args.tracking_uri or meta.get("tracking_uri", "")
        left = len(ops) - spool.delivered_count(run_dir)
        end = next((o["status"] for o in reversed(ops) if o["op"] == "set_terminated"), None)
        label = f"{run_dir.name} {meta.get('run_name', '')} ({end or 'no end status'})"
        if args.list:
            print(f"{label}: {left} operations for {uri}")
            waiting += 1
            continue
        if uri not in clients:
            clients[uri] = None
            if spool.server_answers(uri, timeout=5.0):
                from mlflow.tracking import MlflowClient

                clients[uri] = MlflowClient(tracking_uri=uri)
        client = clients[uri]
        if client is None:
            print(f"{label}: {uri} does not answer; {left} operations wait")
            waiting += 1
            continue
        d = spool.deliver_run(client, run_dir)
        if d.busy:
            print(f"{label}: in use by a running process; left to it")
            waiting += 1
        elif d.left:
            print(f"{label}: {d.sent} operations delivered, {d.left} left ({d.error})")
            waiting += 1
        else:
            print(f"{label}: delivered to {uri} ({d.sent} operations)")
    return 1 if waiting and not args.list else 0


if __name__ == "__main__":
    sys.exit(main())
