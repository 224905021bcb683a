"""The team setup, started for real by tests: PostgreSQL, an MLflow server, a Ray cluster.

Not a test module. Each helper is a context manager that starts real processes on
loopback, waits until they answer, and stops exactly what it started (its own
process groups, never `pkill`/`ray stop`, which would reach other users' processes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not listen on {port} in {timeout} s"
            time.sleep(0.3)


def _session(sid: int) -> list[int]:
    """Pids of the processes in session ``sid`` (field 6 of /proc/<pid>/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                pids.append(int(stat.parent.name))
    return pids


def stop_session(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the group of ``proc`` (started with start_new_session), then SIGKILL
    whatever of its session is left after ``grace`` seconds (e.g. workers that made
    their own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    for pid in _session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


# -- PostgreSQL ------------------------------------------------------------------------


def pg_bindir() -> Path:
    """The folder with initdb/pg_ctl, from `pg_config --bindir`; skip (or fail in CI) if absent."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
        if (bindir / "initdb").exists():
            return bindir
    msg = "PostgreSQL not installed (pg_config --bindir has no initdb); apt-get install postgresql"
    if os.environ.get("GRADTRACK_REQUIRE_POSTGRES"):
        pytest.fail(msg)
    pytest.skip(msg)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a loopback port; yields a SQLAlchemy URI (psycopg).

    PostgreSQL refuses to run as root: as root, its commands run as the `postgres`
    user (runuser) in a temp dir that user owns.
    """
    bindir = pg_bindir()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's tmp_path: that tree is private to this user (mode 700).
    home = Path(tempfile.mkdtemp(prefix="gradtrack-pg-"))
    if as_pg:
        shutil.chown(home, "postgres")
    data, log, port = home / "data", home / "postgres.log", free_port()

    def pg(*args: str) -> None:
        env = {**os.environ, "PGUSER": "postgres"}
        subprocess.run([*as_pg, *args], check=True, capture_output=True, timeout=120, env=env)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        # fsync off: a test database need not survive a power cut.
        opts = f"-F -p {port} -k {home} -c listen_addresses=127.0.0.1"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start")
        try:
            pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "mlflow")
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"
        finally:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- MLflow tracking server ----------------------------------------------------------------


@contextlib.contextmanager
def mlflow_server_process(
    backend_uri: str, workdir: Path, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` on loopback serving artifacts itself; yields (http URI, process).

    It creates (and migrates) its backend database at start, before it answers. A
    restart with the same backend, workdir and port is the same server with its data.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                backend_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown reaches the workers
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.3)
        yield uri, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # a test may have stopped (SIGSTOP) it
        stop_session(proc, grace=5)  # its data lives in the backend store, already written


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path, port: int | None = None) -> Iterator[str]:
    """``mlflow_server_process`` when only the URI is needed."""
    with mlflow_server_process(backend_uri, workdir, port) as (uri, _):
        yield uri


# -- Ray --------------------------------------------------------------------------------------


def _ray_node(args: list[str], where: Path, temp: str) -> subprocess.Popen:
    """One `ray start --block` node in its own process group (so teardown stops just it)."""
    agent, metrics, runtime_env = free_port(), free_port(), free_port()
    return subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--disable-usage-stats",
            # Two nodes on one machine: each its own agent/metrics ports and temp dir.
            f"--dashboard-agent-listen-port={agent}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--temp-dir={temp}",
            *args,
        ],
        cwd=where,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@dataclass
class RayCluster:
    address: str  # the head's HOST:PORT
    nodes: list[Path]  # each node's temp dir (its session logs), head first


@contextlib.contextmanager
def ray_cluster(where: Path, nodes: int = 2) -> Iterator[RayCluster]:
    """A Ray head plus ``nodes - 1`` nodes joined with `ray start --address`, one CPU each,
    started in ``where``. Yields once every node has registered.
    """
    where.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Short paths under /tmp: Ray puts unix sockets there (108-byte limit).
    temps = [tempfile.mkdtemp(prefix="rt", dir="/tmp") for _ in range(nodes)]
    head = ["--head", f"--port={port}", "--include-dashboard=false"]
    procs = [_ray_node(head, where, temps[0])]
    try:
        wait_for_port(port, procs[0], "ray head")
        procs += [_ray_node([f"--address={address}"], where, t) for t in temps[1:]]
        _wait_for_nodes(address, nodes, procs)
        yield RayCluster(address, [Path(t) for t in temps])
    finally:
        for p in reversed(procs):
            stop_session(p, grace=5)  # a graceful Ray stop takes ~30 s; nothing to keep
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def _wait_for_nodes(address: str, n: int, procs: list, timeout: float = 180) -> None:
    """Until the cluster lists ``n`` alive nodes (asked from a separate process)."""
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(x['Alive'] for x in ray.nodes()))"
    )
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.poll() is None, f"a ray node exited with {p.returncode}"
        out = subprocess.run(
            [sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=120
        )
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        assert time.monotonic() < deadline, f"{n} ray nodes never came up: {out.stderr[-2000:]}"
        time.sleep(1)
