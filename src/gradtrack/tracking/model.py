"""The learned linear/logistic model as an MLflow 3 model directory, written directly.

``mlflow.pyfunc.save_model`` costs ~0.2 s per call (environment capture, a trial
load) and warns about input examples; a run can't afford that. This writes the same
format by hand: MLmodel (pyfunc flavor, models-from-code loader), the code file
``linear_pyfunc.py`` and pinned requirements. Nothing is pickled or inferred.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

CODE_FILE = Path(__file__).with_name("linear_pyfunc.py")
REQUIREMENTS = ("mlflow", "numpy", "pandas")
OUTPUT_NAME = {"linear": "prediction", "logistic": "probability"}


@dataclass(frozen=True)
class LinearModelSpec:
    """What the model needs: feature names, coefficients (original units), kind."""

    features: list[str]
    coef: list[float]
    intercept: float
    kind: str  # linear | logistic

    @classmethod
    def of(cls, features, coef, intercept, kind: str) -> LinearModelSpec:
        if kind not in OUTPUT_NAME:
            raise ValueError(f"model kind {kind!r}: expected one of {', '.join(OUTPUT_NAME)}")
        return cls(
            list(features), np.asarray(coef, dtype=np.float64).tolist(), float(intercept), kind
        )


@functools.cache
def _pinned() -> tuple[str, ...]:
    # Installed versions do not change while a process runs: read once (a sweep's jobs
    # each log a model; every lookup scans the installed distributions).
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # pragma: no cover - all three are dependencies
            out.append(name)
    return tuple(out)


def requirements() -> list[str]:
    """Pinned pip requirements of the model, read from the installed packages."""
    return list(_pinned())


def write_model_dir(
    path: Path,
    spec: LinearModelSpec,
    model_id: str | None = None,
    run_id: str | None = None,
    artifact_location: str | None = None,
) -> None:
    """Write an MLflow pyfunc model (MLmodel, code, environment files) into ``path``."""
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import ColSpec, Schema
    from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv

    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CODE_FILE, path / CODE_FILE.name)
    reqs = requirements()
    (path / "requirements.txt").write_text("\n".join(reqs) + "\n")
    _PythonEnv(dependencies=["-r requirements.txt"]).to_yaml(path / "python_env.yaml")
    import yaml

    conda = _mlflow_conda_env(additional_pip_deps=reqs, install_mlflow=False)
    (path / "conda.yaml").write_text(yaml.safe_dump(conda, default_flow_style=False))

    signature = ModelSignature(
        inputs=Schema([ColSpec("double", f) for f in spec.features]),
        outputs=Schema([ColSpec("double", OUTPUT_NAME[spec.kind])]),
    )
    model = Model(
        artifact_path=artifact_location,
        run_id=run_id,
        model_id=model_id,
        model_uuid=model_id,
        signature=signature,
        utc_time_created=str(datetime.now(UTC).replace(tzinfo=None)),
    )
    mlflow.pyfunc.add_to_model(
        model,
        loader_module="mlflow.pyfunc.loaders.code_model",
        conda_env="conda.yaml",
        python_env="python_env.yaml",
        model_config={
            "features": spec.features,
            "coef": spec.coef,
            "intercept": spec.intercept,
            "kind": spec.kind,
        },
        model_code_path=CODE_FILE.name,
    )
    model.save(str(path / "MLmodel"))
