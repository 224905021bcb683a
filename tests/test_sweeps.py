"""Hydra sweeps: one MLflow parent run per sweep, jobs as children, summary, launchers.

Every test runs the real CLI (``python -m gradtrack -m ...``) in a fresh project
folder, against a real SQLite store (and, for Ray, a real local Ray head).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import mlflow_runs, pixels_of, run_cli, signal_and_time_exit
from team_support import stop_session

QUICK = ["model=quadratic", "epochs=20"]


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def _split(project: Path):
    """(parent runs, child runs) of the project's store."""
    runs = mlflow_runs(project)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _check_landed(project: Path, n_jobs: int, steps: int) -> tuple:
    """Exactly one parent, n_jobs FINISHED children under it, full loss histories."""
    parents, children = _split(project)
    assert len(parents) == 1, [r.data.tags for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == n_jobs
    client = _client(project)
    for c in children:
        assert c.info.status == "FINISHED", c.data.tags.get("error")
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        steps_logged = sorted(
            m.step for m in client.get_metric_history(c.info.run_id, "Training/loss")
        )
        assert steps_logged == list(range(steps)), c.data.tags["overrides"]
    assert len({c.data.tags["overrides"] for c in children}) == n_jobs
    return parent, children


# -- one sweep, one parent --------------------------------------------------------


def test_sweep_groups_jobs_under_one_parent_with_summary(project):
    res = run_cli(["-m", *QUICK, "optimizer.lr=0.01,0.1"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    parent, children = _check_landed(project, 2, 20)
    by = {c.data.tags["overrides"]: c for c in children}
    assert set(by) == {
        "model=quadratic epochs=20 optimizer.lr=0.01",
        "model=quadratic epochs=20 optimizer.lr=0.1",
    }
    # lr=0.1 gets further down 2x^2 - 4x... in 20 steps: it is the best child.
    best = by["model=quadratic epochs=20 optimizer.lr=0.1"]
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best/final_loss"] == best.data.metrics["final_loss"]
    assert parent.data.tags["failed_jobs"] == "0"
    client = _client(project)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert names == {"sweep_summary.md", "sweep_summary.csv", "loss_curves.png"}
    md = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.md")).read_text()
    assert best.info.run_id in md and "optimizer.lr=0.01" in md
    csv_text = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.csv")).read_text()
    assert len(csv_text.strip().splitlines()) == 3  # header + 2 jobs


def test_summary_of_sixteen_jobs_is_the_report_table_and_a_readable_overlay(tmp_path, monkeypatch):
    """write_summary on a real store: the report's table (CSV and Markdown), the best
    ten jobs named in the overlay's legend in rank order, the failed one listed."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from gradtrack import artifacts, report, sweep

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s")
    parent = client.create_run(exp).info.run_id
    jobs = [f"model=quadratic optimizer.lr={k / 100:g}" for k in range(1, 17)]
    for k, job in enumerate(jobs, start=1):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "overrides": job})
        curve = [1.0 / (1 + k * t) for t in range(20)]
        points = [Metric("Training/loss", v, 0, t) for t, v in enumerate(curve)]
        client.log_batch(run.info.run_id, metrics=[*points, Metric("final_loss", curve[-1], 0, 20)])
        if k == 16:
            client.set_tag(run.info.run_id, "error", "diverged | at step 3")
        client.set_terminated(run.info.run_id, "FAILED" if k == 16 else "FINISHED")
    rows = sweep.collect_children(client, exp, parent, jobs)
    shown = []
    real = artifacts.loss_overlay
    monkeypatch.setattr(artifacts, "loss_overlay", lambda *a, **kw: shown.extend(real(*a, **kw)))

    assert sweep.write_summary(client, parent, rows, "final_loss", ["optimizer.lr"]) == "FAILED"
    # Best first: the largest lr falls furthest; the FAILED job ranks after every FINISHED one.
    assert shown[:3] == ["1. lr=0.15", "2. lr=0.14", "3. lr=0.13"]
    assert len(shown) == 11 and shown[-1] == "6 others"
    dl = tmp_path / "dl"
    dl.mkdir()
    md = Path(client.download_artifacts(parent, "sweep_summary.md", str(dl))).read_text()
    csv_path = Path(client.download_artifacts(parent, "sweep_summary.csv", str(dl)))
    csv_text = csv_path.read_bytes().decode()
    header, body = report.metrics_table(
        [([r.overrides, r.status, r.run_id], r.metrics, r.error) for r in rows],
        ["overrides", "status", "run_id"],
        first="final_loss",
        last="error",
    )
    assert header == ["overrides", "status", "run_id", "final_loss", "error"]
    assert csv_text == report.csv_table(header, body)
    assert report.markdown_table(header, body) in md
    assert "diverged \\| at step 3" in md  # escaped inside the table
    assert md.index("## Jobs that did not finish") > md.index("| overrides |")
    assert "`model=quadratic optimizer.lr=0.15` = " in md.splitlines()[2]
    png = Path(client.download_artifacts(parent, "loss_curves.png", str(dl))).read_bytes()
    assert png.startswith(b"\x89PNG")


# Runs the CLI with Hydra's load_sweep_config counted; the count goes to argv[1].
# One line per composition, in whichever process composes (a joblib sweep checks its
# jobs in a forked child, which leaves without running atexit hooks).
_COUNT_COMPOSE = """
import runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
out, orig = sys.argv[1], ConfigLoaderImpl.load_sweep_config
def counted(self, *a, **k):
    with open(out, "a") as f:
        f.write("1\\n")
    return orig(self, *a, **k)
ConfigLoaderImpl.load_sweep_config = counted
sys.argv = ["gradtrack", *sys.argv[2:]]
runpy.run_module("gradtrack", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_each_job_is_composed_once_and_runs_its_own_config(project, launcher):
    """check_jobs' composition is reused by the sweeper's check and the launcher (joblib:
    its workers load it, and set up each job as Hydra's joblib launcher does)."""
    import yaml

    count = project / "composed.txt"
    lrs = ("0.01", "0.05", "0.1")
    res = subprocess.run(
        [sys.executable, "-c", _COUNT_COMPOSE, str(count), "-m", *QUICK, *launcher]
        + [f"optimizer.lr={','.join(lrs)}", "hydra.sweep.dir=multirun/s"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(count.read_text().splitlines()) == len(lrs)  # without the memo: 3 per job
    _, children = _check_landed(project, len(lrs), 20)
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert sorted(by_lr) == sorted(lrs)
    for num, lr in enumerate(lrs):
        job = project / "multirun" / "s" / str(num) / ".hydra"
        assert yaml.safe_load((job / "config.yaml").read_text())["optimizer"]["lr"] == float(lr)
        hydra_cfg = yaml.safe_load((job / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["num"] == num
        # each launcher's own job id: the basic one's is the number
        name = hydra_cfg["job"]["name"]
        assert hydra_cfg["job"]["id"] == (f"{name}_{num}" if launcher else str(num))
        assert f"optimizer.lr={lr}" in hydra_cfg["overrides"]["task"]
        assert by_lr[lr].data.tags["overrides"].endswith(f"optimizer.lr={lr}")


@pytest.mark.parametrize(
    "bad, named",
    [
        ("optimizer.lr=0.1,abc", "optimizer.lr=abc): optimizer.lr: invalid value"),
        ("optimizer.lr=0.1,abc", "optimizer.lr takes a number"),
        ("model=quadratic,mpl", "model=mpl"),
        ("optimizer.lr=0.1,-1", "optimizer.lr: must be > 0"),
        # the same messages as a single run gets (hydra_errors.explain), not Hydra's
        ("optimizer=sgd,adamm", "there is no optimizer option 'adamm'"),
        ("optimizer=sgd,adamm", "Did you mean 'adam'?"),
        # one line for a problem that several jobs share, naming the first three
        ("optimizer.lrr=0.1,0.2,0.3,0.4", "4 jobs (job #0 ("),
        ("optimizer.lrr=0.1,0.2,0.3,0.4", "optimizer.lrr=0.3); and 1 more): optimizer.lrr: "),
        ("optimizer.lrr=0.1,0.2,0.3,0.4", "unknown key in optimizer. Did you mean 'lr'?"),
        # joblib says it only once its launcher starts, after the parent run exists
        (
            "hydra/launcher=joblib hydra.launcher.n_jobs=0 optimizer.lr=0.1,0.2",
            "hydra.launcher.n_jobs=0: no worker would run the jobs",
        ),
        # ... and so it does for any setting it refuses (a traceback, then every job
        # left not run under a FAILED parent)
        (
            "hydra/launcher=joblib hydra.launcher.prefer=xyz optimizer.lr=0.1,0.2",
            "hydra.launcher.prefer=xyz: prefer=xyz is not a valid backend hint",
        ),
        (
            "hydra/launcher=joblib hydra.launcher.max_nbytes=abc optimizer.lr=0.1,0.2",
            "hydra.launcher.max_nbytes=abc: Invalid literal for size",
        ),
        (
            "hydra/launcher=joblib hydra.launcher.pre_dispatch=abc optimizer.lr=0.1,0.2",
            "hydra.launcher.pre_dispatch=abc: 'abc' is not a valid",
        ),
        # a key added with + that the schema lacks would be dropped without a word
        ("+optimizer.momentun=0.5,0.6", "optimizer.momentun: no such setting"),
        # a joblib sweep checks its jobs in a forked child (sweep.ForkedCheck): the same
        # words, one line for a problem several jobs share
        ("hydra/launcher=joblib hydra.launcher.n_jobs=2 optimizer.lr=0.1,abc", "takes a number"),
        (
            "hydra/launcher=joblib hydra.launcher.n_jobs=2 optimizer.lrr=0.1,0.2,0.3",
            "3 jobs (job #0 (epochs=5 optimizer.lrr=0.1); job #1 (epochs=5 optimizer.lrr=0.2);",
        ),
    ],
)
def test_typo_in_one_sweep_value_fails_before_any_job(project, bad, named):
    res = run_cli(["-m", "epochs=5", *bad.split()], project)
    assert res.returncode == 2
    assert named in res.stderr
    assert "sweep not started" in res.stderr
    assert "Config search path" not in res.stderr and "full_key" not in res.stderr
    assert res.stderr.count("unknown key") <= 1
    assert "leaked" not in res.stderr  # a refused joblib sweep starts no worker
    # Nothing ran: no job printed its summary, no run (parent or child) exists.
    assert "final_loss:" not in res.stdout
    assert mlflow_runs(project) == []


# -- failure isolation ------------------------------------------------------------


@pytest.mark.slow
def test_rerunning_a_sweep_with_a_failed_job_counts_each_job_once(project):
    """The rerun reuses the finished jobs and tries the failed one again: the summary
    has one row per job (the failed job's latest try), and the parent's counts are this
    invocation's."""
    import csv

    args = ["-m", "+experiment=fit_linear_1d", "backend=numpy", "epochs=30"]
    args += ["tracking.log_model=false", "optimizer.lr=0.01,1e6,0.1"]
    first = run_cli(args, project)
    second = run_cli(args, project)
    assert first.returncode != 0 and second.returncode != 0
    assert "3 jobs reused" not in second.stdout  # the failed one was tried again
    assert "2 jobs reused, 0 run, 1 failed, 0 not run" in second.stdout
    assert "(experiment 'gradtrack', job lr=0.1)" in first.stdout  # its MLflow run line
    assert "gradtrack sweep: 2/3 jobs finished, 1 failed (lr=1000000.0);" in second.stderr
    parents, children = _split(project)
    assert len(parents) == 1 and len(children) == 4  # the failed job ran twice
    parent = parents[0]
    path = _client(project).download_artifacts(parent.info.run_id, "sweep_summary.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    [failed] = [r for r in rows if r["status"] == "FAILED"]
    latest = max(
        (c for c in children if c.info.status == "FAILED"), key=lambda c: c.info.start_time
    )
    assert failed["run_id"] == latest.info.run_id
    assert parent.data.tags["failed_jobs"] == "1"
    # this invocation's counts, though the first one logged more at the same step
    assert parent.data.metrics["sweep/run_jobs"] == 0.0
    assert parent.data.metrics["sweep/reused_jobs"] == 2.0
    assert parent.data.metrics["sweep/finished_jobs"] == 2.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    # joblib: a worker sends the job's DivergedError back to the main process; one that
    # did not unpickle there broke the pool, leaving a sibling job's run RUNNING.
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["basic", "joblib"],
)
def test_diverging_job_fails_alone_and_is_listed_on_the_parent(project, launcher):
    res = run_cli(
        [
            "-m",
            "+experiment=fit_linear",
            "backend=numpy",
            "epochs=50",
            "tracking.log_model=false",
            "optimizer.lr=0.01,1e6,0.1",
            *launcher,
        ],
        project,
    )
    assert res.returncode == 1  # the sweep reports the failure
    assert "BrokenProcessPool" not in res.stderr
    # Hydra names the failed job, gradtrack says what went wrong: no traceback
    assert "Error executing job with overrides: [" in res.stderr
    assert "gradtrack: error: training diverged: the loss became non-finite" in res.stderr
    assert "Traceback" not in res.stderr
    # each job prints its summary, not its step-by-step trace (50 lines a job here)
    assert res.stdout.count("final_loss:") == 2 and "step    1 " not in res.stdout
    parents, children = _split(project)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    status = {c.data.tags["overrides"].split()[-1]: c for c in children}
    assert status["optimizer.lr=1000000.0"].info.status == "FAILED"
    assert status["optimizer.lr=1000000.0"].data.tags["diverged"] == "true"
    assert status["optimizer.lr=0.01"].info.status == "FINISHED"
    assert status["optimizer.lr=0.1"].info.status == "FINISHED"
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failed_jobs"] == parent.data.tags["unfinished_jobs"] == "1"
    assert "optimizer.lr=1000000.0" in parent.data.tags["failed_overrides"]
    assert parent.data.tags["best_run_id"] == status["optimizer.lr=0.1"].info.run_id
    md = Path(
        _client(project).download_artifacts(parent.info.run_id, "sweep_summary.md")
    ).read_text()
    assert md.startswith("# Sweep summary (3 jobs: 2 finished, 1 failed)")
    assert "## Jobs that did not finish" in md and "optimizer.lr=1000000.0" in md
    assert "diverged" in md
    # The overlay's axis fits the finished jobs; the diverged one (losses to ~1e300)
    # leaves it at the top. (Fitted to all, the axis overflowed to 1..10: an empty plot.)
    png = _client(project).download_artifacts(parent.info.run_id, "loss_curves.png")
    from gradtrack.artifacts import _COLORS

    for k in (0, 2):  # lr=0.01 and lr=0.1 in the colours of the 1st and 3rd job
        pixels, height = pixels_of(Path(png), _COLORS[k])
        assert pixels > 500 and height > 100  # drawn, and falling across the plot
    assert "RuntimeWarning" not in res.stderr


@pytest.mark.slow
def test_sigterm_mid_sweep_ends_the_job_and_the_parent_killed_within_2s(project):
    """A scheduler's SIGTERM during a basic-launcher sweep: the training job and the
    parent both end KILLED (nothing left RUNNING) and the process exits 143 within 2 s."""
    import os
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "gradtrack", "-m", "model=quadratic", "epochs=100000000"]
        + ["optimizer.lr=0.0001,0.0002"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        deadline = time.monotonic() + 120
        while not any(r.info.status == "RUNNING" for r in _split(project)[1]):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.3)
        time.sleep(1.0)  # the job trains
        took, err = signal_and_time_exit(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert took <= 2.0, f"exit took {took:.2f} s after SIGTERM"
    parents, children = _split(project)
    assert [p.info.status for p in parents] == ["KILLED"], err[-3000:]
    assert parents[0].data.tags["killed_by"] == "SIGTERM"
    assert [c.info.status for c in children] == ["KILLED"]
    assert children[0].data.tags["killed_by"] == "SIGTERM"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-to-the-main-process", "ctrl-c-to-the-group"])
def test_a_stopped_joblib_sweep_ends_its_workers_runs_killed(project, how):
    """SIGTERM to the main process only (as Kubernetes sends it), or Ctrl-C to the whole
    process group: the workers are neither left training orphaned nor killed by joblib
    before their runs end. Every run ends KILLED and no worker lives on."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "gradtrack", "-m", "hydra/launcher=joblib"]
        + ["hydra.launcher.n_jobs=2", "model=quadratic", "epochs=100000000"]
        + ["optimizer.lr=0.0001,0.0002,0.0003"],  # the third one waits for a worker
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under a terminal
    )
    try:
        deadline = time.monotonic() + 180
        while sum(r.info.status == "RUNNING" for r in _split(project)[1]) < 2:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the two jobs never started"
            time.sleep(0.3)
        time.sleep(1.0)  # the jobs train
        if how == "ctrl-c-to-the-group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if how == "ctrl-c-to-the-group" else 143), err[-3000:]
    workers = {int(c.data.tags["owner_pid"]) for c in _split(project)[1]}
    deadline = time.monotonic() + 10
    while True:  # the workers end their runs, then exit
        alive = [pid for pid in workers if _running(pid)]
        children = _split(project)[1]
        if not alive and all(c.info.status != "RUNNING" for c in children):
            break
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            status = [(c.info.status, c.data.tags.get("owner_pid")) for c in children]
            pytest.fail(f"workers {alive} alive, runs {status}: {err[-3000:]}")
        time.sleep(0.2)
    assert [c.info.status for c in children] == ["KILLED", "KILLED"], err[-3000:]
    assert [p.info.status for p in _split(project)[0]] == ["KILLED"]
    # the pool's semaphores were unlinked before the exit (sweep_workers.release_pool)
    assert "leaked semaphore" not in err, err[-3000:]
    if how == "ctrl-c-to-the-group":  # the partial summary: stopped, not failed
        assert (
            "0/3 jobs finished, 2 stopped (lr=0.0001; lr=0.0002), 1 not run (lr=0.0003)" in err
        ), err[-3000:]
        tags = _split(project)[0][0].data.tags
        assert (tags["failed_jobs"], tags["unfinished_jobs"]) == ("0", "3")


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        "sigterm-while-the-jobs-are-checked",
        "sigterm-while-the-workers-start",
        "sigkill-while-jobs-run",
    ],
)
def test_a_joblib_sweeps_fork_server_and_workers_end_with_its_main_process(project, how):
    """The fork server and its workers never outlive the main process. Each worker holds
    the server's alive pipe, so the server never saw the main process go, and an idle
    loky worker waits 300 s for work: a sweep stopped while its workers were starting
    left three processes behind. Even a main process killed outright takes them along,
    and a worker in a job then ends its run KILLED. So does the child that checks the
    jobs (sweep.ForkedCheck)."""
    import signal

    from gradtrack.sweep import ForkedCheck

    checker = how == "sigterm-while-the-jobs-are-checked"
    lrs = [f"0.00{i:02d}" for i in range(1, 41)] if checker else ["0.0001", "0.0002"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradtrack", "-m", "hydra/launcher=joblib"]
        + ["hydra.launcher.n_jobs=2", "model=quadratic", "epochs=100000000"]
        + [f"optimizer.lr={','.join(lrs)}"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wanted(pid: int) -> bool:  # the helper whose start the signal is sent at
        return _name(pid) == ForkedCheck.NAME if checker else _is_fork_server(pid)

    try:
        deadline = time.monotonic() + 180
        server = None
        while server is None or (how.startswith("sigkill") and _running_children(project) < 2):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the sweep never got that far"
            server = server or next((c for c in _children(proc.pid) if wanted(c)), None)
            time.sleep(0.05)
        sig = signal.SIGTERM if how.startswith("sigterm") else signal.SIGKILL
        helpers = _children(proc.pid)  # the server, and the jobs' checker if still there
        took, err = signal_and_time_exit(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how.startswith("sigterm"):
        assert proc.returncode == 143 and took <= 2.0, (proc.returncode, took, err[-3000:])
    left = {server, *helpers, *_children(server)}
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in left):
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"{[p for p in left if _running(p)]} outlived the main process")
        left |= {c for pid in left for c in _children(pid)}
        time.sleep(0.2)
    if how.startswith("sigkill"):  # the workers' runs, not the parent (nobody ends it)
        assert [c.info.status for c in _split(project)[1]] == ["KILLED", "KILLED"]


def _running_children(project) -> int:
    return sum(r.info.status == "RUNNING" for r in _split(project)[1])


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[-1].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def _name(pid: int) -> str:
    """What ps shows as the process's name ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_fork_server(pid: int) -> bool:
    """Whether ``pid`` is a joblib sweep's fork server: forked from the main process
    (named so), or spawned (multiprocessing's command line)."""
    from gradtrack.sweep_workers import FORK_SERVER_NAME

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _name(pid) == FORK_SERVER_NAME or b"forkserver" in cmdline


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# -- parallel on one machine ------------------------------------------------------


@pytest.mark.slow
def test_joblib_eight_parallel_jobs_on_a_fresh_sqlite_store(project):
    assert not (project / "mlruns").exists()
    res = run_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            # Two workers on the two CI cores: more only adds interpreter start-ups.
            "hydra.launcher.n_jobs=2",
            "model=quadratic",
            "epochs=100",
            "optimizer=sgd,adam",
            "optimizer.lr=0.01,0.02,0.03,0.04",
        ],
        project,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "database is locked" not in res.stdout + res.stderr
    _check_landed(project, 8, 100)


def test_a_forked_check_that_ends_without_an_answer_is_done_here(monkeypatch):
    """Should the child checking a joblib sweep's jobs end without an answer (killed,
    out of memory), the main process checks them itself: never a sweep unchecked."""
    from gradtrack import sweep

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child that ends without answering
        os._exit(1)
    os.close(write_fd)
    calls = []

    def check_jobs(config, jobs, keep=False):
        calls.append((config, jobs, keep))
        return ["typed"], {"data": "digest"}

    monkeypatch.setattr(sweep, "check_jobs", check_jobs)
    jobs = [["optimizer.lr=0.1"], ["optimizer.lr=0.2"]]
    assert sweep.ForkedCheck(pid, read_fd, "cfg", jobs).result() == (["typed"], {"data": "digest"})
    assert calls == [("cfg", jobs, True)]


def test_joblib_workers_are_warmed_with_every_swept_backend_and_no_other():
    from omegaconf import OmegaConf

    from gradtrack.sweep_workers import modules_for

    def mods(task: list[str], backend: str = "numpy") -> list[str]:
        config = {"backend": {"name": backend}, "hydra": {"overrides": {"task": task}}}
        return [m for m in modules_for(OmegaConf.create(config)) if m in ("torch", "tensorflow")]

    assert mods(["backend=numpy,torch", "optimizer.lr=0.1,0.2"]) == ["torch"]
    assert mods(["backend=choice(tensorflow,torch)"]) == ["torch", "tensorflow"]
    assert mods(["optimizer.lr=0.1,0.2"], backend="tensorflow") == ["tensorflow"]
    assert mods(["optimizer.lr=0.1,0.2", "model.name=torch"]) == []


# Runs the CLI and writes what the joblib workers warmed at the sweep's start were like.
_WARMED = """
import atexit, json, os, runpy, sys
from hydra._internal.hydra import Hydra
from gradtrack import sweep_workers
out, returns, multirun = sys.argv[1], [], Hydra.multirun
def multirun_recording(self, *args, **kwargs):  # the sweeper's results, as they came back
    batches = multirun(self, *args, **kwargs)
    for batch in batches:
        returns.extend(
            [r.return_value, r.status.name, r.overrides, r.cfg is None, r.hydra_cfg is None]
            for r in batch
        )
    return batches
Hydra.multirun = multirun_recording
dump = lambda: json.dumps({
    "main": os.getpid(),
    "workers": sweep_workers.warmed,
    "main_imported_matplotlib": "matplotlib" in sys.modules,
    "returns": returns,
})
atexit.register(lambda: open(out, "w").write(dump()))
sys.argv = ["gradtrack", *sys.argv[2:]]
runpy.run_module("gradtrack", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_joblib_jobs_run_in_the_workers_warmed_while_the_sweep_was_checked(project):
    """The workers start during the main process's checks, forked from one server that
    imported gradtrack, MLflow, sklearn and matplotlib once; Hydra's launcher then reuses
    exactly those processes, which keep joblib's limit on BLAS/OpenMP threads."""
    import json

    from joblib import cpu_count

    from gradtrack import sweep_workers

    pids_file = project / "warmed.json"
    res = subprocess.run(
        [sys.executable, "-c", _WARMED, str(pids_file), "-m", "hydra/launcher=joblib"]
        + ["hydra.launcher.n_jobs=2", "+experiment=fit_linear_1d", "epochs=20"]
        + ["optimizer.lr=0.1,0.2,0.3,0.4"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(pids_file.read_text())
    warmed = seen["workers"]
    assert len(warmed) == 2
    # both forked from the same fork server, not started by the main process itself
    assert len({w["ppid"] for w in warmed}) == 1
    assert warmed[0]["ppid"] != seen["main"]
    assert all(w["had_modules"] for w in warmed)
    # the server was forked from the main process, MLflow loaded (gradtrack.forking)
    assert {(w["name"], w["server_name"]) for w in warmed} == {
        (sweep_workers.WORKER_NAME, sweep_workers.FORK_SERVER_NAME)
    }
    assert {w["server_parent"] for w in warmed} == {str(seen["main"])}
    # the server froze its imports before forking them: a worker's full collections skip
    # them (an interpreter with these modules holds well over 100,000 objects)
    assert all(w["frozen_objects"] > 100_000 for w in warmed)
    expected_threads = os.environ.get("OMP_NUM_THREADS", str(max(cpu_count() // 2, 1)))
    assert all(w["OMP_NUM_THREADS"] == expected_threads for w in warmed)
    # ... on the BLAS pools the main process had loaded before the server was forked too
    blas = {n for w in warmed for n in w["blas_threads"]}
    assert blas == {int(os.environ.get("OPENBLAS_NUM_THREADS", expected_threads))}
    parent, children = _check_landed(project, 4, 20)
    assert {int(c.data.tags["owner_pid"]) for c in children} <= {w["pid"] for w in warmed}
    # each job's result came back without its two configs, and with all the rest
    by_lr = {c.data.params["optimizer.lr"]: c.data.metrics["final_loss"] for c in children}
    lr_of = {
        tuple(r[2]): next(o for o in r[2] if o.startswith("optimizer.lr=")) for r in seen["returns"]
    }
    returns = {lr_of[tuple(r[2])].split("=")[1]: r for r in seen["returns"]}
    assert sorted(returns) == sorted(by_lr)
    for lr, (value, status, _, no_cfg, no_hydra_cfg) in returns.items():
        assert (status, no_cfg, no_hydra_cfg) == ("COMPLETED", True, True)
        assert value == pytest.approx(by_lr[lr], rel=1e-12)
    # The summary's loss overlay was drawn by an idle worker, which had matplotlib loaded:
    # the main process never imported it.
    assert seen["main_imported_matplotlib"] is False
    assert "loss_curves.png" in {
        a.path for a in _client(project).list_artifacts(parent.info.run_id)
    }
    for c in children:  # the same artifacts and model as a job in a cold worker
        names = {a.path for a in _client(project).list_artifacts(c.info.run_id)}
        assert {"loss_curve.png", "coefficients.png", "history.npz"} <= names
        assert c.outputs.model_outputs


# -- reproducibility --------------------------------------------------------------


@pytest.mark.slow
def test_rerunning_a_sweep_reproduces_every_child_exactly(tmp_path, prepared_data):
    finals = []
    for attempt in ("a", "b"):
        proj = tmp_path / attempt
        proj.mkdir()
        (proj / "data").symlink_to(prepared_data, target_is_directory=True)
        res = run_cli(
            [
                "-m",
                "+experiment=fit_linear",
                "epochs=60",
                "tracking.log_model=false",
                "model.init=normal",
                "backend=numpy,torch",
                "optimizer.lr=0.05,0.2",
            ],
            proj,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        _, children = _split(proj)
        assert len(children) == 4
        finals.append({c.data.tags["overrides"]: c.data.metrics["final_loss"] for c in children})
    assert finals[0] == finals[1]  # exact, per override set


# -- distributed: Ray ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A real Ray head on loopback (2 CPUs), started from another folder; stopped after."""
    port = _free_port()
    ray = Path(sys.executable).parent / "ray"
    where = tmp_path / "ray_cwd"
    where.mkdir()
    proc = subprocess.Popen(
        [
            str(ray),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        cwd=where,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: teardown stops exactly this head
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "ray start exited"
                time.sleep(0.5)
        else:
            pytest.fail("Ray head did not come up in 90 s")
        yield f"127.0.0.1:{port}"
    finally:
        stop_session(proc, grace=5)  # a graceful Ray stop takes ~30 s; nothing to keep


@pytest.mark.slow
@pytest.mark.integration
def test_ray_launcher_runs_the_sweep_on_a_ray_cluster(project, ray_head):
    res = run_cli(
        [
            "-m",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.address={ray_head}",
            "model=quadratic",
            "epochs=50",
            "optimizer.lr=0.01,0.02,0.03",
        ],
        project,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Connected to Ray cluster" in res.stderr
    parent, children = _check_landed(project, 3, 50)
    # The jobs really ran in Ray workers, not in the sweep process.
    assert "(_run_job pid=" in res.stdout + res.stderr
    assert parent.data.tags["launcher"].endswith("RayLauncher")
