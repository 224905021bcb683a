"""Run fingerprints, reuse of FINISHED runs, and resuming an interrupted sweep.

Real SQLite stores and real ``python -m gradtrack`` processes throughout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, compose, mlflow_runs, run_cli
from test_sweeps import ray_head  # noqa: F401, F811  (the fixture: a real local Ray head)

QUICK = ["model=quadratic", "epochs=20"]


def _fp(*overrides: str, digest: str | None = None) -> str:
    from gradtrack.tracking.fingerprint import of_config

    return of_config(compose(*overrides), digest)


# -- the fingerprint ------------------------------------------------------------------


def test_fingerprint_ignores_order_spelling_and_plumbing():
    base = _fp("+experiment=fit_linear", "optimizer.lr=0.000001", "seed=3")
    assert base == _fp("seed=3", "+experiment=fit_linear", "optimizer.lr=1e-6")
    assert base == _fp(
        "+experiment=fit_linear",
        "seed=3",
        "optimizer.lr=1e-06",
        "tracking.root=/elsewhere",
        "tracking.experiment=other",
        "tracking.max_points=10",
        "log_every=5",
        "progress_min_epochs=1",
        "output.metrics_path=m.json",
        "reuse=true",
        "description=hello",
    )


@pytest.mark.parametrize(
    "change",
    [
        "optimizer.lr=0.000002",
        "seed=4",
        "epochs=201",
        "checks.gradcheck_tol=1e-5",  # checks change what a run reports
        "checks.baseline=false",
        "backend.dtype=float32",
        "optimizer=adam",
    ],
)
def test_fingerprint_changes_with_what_determines_the_result(change):
    base = ["+experiment=fit_linear", "optimizer.lr=0.000001", "seed=3"]
    assert _fp(*base) != _fp(*base, change)


def test_fingerprint_covers_data_and_framework():
    from gradtrack.tracking.fingerprint import parts

    assert _fp(*QUICK, digest="a" * 64) != _fp(*QUICK, digest="b" * 64)
    assert _fp(*QUICK) != _fp(*QUICK, "backend=torch")
    plain = {"backend": {"name": "torch"}, "epochs": 1}
    assert set(parts(plain, None)["frameworks"]) == {"numpy", "torch"}
    plain["backend"]["name"] = "numpy"
    assert set(parts(plain, None)["frameworks"]) == {"numpy"}


def test_device_auto_is_fingerprinted_as_the_device_it_picks(monkeypatch):
    from gradtrack.tracking import fingerprint

    def fp(device: str) -> str:
        return _fp("+experiment=fit_linear", "backend=torch", f"backend.device={device}")

    # No GPU here: auto computes what cpu computes, so the two are one fingerprint.
    assert fingerprint.resolved_device("torch", "auto") == "cpu"
    assert fp("auto") == fp("cpu") != fp("cuda")
    # A machine where torch sees a GPU: auto is cuda, never answered by a CPU result.
    fingerprint.resolved_device.cache_clear()
    monkeypatch.setattr(fingerprint, "GPU_NODES", (str(Path(__file__)),))  # "a node exists"
    import gradtrack.backends.torch_backend as torch_backend

    monkeypatch.setattr(torch_backend, "resolve_device", lambda device: "cuda")
    try:
        assert fp("auto") == fp("cuda") != fp("cpu")
    finally:
        fingerprint.resolved_device.cache_clear()


def test_fingerprint_of_a_numpy_run_imports_no_framework():
    code = (
        "import sys\n"
        "from gradtrack.tracking.fingerprint import fingerprint\n"
        "fingerprint({'backend': {'name': 'numpy'}, 'epochs': 3}, None)\n"
        "fingerprint({'backend': {'name': 'torch'}, 'epochs': 3}, None)\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_code_hash_sees_an_edit_to_a_model(tmp_path):
    from gradtrack.tracking.fingerprint import PACKAGE_DIR, hash_sources

    copy = tmp_path / "gradtrack"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert hash_sources(copy) == hash_sources(PACKAGE_DIR)
    model = copy / "models" / "quadratic.py"
    model.write_text(model.read_text() + "\n# an uncommitted edit\n")
    assert hash_sources(copy) != hash_sources(PACKAGE_DIR)


# -- reuse of a single run ----------------------------------------------------------


def _by_fp(project: Path) -> Counter:
    return Counter(r.data.tags.get("fingerprint") for r in mlflow_runs(project))


def test_reuse_answers_from_a_finished_run_and_false_trains(project):
    first = run_cli([*QUICK, "reuse=true"], project)
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = mlflow_runs(project)
    fp = run.data.tags["fingerprint"]
    assert run.data.tags["fingerprint_code"].startswith("0.")
    assert run.data.params.get("reuse") is None  # plumbing: not a param

    again = run_cli([*QUICK, "optimizer.lr=1e-2", "tracking.max_points=50", "reuse=true"], project)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"reused FINISHED run {run.info.run_id}" in again.stdout
    final = f"{run.data.metrics['final_loss']:.10g}"
    assert f"final_loss: {final}" in again.stdout  # its results are printed
    assert "step    1" not in again.stdout  # nothing trained
    assert len(mlflow_runs(project)) == 1

    forced = run_cli([*QUICK, "reuse=false"], project)
    assert forced.returncode == 0
    assert "reused" not in forced.stdout
    default = run_cli(QUICK, project)  # a plain single run trains (the default)
    assert "reused" not in default.stdout
    assert _by_fp(project) == {fp: 3}


def test_a_failed_or_killed_match_is_trained_again(project):
    from mlflow.tracking import MlflowClient

    assert run_cli([*QUICK, "reuse=true"], project).returncode == 0
    (run,) = mlflow_runs(project)
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    for status in ("FAILED", "KILLED"):
        client.set_terminated(run.info.run_id, status)
        res = run_cli([*QUICK, "reuse=true"], project)
        assert res.returncode == 0
        assert "reused" not in res.stdout, status
        newest = max(mlflow_runs(project), key=lambda r: r.info.start_time)
        assert newest.info.status == "FINISHED"
        client.delete_run(newest.info.run_id)  # leave only the FAILED/KILLED one


def test_reused_run_returns_the_same_sweep_metric(project, monkeypatch):
    """What Hydra gets back (cli returns result.metrics[sweep_metric]) is the same."""
    from gradtrack import train

    monkeypatch.chdir(project)
    cfg = compose("+experiment=fit_linear", "epochs=30", "reuse=true", f"paths.root={project}")
    first = train.run(cfg)
    second = train.run(cfg)
    assert first.reused_from is None and second.reused_from == first.run_id
    for metric in ("final_loss", "r2", "baseline/pass"):
        assert second.metrics[metric] == first.metrics[metric]


def test_dvc_stage_never_reuses(project):
    assert run_cli([*QUICK, "reuse=true"], project).returncode == 0
    env = {"GRADTRACK_DVC_STAGE": "train@x"}
    res = run_cli([*QUICK, "reuse=true"], project, env=env)
    assert res.returncode == 0 and "reused" not in res.stdout
    assert len(mlflow_runs(project)) == 2


def test_an_edited_model_source_changes_the_fingerprint_and_trains(project, tmp_path):
    """A copy of the package with one model file edited (the repo is not touched)."""
    src = tmp_path / "edited_src"
    shutil.copytree(
        REPO / "src" / "gradtrack", src / "gradtrack", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {"GRADTRACK_CONFIG_DIR": str(REPO / "conf")}
    same = {**env, "PYTHONPATH": str(src)}
    assert run_cli([*QUICK, "reuse=true"], project, env=same).returncode == 0
    assert "reused" in run_cli([*QUICK, "reuse=true"], project, env=same).stdout
    model = src / "gradtrack" / "models" / "quadratic.py"
    model.write_text(model.read_text() + "\n# an edit that changes nothing numerically\n")
    edited = run_cli([*QUICK, "reuse=true"], project, env=same)
    assert edited.returncode == 0 and "reused" not in edited.stdout
    runs = mlflow_runs(project)
    assert len(runs) == 2
    assert len({r.data.tags["fingerprint"] for r in runs}) == 2
    assert len({r.data.tags["fingerprint_code"] for r in runs}) == 2


@pytest.mark.slow
def test_two_concurrent_starts_both_train_and_say_so(project):
    # About ten seconds of training: far longer than the two start-ups differ, so both
    # look the fingerprint up before either has finished.
    long = ["model=quadratic", "epochs=2000000", "reuse=true"]
    args = [sys.executable, "-m", "gradtrack", *long]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # The store exists first (as it does for any second run), so both look it up.
    assert run_cli(["model=quadratic", "epochs=5"], project).returncode == 0
    procs = [
        subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not any("reused" in o for o in outs)  # neither was skipped
    runs = [r for r in mlflow_runs(project) if r.data.params.get("epochs") == "2000000"]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["fingerprint"] for r in runs}) == 1
    ids = {r.info.run_id for r in runs}
    marked = [r for r in runs if r.data.tags.get("duplicate_of")]
    assert marked, "a run trained twice must be tagged duplicate_of"
    for r in marked:
        assert set(r.data.tags["duplicate_of"].split(",")) == ids - {r.info.run_id}
    third = run_cli(long, project)
    assert "reused FINISHED run" in third.stdout


# -- sweeps -------------------------------------------------------------------------


def _sweep_runs(project: Path):
    runs = mlflow_runs(project)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") == "child"]
    return parents, children


@pytest.mark.slow
def test_rerun_sweep_reuses_every_job_and_a_changed_list_is_a_new_sweep(project):
    sweep = ["-m", *QUICK, "optimizer.lr=0.01,0.02,0.03"]
    first = run_cli(sweep, project)
    assert first.returncode == 0, first.stderr[-2000:]
    (parent,) = _sweep_runs(project)[0]
    assert parent.data.tags["sweep_jobs_run"] == "3"

    # Same job list, other order: the same sweep, nothing trained.
    again = run_cli(["-m", *QUICK, "optimizer.lr=0.03,0.01,0.02"], project)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming parent run {parent.info.run_id}" in again.stdout
    parents, children = _sweep_runs(project)
    assert len(parents) == 1 and len(children) == 3
    p = parents[0]
    assert p.info.status == "FINISHED"
    assert (p.data.tags["sweep_jobs_reused"], p.data.tags["sweep_jobs_run"]) == ("3", "0")
    assert p.data.tags["sweep_invocations"] == "2"
    assert p.data.metrics["best/final_loss"] == parent.data.metrics["best/final_loss"]

    # A changed job list is a new sweep; its known jobs are reference children.
    grown = run_cli(["-m", *QUICK, "optimizer.lr=0.01,0.02,0.03,0.04"], project)
    assert grown.returncode == 0, grown.stderr[-2000:]
    parents, children = _sweep_runs(project)
    assert len(parents) == 2
    new = next(x for x in parents if x.info.run_id != parent.info.run_id)
    assert (new.data.tags["sweep_jobs_reused"], new.data.tags["sweep_jobs_run"]) == ("3", "1")
    refs = [c for c in children if c.data.tags.get("reused_from")]
    assert len(refs) == 3
    trained = Counter(c.data.tags["fingerprint"] for c in children if c not in refs)
    assert set(trained.values()) == {1} and len(trained) == 4
    summary = _artifact(project, new.info.run_id, "sweep_summary.csv")
    assert "reused_from" in summary.splitlines()[0]
    from gradtrack.report import comparison_rows

    header, rows = comparison_rows(refs)
    assert all(row[header.index("note")].startswith("reused: the result of run") for row in rows)
    assert all(c.data.params.get("optimizer.lr") for c in refs)  # params copied too


def test_jobs_that_differ_only_in_plumbing_train_once_and_both_finish(project):
    """log_every=1,10: one fingerprint. The second job is answered by the first job's
    run through a reference child of its own; before, it was answered by that child
    itself, and the summary found no run for it (parent FAILED, exit 0)."""
    res = run_cli(["-m", *QUICK, "log_every=1,10"], project)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2/2 jobs finished" in res.stdout
    [parent], children = _sweep_runs(project)
    assert parent.info.status == "FINISHED"
    by_overrides = {c.data.tags["overrides"].split()[-1]: c for c in children}
    assert sorted(by_overrides) == ["log_every=1", "log_every=10"]
    trained, ref = by_overrides["log_every=1"], by_overrides["log_every=10"]
    assert {trained.info.status, ref.info.status} == {"FINISHED"}
    assert ref.data.tags["reused_from"] == trained.info.run_id
    assert parent.data.tags["sweep_jobs_reused"] == "1"


def test_rerun_with_the_keys_in_another_order_reuses_each_job_once(project):
    """``epochs=20 model=quadratic`` for ``model=quadratic epochs=20``: the same sweep
    (its parent is reopened) and the same jobs, each answered by its own child, not
    counted twice (it said "4/4 jobs finished" for a 2-job sweep)."""
    first = run_cli(["-m", "model=quadratic", "epochs=20", "optimizer.lr=0.01,0.02"], project)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(["-m", "epochs=20", "model=quadratic", "optimizer.lr=0.02,0.01"], project)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming parent run" in again.stdout
    assert "2 jobs reused, 0 run" in again.stdout and "2/2 jobs finished" in again.stdout
    [parent], children = _sweep_runs(project)
    assert len(children) == 2 and not any(c.data.tags.get("reused_from") for c in children)
    assert parent.info.status == "FINISHED" and parent.data.tags["finished_jobs"] == "2"


def test_a_sweep_whose_parent_ends_failed_exits_nonzero(project):
    """No job raised, but the sweep did not do what was asked (nothing to register):
    the parent is FAILED and so is the command."""
    res = run_cli(["-m", *QUICK, "optimizer.lr=0.01,0.02", "tracking.register_best=quad"], project)
    assert res.returncode == 1, res.stdout + res.stderr[-2000:]
    assert "nothing registered" in res.stderr
    [parent], _ = _sweep_runs(project)
    assert parent.info.status == "FAILED"


@pytest.mark.slow
def test_best_job_reused_from_another_sweep_registers_the_model_that_trained(project):
    """register_best when the best job is a reference child: the original's LoggedModel
    is registered (and is the reference child's output too), not an error."""
    from mlflow.tracking import MlflowClient

    base = ["-m", "+experiment=fit_linear_1d", "epochs=100"]
    first = run_cli([*base, "optimizer.lr=0.1"], project)
    assert first.returncode == 0, first.stderr[-2000:]
    [original] = _sweep_runs(project)[1]
    [model] = original.outputs.model_outputs

    second = run_cli([*base, "optimizer.lr=0.1,0.001", "tracking.register_best=mpg"], project)
    assert second.returncode == 0, second.stderr[-3000:]
    [ref] = [c for c in _sweep_runs(project)[1] if c.data.tags.get("reused_from")]
    assert ref.data.tags["reused_from"] == original.info.run_id
    assert [m.model_id for m in ref.outputs.model_outputs] == [model.model_id]
    new = next(p for p in _sweep_runs(project)[0] if p.data.tags["sweep_jobs_reused"] == "1")
    assert new.info.status == "FINISHED" and new.data.tags["best_run_id"] == ref.info.run_id
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("mpg", "champion")
    assert mv.run_id == original.info.run_id and model.model_id in mv.source, mv


def _artifact(project: Path, run_id: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return Path(client.download_artifacts(run_id, name, str(project))).read_text()


@pytest.mark.slow
def test_sweep_interrupted_by_sigint_resumes_with_the_same_command(project):
    """12 jobs, Ctrl-C after about half of them, the same command again."""
    from mlflow.tracking import MlflowClient

    cmd = [
        sys.executable,
        "-m",
        "gradtrack",
        "-m",
        "model=quadratic",
        "epochs=150000",  # about a second of training per job
        "optimizer.lr=0.0001,0.0002,0.0003,0.0004,0.0005,0.0006",
        "seed=1,2",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    db = project / "mlruns" / "mlflow.db"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        done_at_signal = 0
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not db.exists():
                continue
            children = [
                r
                for r in MlflowClient(f"sqlite:///{db}").search_runs(
                    ["1"], "tags.sweep_role = 'child'"
                )
                if r.info.status == "FINISHED"
            ]
            if len(children) >= 6:
                done_at_signal = len(children)
                os.killpg(proc.pid, signal.SIGINT)
                break
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first_s = time.monotonic() - t0
    assert 6 <= done_at_signal < 12, out[-3000:]
    assert proc.returncode == 130, out[-3000:]
    parents, children = _sweep_runs(project)
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    finished_before = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert 6 <= len(finished_before) < 12

    t1 = time.monotonic()
    res = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    second_s = time.monotonic() - t1
    assert res.returncode == 0, res.stderr[-3000:]
    parents, children = _sweep_runs(project)
    assert len(parents) == 1, "the rerun reopened the same parent"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 12
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    # Each configuration trained (FINISHED) exactly once, and no reference children.
    assert not any(c.data.tags.get("reused_from") for c in children)
    assert set(Counter(c.data.tags["fingerprint"] for c in finished).values()) == {1}
    # The second invocation ran only the missing jobs.
    ran = 12 - len(finished_before)
    assert parent.data.tags["sweep_jobs_reused"] == str(len(finished_before))
    assert parent.data.tags["sweep_jobs_run"] == str(ran)
    assert parent.data.tags["finished_jobs"] == "12"
    new_runs = [c for c in children if c.info.run_id not in finished_before]
    second_inv = [c for c in new_runs if c.info.start_time >= (time.time() - second_s - 5) * 1000]
    assert len([c for c in second_inv if c.info.status == "FINISHED"]) == ran
    summary = _artifact(project, parent.info.run_id, "sweep_summary.csv")
    assert summary.count("earlier") == len(finished_before)
    print(
        f"\nresume timings: first (interrupted after {done_at_signal}/12) {first_s:.1f}s, "
        f"second ({ran} run, {len(finished_before)} reused) {second_s:.1f}s"
    )


@pytest.mark.slow
def test_joblib_sweep_resumes_only_the_unfinished_jobs(project):
    from mlflow.tracking import MlflowClient

    sweep = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *QUICK,
        "optimizer.lr=0.01,0.02,0.03,0.04",
    ]
    assert run_cli(sweep, project, timeout=600).returncode == 0
    _, children = _sweep_runs(project)
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    lost = sorted(children, key=lambda c: c.data.tags["overrides"])[:2]
    for c in lost:  # as if a node was lost while they ran
        client.set_terminated(c.info.run_id, "KILLED")
    res = run_cli(sweep, project, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    parents, children = _sweep_runs(project)
    assert len(parents) == 1
    p = parents[0]
    assert p.info.status == "FINISHED"
    assert (p.data.tags["sweep_jobs_reused"], p.data.tags["sweep_jobs_run"]) == ("2", "2")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 4 and len(children) == 6
    assert set(Counter(c.data.tags["fingerprint"] for c in finished).values()) == {1}


@pytest.mark.slow
def test_optuna_rerun_continues_the_study_and_answers_known_configs(project):
    import optuna

    base = [
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=3",
        *QUICK,
        "optimizer.lr=choice(0.01,0.02,0.03)",
    ]
    first = run_cli([*base, "hydra.sweeper.n_trials=4"], project)
    assert first.returncode == 0, first.stderr[-3000:]
    (parent,) = _sweep_runs(project)[0]
    again = run_cli([*base, "hydra.sweeper.n_trials=7"], project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming parent run {parent.info.run_id}" in again.stdout

    study_name = f"gradtrack-{parent.data.tags['sweep_fingerprint'][:16]}"
    storage = f"sqlite:///{project / 'mlruns' / 'optuna.db'}"
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials()
    assert len(trials) == 7  # n_trials in total, over both invocations
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # Only three configurations exist: each trained once, the other trials answered.
    parents, children = _sweep_runs(project)
    assert len(parents) == 1
    trained = Counter(c.data.tags["fingerprint"] for c in children)
    assert len(trained) == len({t.params["optimizer.lr"] for t in trials})
    assert set(trained.values()) == {1}
    assert "reused FINISHED run" in first.stdout + again.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_ray_sweep_resumes_only_the_unfinished_jobs(project, ray_head):  # noqa: F811
    from mlflow.tracking import MlflowClient

    sweep = [
        "-m",
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={ray_head}",
        *QUICK,
        "optimizer.lr=0.01,0.02,0.03",
    ]
    first = run_cli(sweep, project, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    _, children = _sweep_runs(project)
    lost = min(children, key=lambda c: c.data.tags["overrides"])
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    client.set_terminated(lost.info.run_id, "FAILED")  # as if its node went away
    res = run_cli(sweep, project, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(_run_job pid=" in res.stdout + res.stderr  # the jobs ran in Ray workers
    parents, children = _sweep_runs(project)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    p = parents[0]
    assert (p.data.tags["sweep_jobs_reused"], p.data.tags["sweep_jobs_run"]) == ("2", "1")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 3
    assert set(Counter(c.data.tags["fingerprint"] for c in finished).values()) == {1}


def test_the_sweep_and_the_run_compute_the_same_fingerprint():
    """of_config (sweeps, dataclasses.asdict) equals what train.run hashes (OmegaConf)."""
    from omegaconf import OmegaConf

    from gradtrack.tracking.fingerprint import fingerprint, of_config

    for overrides in (QUICK, ["+experiment=fit_linear", "dataset.features=[weight,year]"]):
        cfg = compose(*overrides)
        plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
        assert of_config(cfg, "d" * 64) == fingerprint(plain, "d" * 64)
