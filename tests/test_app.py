"""The Hydra app end to end: composition, validation, data, runs in MLflow."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose, mlflow_runs, run_cli

SOURCES_SHA = {
    "regression.csv": "0e2f10ade22365fcf74bccf7866d14e20c54a61e4b281d35839cd7ca99862d82",
    "classification.csv": "474352b32e0522635ae5506b802de5aa005a672b805afa14bf542dabff4547a9",
}


def test_prepared_csvs_match_the_reference_layout_byte_for_byte(prepared_data):
    for name, sha in SOURCES_SHA.items():
        assert hashlib.sha256((prepared_data / name).read_bytes()).hexdigest() == sha
    nn = (prepared_data / "nn_data.csv").read_text().splitlines()
    assert nn[0] == "x,y" and len(nn) == 16


def test_nn_data_is_deterministic(tmp_path, prepared_data):
    from gradtrack.data.prepare import make_nn_data

    make_nn_data(tmp_path / "nn.csv")
    assert (tmp_path / "nn.csv").read_bytes() == (prepared_data / "nn_data.csv").read_bytes()


def _loaded(project, args: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a real ``gradtrack <args>`` run imported (in a fresh process)."""
    code = (
        "import sys\n"
        "from gradtrack.cli import main\n"
        f"sys.argv = ['gradtrack', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {modules!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("LOADED ")), None)
    assert line is not None, out.stdout + out.stderr
    return ast.literal_eval(line.removeprefix("LOADED "))


def test_numpy_backend_never_imports_torch_or_tensorflow(project):
    args = ["+experiment=seed_linear", "backend=numpy"]
    assert _loaded(project, args, ("torch", "tensorflow")) == []


def test_scalar_run_imports_neither_sklearn_nor_frameworks(project):
    args = ["+experiment=seed_fence", "backend=numpy"]
    assert _loaded(project, args, ("torch", "tensorflow", "sklearn")) == []


def test_untracked_scalar_run_imports_no_table_plotting_or_tracking_library(project):
    """A scalar problem has no table: pandas (~0.2 s) is not imported, nor is anything
    that only tracking or a dataset needs."""
    args = ["+experiment=seed_fence", "backend=numpy", "tracking.enabled=false"]
    heavy = ("torch", "tensorflow", "sklearn", "pandas", "matplotlib", "mlflow")
    assert _loaded(project, args, heavy) == []
    # The check itself sees an import: a tracked run does load mlflow.
    assert _loaded(project, args[:2], ("mlflow",)) == ["mlflow"]


def test_seed_quadratic_tf_on_numpy_prints_the_notebook_sequence(project):
    out = run_cli(["+experiment=seed_quadratic_tf", "backend=numpy"], project)
    assert out.returncode == 0, out.stderr
    xs = [line.split()[-1] for line in out.stdout.splitlines() if line.startswith("step")]
    assert xs[:7] == [
        "-0.4",
        "-0.72",
        "-0.9760001",
        "-1.1808001",
        "-1.34464",
        "-1.4757121",
        "-1.5805696",
    ]
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["experiment"] == "seed_quadratic_tf"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["model=linear", "dataset=none"], "model=linear dataset=none"),
        (["optimizer.lr=-1"], "optimizer.lr: must be > 0"),
        (["epochs=0"], "epochs: must be >= 1"),
        (["model=fence", "model.x0=-1"], "model.x0"),
        (["model=logistic", "dataset=auto_mpg"], "needs a classification dataset"),
        (["model=mpl"], "Available options in 'model'"),
        (["optimizer.lrr=0.1"], "lrr"),
        (["optimizer.lr=abc"], "optimizer.lr"),
        (["tracking=server"], "tracking.uri: a required value is missing"),
    ],
)
def test_bad_config_fails_fast_and_creates_no_run(project, args, needle):
    out = run_cli(args, project)
    assert out.returncode != 0
    assert needle in out.stderr + out.stdout
    assert mlflow_runs(project) == []
    assert not (project / "mlruns").exists()


def test_every_model_and_backend_composes_and_validates():
    from gradtrack.config import validate

    for exp in ("seed_backprop", "seed_linear", "seed_logistic", "seed_fence"):
        for backend in ("numpy", "torch", "tensorflow"):
            cfg = compose(f"+experiment={exp}", f"backend={backend}")
            validate(cfg)
            assert cfg.backend.name == backend


