"""Build hook: the wheel carries conf/ as gradtrack/conf (package data).

conf/ at the top level stays the one source of the configs; this copies it into the
build folder at build time, so no second copy is committed. Everything else about
the package is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's conf/ directly
            return
        if not (CONF / "config.yaml").is_file():
            raise SystemExit(
                f"gradtrack build: {CONF}/config.yaml is missing; build from the project root"
            )
        target = Path(self.build_lib) / "gradtrack" / "conf"
        shutil.rmtree(target, ignore_errors=True)  # files deleted from conf/ must go too
        shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConf})
