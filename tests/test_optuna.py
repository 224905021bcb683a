"""Hyperparameter search: the Optuna sweeper plugin (hydra/sweeper=optuna) end to end.

Every sweep runs the real CLI in a fresh project folder against a real SQLite MLflow
store, with Optuna 5.x; the search-space parsing is also tested on its own.
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from hydra_plugins.gradtrack_optuna_sweeper import _search_space
from hydra_plugins.gradtrack_optuna_sweeper._search_space import SearchSpaceError

OPTUNA = ["-m", "hydra/sweeper=optuna"]
# fit_linear at its hand-tuned 400 steps; only the searched values differ per trial.
FIT_LINEAR = [
    "+experiment=fit_linear",
    "tracking.log_model=false",
    "tracking.log_artifacts=false",
    "checks.gradcheck=false",
]


def _store(project: Path, root: str = "mlruns"):
    """(client, parent run, child runs) of one sweep in the project's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gradtrack")
    runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    for c in children:
        assert c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return client, parents[0], children


def _trials(client, parent) -> list[dict[str, str]]:
    path = client.download_artifacts(parent.info.run_id, "optuna_trials.csv")
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


# -- the search space ---------------------------------------------------------------


def test_overrides_become_distributions_and_corner_jobs():
    space = _search_space.parse(
        [
            "epochs=50",
            "optimizer.lr=tag(log, interval(0.001, 1.0))",
            "optimizer=sgd,adam",
            "optimizer.batch_size=range(0,40,10)",
        ],
        {"optimizer.momentum": "interval(0.0, 0.9)", "epochs": "10"},
    )
    assert space.fixed == ["epochs=50"]  # the command line replaces hydra.sweeper.params
    by = {p.key: p for p in space.params}
    lr, mom, opt, bs = (
        by[k] for k in ("optimizer.lr", "optimizer.momentum", "optimizer", "optimizer.batch_size")
    )
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 0.001, 1.0, True)
    assert (mom.kind, mom.low, mom.high, mom.log) == ("float", 0.0, 0.9, False)
    assert (opt.kind, opt.choices) == ("choice", ["sgd", "adam"])
    # range's stop is excluded, as in Hydra's basic sweeper: 0, 10, 20, 30
    assert (bs.kind, bs.low, bs.high, bs.step) == ("int", 0, 30, 10)
    assert bs.distribution().high == 30 and lr.distribution().log
    jobs = space.corner_jobs()
    assert len(jobs) == 2 * 2 * 2 * 2  # every bound and choice, in every combination
    assert ["epochs=50", "optimizer.momentum=0.0", "optimizer.lr=0.001", "optimizer=sgd",
            "optimizer.batch_size=0"] in jobs  # fmt: skip
    assert all(j[0] == "epochs=50" for j in jobs)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optimizer.lr=interval(1.0,0.1)", "start < end"),
        ("optimizer.lr=tag(log, interval(0, 1))", "start > 0"),
        ("epochs=tag(int, interval(1.5, 9))", "whole-number"),
        ("optimizer=sgd,sgd", "repeat"),
    ],
)
def test_malformed_search_space_is_named(override, needle):
    with pytest.raises(SearchSpaceError, match=needle):
        _search_space.parse([override], None)


# -- up-front validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, named",
    [
        (["optimizer.lr=interval(-1,1)"], "optimizer.lr: must be > 0, got -1.0"),
        (["optimizer.momentum=interval(0,1)", "optimizer=momentum"], "optimizer.momentum: must be in [0, 1), got 1.0"),
        (["optimizer=sgd,momentm"], "optimizer=momentm"),
        (["hydra.sweeper.direction=min"], "hydra.sweeper.direction: 'min' is not one of"),
        (["optimizer.lr=interval(1,0.1)"], "optimizer.lr=interval(1,0.1): an interval needs start < end"),
    ],
)  # fmt: skip
def test_bad_bound_or_choice_fails_before_any_trial(project, args, named):
    res = run_cli([*OPTUNA, "model=quadratic", "epochs=5", *args], project)
    assert res.returncode == 2, res.stderr[-2000:]
    assert named in res.stderr
    assert "sweep not started" in res.stderr
    assert "final_loss:" not in res.stdout  # no trial ran (each prints its summary)
    assert not (project / "mlruns" / "mlflow.db").exists() or _no_runs(project)


def _no_runs(project: Path) -> bool:
    from conftest import mlflow_runs

    return mlflow_runs(project) == []


# -- failed trials ---------------------------------------------------------------------


