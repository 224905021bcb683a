"""gradtrack as an installed app: the wheel carries conf/ and runs from any directory.

The wheel is built from a copy of the project (so the checkout gets no build/ or
egg-info) with the project venv's setuptools, the way `pip install .` builds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import CONF, REPO

SOURCES = ("src", "conf", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    [whl] = out.glob("gradtrack-*.whl")
    return whl


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADTRACK_CONFIG_DIR")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_wheel_carries_conf_identical_to_the_project_conf(wheel):
    with zipfile.ZipFile(wheel) as zf:
        packaged = {
            n.removeprefix("gradtrack/conf/"): zf.read(n)
            for n in zf.namelist()
            if n.startswith("gradtrack/conf/") and not n.endswith("/")
        }
        names = zf.namelist()
    project = {p.relative_to(CONF).as_posix(): p.read_bytes() for p in CONF.rglob("*.yaml")}
    assert packaged.keys() == project.keys()
    for name, data in project.items():
        assert packaged[name] == data, f"gradtrack/conf/{name} differs from conf/{name}"
    # The Optuna sweeper ships in the hydra_plugins namespace, with no __init__.py of
    # that namespace's own (which would hide every other installed Hydra plugin).
    assert "hydra_plugins/gradtrack_optuna_sweeper/optuna_sweeper.py" in names
    assert "hydra_plugins/__init__.py" not in names


@pytest.mark.slow
def test_installed_wheel_runs_an_experiment_from_an_empty_directory(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    # Dependencies come from this (the project's) environment: its site-packages
    # is added after the fresh venv's own, so the wheel's gradtrack comes first.
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = _clean_env()
    where = subprocess.run(
        [
            py,
            "-c",
            "import gradtrack, gradtrack.cli as c; print(gradtrack.__file__); print(c.CONF_DIR)",
        ],
        cwd=empty,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(env_dir), module
    assert Path(conf) == Path(module).parent / "conf"

    script = env_dir / "bin" / "gradtrack"
    out = subprocess.run(
        [script, "+experiment=seed_quadratic_tf", "tracking.enabled=false"],
        cwd=empty,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    xs = [line.split()[-1] for line in out.stdout.splitlines() if line.startswith("step")]
    assert xs[:3] == ["-0.4", "-0.72", "-0.9760001"]
    assert not (empty / "mlruns").exists()

    version = subprocess.run(
        [script, "--version"], cwd=empty, capture_output=True, text=True, env=env, timeout=120
    )
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version.stdout.startswith(f"gradtrack {expected} ("), version.stdout + version.stderr
    # The installed app finds its Optuna sweeper among the installed plugins.
    bad = subprocess.run(
        [script, "-m", "hydra/sweeper=optunaa"],
        cwd=empty,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "optuna (gradtrack)" in bad.stderr, bad.stderr
