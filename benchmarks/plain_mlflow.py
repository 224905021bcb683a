"""What a user would write instead of gradtrack for `+experiment=fit_linear`: the reference.

    python benchmarks/plain_mlflow.py DATA_CSV STORE_DIR

mpg on all seven Auto MPG features, standardized, float64; 400 full-batch heavy-ball
momentum steps (lr 0.3, mu 0.7) in numpy. Logged to a SQLite MLflow store: params,
the loss history (one log_batch), the dataset (mlflow.data.from_pandas), a loss-curve
PNG (mlflow.log_figure) and a small pyfunc LoggedModel with a typed signature.
No gradient check and no scikit-learn baseline: gradtrack does more than this.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402


class Linear(mlflow.pyfunc.PythonModel):
    def __init__(self, features, w, b):
        self.features, self.w, self.b = features, w, b

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return model_input[self.features].to_numpy(dtype=float) @ self.w + self.b


def main(data: str, store: str) -> None:
    df = pd.read_csv(data).dropna()
    features = [c for c in df.columns if c != "mpg"]
    X = df[features].to_numpy(dtype=float)
    y = df["mpg"].to_numpy(dtype=float)
    mean, std = X.mean(axis=0), X.std(axis=0)
    Z = (X - mean) / std
    w, b = np.zeros(Z.shape[1]), 0.0
    vw, vb = np.zeros_like(w), 0.0
    lr, mu, steps = 0.3, 0.7, 400
    losses = np.empty(steps)
    for i in range(steps):
        r = Z @ w + b - y
        losses[i] = r @ r / len(y)
        gw, gb = 2 * Z.T @ r / len(y), 2 * r.mean()
        vw = mu * vw + gw
        vb = mu * vb + gb
        w -= lr * vw
        b -= lr * vb
    coef, intercept = w / std, b - float(np.sum(w * mean / std))

    mlflow.set_tracking_uri(f"sqlite:///{Path(store).resolve() / 'mlflow.db'}")
    mlflow.set_experiment("plain")
    with mlflow.start_run() as run:
        mlflow.log_params({"lr": lr, "momentum": mu, "steps": steps, "features": len(features)})
        ts = int(time.time() * 1000)
        mlflow.tracking.MlflowClient().log_batch(
            run.info.run_id,
            metrics=[Metric("loss", float(v), ts, i) for i, v in enumerate(losses)],
        )
        mlflow.log_metric("final_loss", float(losses[-1]))
        mlflow.log_input(mlflow.data.from_pandas(df, source=data, targets="mpg"), "training")
        fig, ax = plt.subplots()
        ax.semilogy(losses)
        mlflow.log_figure(fig, "loss_curve.png")
        plt.close(fig)
        example = df[features].head(5).astype(float)
        model = Linear(features, coef, intercept)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            pip_requirements=["numpy", "pandas"],
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