def _gradient_descent_trace(X: np.ndarray, y: np.ndarray, lr: float, epochs: int, seed: int):
    """seed_linear written out by hand: full-batch gradient descent on mean((Xw + b - y)²)
    from the normal(0, 1) draw every backend starts from; the loss before each epoch."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(X.shape[1])
    b = rng.standard_normal()
    losses = []
    for _ in range(epochs):
        r = X @ w + b - y
        losses.append(np.mean(r**2))
        w, b = w - lr * 2 * X.T @ r / len(y), b - lr * 2 * np.mean(r)
    return np.array(losses)


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow"])
def test_same_experiment_same_trace_on_every_backend(project, backend):
    """Every backend against one independent reference: the loop written out above."""
    from gradtrack.build import prepare
    from gradtrack.train import run

    cfg = compose(
        "+experiment=seed_linear",
        f"backend={backend}",
        "tracking.enabled=false",
        f"paths.root={project}",
        "backend.dtype=float64",
    )
    _, ds = prepare(cfg)
    ref = _gradient_descent_trace(ds.X, ds.y, cfg.optimizer.lr, cfg.epochs, cfg.seed)
    assert ref[-1] < ref[0] / 4  # the reference itself trains
    np.testing.assert_allclose(run(cfg).losses, ref, rtol=1e-9)


def test_scaled_tanh_net_fits_and_loss_falls_tenfold(project):
    from gradtrack.train import run

    res = run(
        compose(
            "+experiment=seed_backprop_scaled", "tracking.enabled=false", f"paths.root={project}"
        )
    )
    assert res.losses[0] / res.losses[-1] >= 10


def test_unscaled_tanh_net_cannot_fit(project):
    from gradtrack.train import run

    res = run(
        compose("+experiment=seed_backprop", "tracking.enabled=false", f"paths.root={project}")
    )
    # |tanh| < 1 against targets up to ±110: the mean loss stays in the thousands.
    assert res.losses[-1] > 1000


def test_run_logs_params_per_step_losses_and_final_metrics(project):
    from mlflow.tracking import MlflowClient

    out = run_cli(["+experiment=seed_linear", "backend=numpy"], project)
    assert out.returncode == 0, out.stderr
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.01"
    assert run.data.params["dataset.features"] == "[cylinders]"
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    hist = client.get_metric_history(run.info.run_id, "Training/loss")
    assert [m.step for m in hist] == list(range(100))
    assert "final_loss" in run.data.metrics and "r2" in run.data.metrics
    assert run.info.run_name == "seed_linear · numpy"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "loss_curve.png", "coefficients.csv"} <= arts
    # The model is an MLflow 3 LoggedModel of the run (its files live with the model).
    [lm] = client.search_logged_models([run.info.experiment_id])
    assert lm.source_run_id == run.info.run_id


@pytest.mark.parametrize(
    "args", [["--help"], ["+experiment=seed_quadratic_torch", "backend=numpy", "tracking=none"]]
)
def test_python_dash_m_and_console_script_agree(project, args):
    """``python -m gradtrack`` and the installed ``gradtrack`` script print the same."""
    script = Path(sys.executable).parent / "gradtrack"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    by_script = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=120, cwd=project, env=env
    )
    by_module = run_cli(args, project)
    assert by_script.returncode == by_module.returncode == 0, by_script.stderr + by_module.stderr

    def untimed(out: str) -> list[str]:  # the speed line differs from run to run
        return [ln for ln in out.splitlines() if "_per_second" not in ln]

    assert untimed(by_module.stdout) == untimed(by_script.stdout)
    assert by_module.stdout.strip()  # not two empty outputs
    if args != ["--help"]:
        assert "step   10  loss" in by_module.stdout  # the notebook's trace, printed


# -- the app introduces itself ---------------------------------------------------------


def test_help_describes_gradtrack_with_examples(project):
    out = run_cli(["--help"], project)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("gradtrack: gradient-based training experiments")
    assert "powered by Hydra" not in text and "cli" not in text.split()
    assert "== Examples ==" in text and "gradtrack +experiment=seed_quadratic_tf" in text
    assert "hydra/sweeper=optuna" in text
    assert "experiment: fit_linear" in text  # the groups, filled in by Hydra's template


def test_version_is_gradtrack_s_own(project):
    from importlib.metadata import version

    out = run_cli(["--version"], project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"gradtrack {version('gradtrack')} (Hydra ")


def test_job_is_named_gradtrack(project):
    out = run_cli(["model=quadratic", "epochs=3", "tracking.enabled=false"], project)
    assert out.returncode == 0, out.stderr
    [log] = (project / "outputs").glob("*/*/gradtrack.log")
    config = (log.parent / ".hydra" / "hydra.yaml").read_text()
    assert "    name: gradtrack\n" in config


def test_sweeper_and_launcher_hints_list_installed_plugins(project):
    out = run_cli(["-m", "hydra/sweeper=optunaa"], project)
    assert out.returncode == 2
    assert "basic (hydra), optuna (gradtrack). Did you mean 'optuna'?" in out.stderr
    out = run_cli(["-m", "hydra/launcher=jobblib"], project)
    assert "joblib (joblib_launcher)" in out.stderr and "ray_cluster (conf/)" in out.stderr


# -- which conf/ is used -------------------------------------------------------------


def _project_conf(folder: Path) -> Path:
    conf = folder / "conf"
    conf.mkdir(parents=True)
    (conf / "config.yaml").write_text((REPO / "conf" / "config.yaml").read_text())
    return conf


def test_config_dir_precedence(tmp_path, monkeypatch):
    from gradtrack import cli

    monkeypatch.delenv("GRADTRACK_CONFIG_DIR", raising=False)
    # Outside any project, a source checkout uses its own conf/.
    assert cli.find_config_dir(tmp_path) == str(REPO / "conf")
    # Inside a gradtrack project (here or below it), that project's conf/ wins ...
    mine = _project_conf(tmp_path / "proj")
    (tmp_path / "proj" / "src").mkdir()
    assert cli.find_config_dir(tmp_path / "proj") == str(mine)
    assert cli.find_config_dir(tmp_path / "proj" / "src") == str(mine)
    # ... but another Hydra app's conf/ is not gradtrack's.
    other = tmp_path / "other" / "conf"
    other.mkdir(parents=True)
    (other / "config.yaml").write_text("defaults:\n  - db: mysql\n")
    assert cli.find_config_dir(tmp_path / "other") == str(REPO / "conf")
    # The environment variable beats everything.
    monkeypatch.setenv("GRADTRACK_CONFIG_DIR", str(other))
    assert cli.find_config_dir(tmp_path / "proj") == str(other)


def test_project_conf_is_used_from_inside_the_project(project):
    conf = _project_conf(project)
    (conf / "model").mkdir()
    (conf / "model" / "quadratic.yaml").write_text("name: quadratic\nx0: 5.0\n")
    for group in ("dataset", "backend", "optimizer", "tracking"):
        (conf / group).mkdir()
        for f in (REPO / "conf" / group).glob("*.yaml"):
            (conf / group / f.name).write_text(f.read_text())
    (conf / "hydra" / "help").mkdir(parents=True)
    (conf / "hydra" / "help" / "gradtrack.yaml").write_text(
        (REPO / "conf" / "hydra" / "help" / "gradtrack.yaml").read_text()
    )
    out = run_cli(["epochs=1", "tracking.enabled=false", "optimizer.lr=0.1"], project)
    assert out.returncode == 0, out.stderr
    # x0 = 5 from the project's own model/quadratic.yaml: 5 - 0.1 * (2*5 + 4) = 3.6
    assert [ln.split()[-1] for ln in out.stdout.splitlines() if ln.startswith("step")] == ["3.6"]


def test_config_dir_env_pointing_nowhere_is_an_input_error(project):
    out = run_cli(["epochs=1"], project, env={"GRADTRACK_CONFIG_DIR": str(project / "nope")})
    assert out.returncode == 2
    assert "GRADTRACK_CONFIG_DIR=" in out.stderr and "no config.yaml there" in out.stderr


def test_a_long_run_without_a_terminal_prints_a_progress_line_every_30_seconds(monkeypatch, capsys):
    """A batch job's log (SLURM, nohup, CI) has no terminal for the bar: a plain line
    every LINE_SECONDS says how far the run is, and a short run prints none."""
    from gradtrack import progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with progress.Progress(10_000_000, label="lr=0.1") as bar:  # capsys: not a terminal
        for _ in range(12):  # 12 chunks of 100,000 steps, 10 s each
            clock[0] += 10.0
            bar.update(100_000, 10.85)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "gradtrack: job lr=0.1: epoch 300,000 of 10,000,000 (3%), loss 10.85, "
        "10,000 epochs/s, about 16 min 10 s left",
        "gradtrack: job lr=0.1: epoch 600,000 of 10,000,000 (6%), loss 10.85, "
        "10,000 epochs/s, about 15 min 40 s left",
        "gradtrack: job lr=0.1: epoch 900,000 of 10,000,000 (9%), loss 10.85, "
        "10,000 epochs/s, about 15 min 10 s left",
        "gradtrack: job lr=0.1: epoch 1,200,000 of 10,000,000 (12%), loss 10.85, "
        "10,000 epochs/s, about 14 min 40 s left",
    ]
    with progress.Progress(1000, enabled=True) as bar:  # 20 s in all: no line
        clock[0] += 20.0
        bar.update(1000, 1.0)
    with progress.Progress(10_000_000, enabled=False) as bar:  # progress_min_epochs
        clock[0] += 60.0
        bar.update(100_000, 1.0)
    assert capsys.readouterr().err == ""