def test_failed_trials_are_told_to_optuna_as_failed(project):
    # x² + 4x by gradient descent diverges for lr > 1: part of this range fails.
    res = run_cli(
        [
            *OPTUNA,
            "hydra.sweeper.n_trials=8",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=3",
            "model=quadratic",
            "epochs=200",
            "optimizer.lr=interval(0.05,3.0)",
        ],
        project,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    client, parent, children = _store(project)
    trials = _trials(client, parent)
    assert len(trials) == 8 == len(children)
    failed = [t for t in trials if t["state"] == "FAIL"]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    assert failed and done, [t["state"] for t in trials]
    assert all(float(t["params_optimizer.lr"]) > 1 for t in failed)
    assert all(float(t["params_optimizer.lr"]) < 1 for t in done)
    assert all("DivergedError" in t["user_attrs_error"] for t in failed)
    assert all(t["value"] == "" for t in failed)  # Optuna got no value from them
    # The same trials are the FAILED children, marked diverged, under the parent.
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    for t in failed:
        child = by_lr[repr(float(t["params_optimizer.lr"]))]
        assert child.info.status == "FAILED" and child.data.tags["diverged"] == "true"
    assert parent.data.tags["optuna_failed_trials"] == str(len(failed))
    assert parent.data.tags["failed_jobs"] == str(len(failed))
    # Diverging trials are part of a search: the sweep itself finished.
    assert parent.info.status == "FINISHED"
    best = min(done, key=lambda t: float(t["value"]))
    assert parent.data.params["best.optimizer.lr"] == best["params_optimizer.lr"]


def test_a_search_where_every_trial_fails_stops_with_one_message(project):
    res = run_cli(
        [*OPTUNA, "hydra.sweeper.n_trials=3", "model=quadratic", "epochs=200",
         "optimizer.lr=interval(2.0,3.0)"],
        project,
    )  # fmt: skip
    assert res.returncode == 1
    assert "gradtrack: error: Optuna search stopped: 3 of 3 trials failed" in res.stderr
    assert "Traceback" not in res.stderr
    client, parent, children = _store(project)
    assert parent.info.status == "FAILED"  # ended, not left RUNNING
    assert [c.info.status for c in children] == ["FAILED"] * 3
    # What was tried is still on the parent.
    assert [t["state"] for t in _trials(client, parent)] == ["FAIL"] * 3
    assert parent.data.tags["optuna_failed_trials"] == "3"


@pytest.mark.slow
def test_maximize_picks_the_highest_value_on_the_parent(project):
    res = run_cli(
        [*OPTUNA, "hydra.sweeper.n_trials=4", "hydra.sweeper.direction=maximize",
         "hydra.sweeper.sampler.seed=0", "model=quadratic", "epochs=5",
         "optimizer.lr=interval(0.01,0.4)"],
        project,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    _, parent, children = _store(project)
    worst = max(children, key=lambda c: c.data.metrics["final_loss"])
    assert parent.data.tags["best_run_id"] == worst.info.run_id
    assert parent.data.tags["optuna_best_run_id"] == worst.info.run_id
    assert parent.data.tags["optuna_direction"] == "maximize"


# -- the search itself -----------------------------------------------------------------


def _search(project: Path, root: str, seed: int):
    res = run_cli(
        [
            *OPTUNA,
            "hydra.sweeper.n_trials=20",
            f"hydra.sweeper.sampler.seed={seed}",
            *FIT_LINEAR,
            f"tracking.root={root}",
            "optimizer.lr=interval(0.01,1.0)",
            "optimizer.momentum=interval(0.0,0.9)",
        ],
        project,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return _store(project, root)


@pytest.mark.slow
def test_search_reaches_the_least_squares_optimum_and_reruns_identically(project):
    client, parent, children = _search(project, "store_a", seed=7)
    assert len(children) == 20
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_trials"] == "20"
    # Every trial ran its own sampled values, inside the search space.
    points = {
        (c.data.params["optimizer.lr"], c.data.params["optimizer.momentum"]) for c in children
    }
    assert len(points) == 20
    assert all(0.01 <= float(lr) <= 1.0 and 0 <= float(m) <= 0.9 for lr, m in points)

    finished = [c for c in children if c.info.status == "FINISHED"]
    best_loss = min(c.data.metrics["final_loss"] for c in finished)
    optimum = finished[0].data.metrics["baseline/loss"]  # scikit-learn's least squares
    assert math.isfinite(best_loss)
    assert abs(best_loss - optimum) <= 1e-6 * optimum, (best_loss, optimum)

    # The parent holds the best trial's params, pointing at its child run.
    best_child = client.get_run(parent.data.tags["optuna_best_run_id"])
    assert best_child.data.metrics["final_loss"] == best_loss
    assert parent.data.metrics["optuna/best_value"] == best_loss
    for key in ("optimizer.lr", "optimizer.momentum"):
        assert parent.data.params[f"best.{key}"] == best_child.data.params[key]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optuna_history.png", "optuna_importance.png", "optuna_trials.csv"} <= arts
    for png in ("optuna_history.png", "optuna_importance.png"):
        head = Path(client.download_artifacts(parent.info.run_id, png)).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n"

    # Same seed, fresh store: the same trials in the same order, the same best.
    client_b, parent_b, _ = _search(project, "store_b", seed=7)
    params = [{k: v for k, v in t.items() if k.startswith("params_") or k in ("number", "state", "value")}
              for t in _trials(client, parent)]  # fmt: skip
    params_b = [{k: v for k, v in t.items() if k.startswith("params_") or k in ("number", "state", "value")}
                for t in _trials(client_b, parent_b)]  # fmt: skip
    assert params == params_b
    assert parent_b.data.tags["optuna_best_trial"] == parent.data.tags["optuna_best_trial"]
    assert parent_b.data.params == parent.data.params


@pytest.mark.slow
def test_joblib_runs_trials_in_parallel_batches(project):
    res = run_cli(
        [*OPTUNA, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=4",
         "hydra.sweeper.sampler.seed=0", "model=quadratic", "epochs=50",
         "optimizer.lr=interval(0.01,0.4)", "optimizer=sgd,adam"],
        project,
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batches of 2" in res.stdout + res.stderr  # n_jobs follows the launcher
    client, parent, children = _store(project)
    assert parent.data.tags["launcher"].endswith("JoblibLauncher")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["overrides"] for c in children}) == 4
    assert parent.info.status == "FINISHED"


def test_a_plain_run_does_not_import_optuna(project):
    # Hydra's plugin scan imports the sweeper's public modules on every run; Optuna
    # itself must wait until a sweep uses hydra/sweeper=optuna.
    code = (
        "import sys\n"
        "from gradtrack.cli import main\n"
        "sys.argv = ['gradtrack', 'model=quadratic', 'epochs=2', 'tracking.enabled=false']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('OPTUNA', 'optuna' in sys.modules,"
        " 'hydra_plugins.gradtrack_optuna_sweeper.config' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert "OPTUNA False True" in out.stdout, out.stdout + out.stderr
