"""The learned linear/logistic model as an MLflow pyfunc model.

A small PythonModel holding the coefficients (in original feature units) loads in
milliseconds and needs only numpy and pandas, unlike a pickled estimator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

try:
    import mlflow.pyfunc

    class LinearPyfunc(mlflow.pyfunc.PythonModel):
        """Predicts Xw + b (linear) or σ(Xw + b) (logistic, probability of class 1)."""

        def __init__(self, features: list[str], coef: list[float], intercept: float, kind: str):
            self.features = list(features)
            self.coef = np.asarray(coef, dtype=np.float64)
            self.intercept = float(intercept)
            self.kind = kind

        def predict(self, context, model_input, params=None):
            X = pd.DataFrame(model_input)[self.features].to_numpy(dtype=np.float64)
            z = X @ self.coef + self.intercept
            if self.kind == "logistic":
                return np.exp(-np.logaddexp(0.0, -z))
            return z
except ImportError:  # pragma: no cover - mlflow is a hard dependency
    LinearPyfunc = None


def save_linear_model(path: Path, features, coef, intercept, kind: str, example: pd.DataFrame):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    model = LinearPyfunc(features, list(map(float, coef)), float(intercept), kind)
    preds = model.predict(None, example)
    # Inputs are any numeric dtype: MLflow refuses int64 for a "double" column, yet
    # pd.read_csv of the training file gives int64 columns (pima's counts).
    # predict() converts every column to float64 itself.
    inputs = Schema([ColSpec(AnyType(), name) for name in features])
    outputs = infer_signature(example, preds).outputs
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=model,
        signature=ModelSignature(inputs=inputs, outputs=outputs),
        input_example=example,
        pip_requirements=["numpy", "pandas"],
    )
