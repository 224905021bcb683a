"""The model registry: a new model is one module plus one YAML file.

The toy model below lives in a temporary module and a temporary conf/ folder; no
gradtrack file knows about it, yet the config checks, every backend, the run and its
metrics take it, because they all ask the registry and the model itself.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from conftest import compose

TOY_MODULE = '''
import numpy as np

from gradtrack.models import register
from gradtrack.models.base import Summary


@register
class Slope:
    """y ≈ a·x on the first feature, mean squared error."""

    name = "toy_slope"
    kind = "regression"
    uses_data = True

    def init_params(self, n_features, spec, rng):
        return {"a": np.zeros(())}

    def loss(self, ops, params, X, y):
        r = X[:, 0] * params["a"] - y
        return ops.mean(r * r)

    def loss_and_grad(self, params, X, y):
        r = X[:, 0] * params["a"] - y
        return np.mean(r * r), {"a": np.mean(2 * r * X[:, 0])}

    def summarise(self, params, values, ds):
        return Summary({"slope": float(params["a"])})
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Register the toy model (registry restored afterwards); its conf/ folder."""
    from gradtrack import models

    models.model_names()  # the built-in models first, so the copy holds them
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    (tmp_path / "toy_gt_model.py").write_text(TOY_MODULE)
    conf = tmp_path / "toy_conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "toy_slope.yaml").write_text("name: toy_slope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toy_gt_model")  # its @register runs
    yield conf
    sys.modules.pop("toy_gt_model", None)


def _toy_cfg(project, conf, *overrides):
    return compose(
        f"hydra.searchpath=[file://{conf}]",
        "model=toy_slope",
        "dataset=auto_mpg",
        "dataset.features=[weight]",
        "dataset.standardize=true",
        "tracking=none",
        "epochs=200",
        "optimizer.lr=0.1",
        "backend.dtype=float64",
        f"paths.root={project}",
        *overrides,
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_registered_model_trains_through_compose_and_run(project, toy, backend):
    from gradtrack.models import model_names
    from gradtrack.train import run

    assert "toy_slope" in model_names()
    res = run(_toy_cfg(project, toy, f"backend={backend}"))
    assert res.losses[-1] < res.losses[0]
    # Its own metric, from its own summarise; no coefficients, so no baseline.
    assert res.metrics["slope"] == pytest.approx(float(res.params["a"]), rel=1e-12)
    assert res.coef_ is None and "baseline/pass" not in res.metrics
    # The gradient check compares its hand-written gradient with the backend's.
    assert res.metrics["gradcheck/pass"] == 1.0
    # Standardized weight against mpg: a clearly negative slope.
    assert res.metrics["slope"] < -1


def test_the_config_checks_come_from_the_models_kind(project, toy):
    from gradtrack.config import validate
    from gradtrack.errors import ConfigError

    with pytest.raises(ConfigError, match="toy_slope needs a regression dataset but pima"):
        validate(_toy_cfg(project, toy, "dataset=pima", "dataset.features=[]"))
    with pytest.raises(ConfigError, match="model=toy_slope dataset=none: toy_slope trains on"):
        validate(_toy_cfg(project, toy, "dataset=none", "dataset.features=[]"))


def test_every_builtin_model_declares_a_kind_the_config_uses():
    from gradtrack.config import validate
    from gradtrack.errors import ConfigError
    from gradtrack.models import model_class, model_names

    assert model_names() == ("fence", "linear", "logistic", "quadratic", "tanh_net")
    kinds = {n: model_class(n).kind for n in model_names()}
    assert kinds == {
        "fence": "scalar",
        "linear": "regression",
        "logistic": "classification",
        "quadratic": "scalar",
        "tanh_net": "regression",
    }
    with pytest.raises(ConfigError, match="model.name: 'nope' is not one of fence, linear"):
        validate(compose("model.name=nope"))


def test_register_refuses_a_class_without_a_valid_kind_or_a_second_name():
    from gradtrack.models import register
    from gradtrack.models.linear import Linear

    class NoKind:
        name = "no_kind"
        kind = "ranking"

    with pytest.raises(ValueError, match="kind 'ranking' is not one of scalar"):
        register(NoKind)

    class Impostor(Linear):
        pass

    with pytest.raises(ValueError, match="'linear' is registered twice"):
        register(Impostor)


def test_logistic_summary_uses_the_one_log_loss_and_class_rule():
    """The run's accuracy and baseline loss come from the model (z > 0, log_loss)."""
    from gradtrack.data.load import Dataset
    from gradtrack.models import get_problem

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0.0, 0.0, 0.0, 1.0])
    ds = Dataset("t", X=X, y=y, X_raw=X, y_raw=y, feature_names=["x"], target="t")
    s = get_problem("logistic").summarise({"w": np.array([1.0]), "b": np.array(-1.5)}, None, ds)
    assert s.metrics == {"accuracy": 0.75}  # z = -1.5, -0.5, 0.5, 1.5
    z = X[:, 0] - 1.5
    assert s.raw_loss == pytest.approx(np.mean(np.log1p(np.exp(z)) - y * z), rel=1e-15)
    np.testing.assert_array_equal(s.coef, [1.0])
    assert s.intercept == -1.5


def test_linear_summary_reports_r2_in_original_units():
    from gradtrack.data.load import Dataset
    from gradtrack.models import get_problem

    X_raw = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = 2 * X_raw[:, 0] + 1
    mean, scale = X_raw.mean(axis=0), X_raw.std(axis=0)
    ds = Dataset(
        "t",
        X=(X_raw - mean) / scale,
        y=y,
        X_raw=X_raw,
        y_raw=y,
        mean=mean,
        scale=scale,
        feature_names=["x"],
        target="t",
    )
    # The exact fit on standardized features: w = 2σ, b = 2μ + 1.
    params = {"w": 2 * scale, "b": np.asarray(2 * mean[0] + 1)}
    s = get_problem("linear").summarise(params, None, ds)
    assert s.metrics["r2"] == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(s.coef, [2.0], rtol=1e-15)
    assert s.intercept == pytest.approx(1.0, abs=1e-14)
    assert s.raw_loss == pytest.approx(0.0, abs=1e-28)


def test_fence_refuses_a_non_positive_start_through_its_own_check():
    from gradtrack.config import validate
    from gradtrack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.x0: the fence problem .* got -1.0"):
        validate(compose("+experiment=seed_fence", "model.x0=-1"))
