"""Models-from-code file for gradtrack's linear/logistic models (copied into each model).

MLflow executes this file when the model loads; the coefficients come from the
MLmodel's ``config``. It needs only numpy, pandas and mlflow: no gradtrack, no pickle.
"""

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class LinearModel(PythonModel):
    """Xw + b (linear: the prediction) or σ(Xw + b) (logistic: P(class 1))."""

    def load_context(self, context):
        config = context.model_config
        self.features = list(config["features"])
        self.coef = np.asarray(config["coef"], dtype=np.float64)
        self.intercept = float(config["intercept"])
        self.kind = config["kind"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        X = pd.DataFrame(model_input)[self.features].to_numpy(dtype=np.float64)
        z = X @ self.coef + self.intercept
        if self.kind == "logistic":
            return np.exp(-np.logaddexp(0.0, -z))
        return z


mlflow.models.set_model(LinearModel())
