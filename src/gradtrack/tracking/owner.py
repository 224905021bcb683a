"""Who owns a run, and whether that process still exists.

A run records its owner as tags when it is created: host, machine id, boot id, pid
namespace, pid and the process start time. A pid alone is not enough (pids are
reused); pid plus start time, read from ``/proc``, names one process for the life of
a boot. A run left RUNNING by a process that is gone (``kill -9``, the OOM killer,
a reboot) is ended FAILED by :func:`end_dead_runs`, which ``gradtrack`` calls each
time it opens the store and ``gradtrack-runs stale --fix`` calls on demand.

Only runs owned by this machine are judged. A run owned by another host, by a
process in another pid namespace (a container sharing the hostname), or without
owner tags is never touched: its owner may well be alive where we cannot see it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

# Tag keys. Plain names like the other gradtrack tags (sweep_id, killed_by).
HOST, MACHINE, BOOT, PID_NS, PID, START = (
    "owner_host",
    "owner_machine",
    "owner_boot",
    "owner_pid_ns",
    "owner_pid",
    "owner_start",
)
GONE_TAG = "process_gone"
LAST_STEP_TAG = "last_recorded_step"

ALIVE, GONE, OTHER_HOST, UNKNOWN = "alive", "gone", "other host", "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_stat(pid: int) -> tuple[str, list[str]] | None:
    """``pid``'s name (comm) and the fields of ``/proc/<pid>/stat`` after it (state,
    ppid, ...); None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # Field 2 is "(comm)" and comm may hold spaces or ')': split after the last ')'.
    head, rest = stat.rsplit(")", 1)
    return head.split("(", 1)[-1], rest.split()


def process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field 22); '' if gone."""
    stat = process_stat(pid)
    fields = stat[1] if stat else []
    return fields[19] if len(fields) > 19 else ""


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _machine_id() -> str:
    return _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")


def owner_tags() -> dict[str, str]:
    """Tags naming this process; written on every run gradtrack creates."""
    pid = os.getpid()
    return {
        HOST: socket.gethostname(),
        MACHINE: _machine_id(),
        BOOT: _read("/proc/sys/kernel/random/boot_id"),
        PID_NS: _pid_ns(),
        PID: str(pid),
        START: process_start(pid),
    }


def owner_state(tags: dict[str, str], here: dict[str, str] | None = None) -> str:
    """ALIVE, GONE, OTHER_HOST or UNKNOWN for the owner named by a run's tags.

    Only GONE may lead to a change; every doubt answers UNKNOWN or OTHER_HOST.
    """
    here = here or owner_tags()
    if not tags.get(HOST):
        return UNKNOWN  # a run from before owner tags, or from another tool
    if tags[HOST] != here[HOST] or tags.get(MACHINE, "") != here[MACHINE]:
        return OTHER_HOST
    if not (tags.get(BOOT) and tags.get(START) and tags.get(PID, "").isdigit()):
        return UNKNOWN  # a platform without /proc recorded no start time
    if not here[BOOT]:
        return UNKNOWN
    if tags[BOOT] != here[BOOT]:
        return GONE  # the machine restarted since: every process of that boot ended
    if tags.get(PID_NS, "") != here[PID_NS]:
        return UNKNOWN  # another pid namespace (a container): its pids mean nothing here
    return ALIVE if process_start(int(tags[PID])) == tags[START] else GONE


@dataclass
class DeadRun:
    run_id: str
    name: str
    pid: str
    last_step: int | None


def deliver_pending(client) -> None:
    """Deliver results that are still waiting locally before runs are judged.

    The local spool of a tracking server that went away (tracking/spool.py): a run
    whose FINISHED status still sits in the spool is delivered, not marked FAILED.
    """
    from gradtrack.tracking.spool import deliver_pending as deliver_spooled

    deliver_spooled(client)


def running_here(client, experiment_ids: list[str], host: str) -> list:
    """RUNNING runs owned by ``host``: one search per 1000 runs, usually one in all."""
    filt = f"attributes.status = 'RUNNING' and tags.{HOST} = '{host.replace(chr(39), '')}'"
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filt, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def last_recorded_step(client, run) -> int | None:
    """The highest step stored for any metric of ``run`` (None if it stored none)."""
    metrics = getattr(run.data, "_metric_objs", None)  # latest value per key, with its step
    if metrics is None:
        metrics = [
            m for k in run.data.metrics for m in client.get_metric_history(run.info.run_id, k)
        ]
    return max((m.step for m in metrics), default=None)


def find_dead_runs(client, experiment_ids: list[str]) -> list:
    """Runs left RUNNING in these experiments by a process of this machine that is gone."""
    deliver_pending(client)
    here = owner_tags()
    return [
        r
        for r in running_here(client, experiment_ids, here[HOST])
        if owner_state(r.data.tags, here) == GONE
    ]


def end_dead_run(client, run) -> DeadRun:
    """End one dead run FAILED with tags saying the process disappeared, and when."""
    from mlflow.entities import RunTag

    tags = run.data.tags
    step = last_recorded_step(client, run)
    where = f"after step {step}" if step is not None else "before any step was recorded"
    note = (
        f"owner process {tags.get(PID)} on {tags.get(HOST)} disappeared {where} "
        "(killed, out of memory, or the machine restarted); ended by gradtrack"
    )
    items = [RunTag(GONE_TAG, note), RunTag(LAST_STEP_TAG, "" if step is None else str(step))]
    client.log_batch(run.info.run_id, tags=items, synchronous=True)
    client.set_terminated(run.info.run_id, status="FAILED")
    return DeadRun(run.info.run_id, run.info.run_name or "", tags.get(PID, ""), step)


def end_dead_runs(client, experiment_ids: list[str]) -> list[DeadRun]:
    """Find and end (FAILED) every dead run of this machine in these experiments."""
    return [end_dead_run(client, r) for r in find_dead_runs(client, experiment_ids)]
