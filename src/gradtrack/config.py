"""The configuration schema, its registration with Hydra, and cross-field checks.

Hydra merges every YAML in ``conf/`` into these dataclasses, so an unknown key or a
value of the wrong type fails at composition time with Hydra's own message. What a
type cannot express (ranges, combinations) is checked by :func:`validate`, which runs
before any data is read or any MLflow run exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from gradtrack.errors import ConfigError

BACKENDS = ("numpy", "torch", "tensorflow")
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("none", "regression", "classification")


@dataclass
class DatasetConfig:
    name: str = MISSING
    # regression | classification | none: what kind of target the file holds.
    task: str = "none"
    # CSV path; relative paths resolve against the project root (paths.root).
    path: str | None = None
    # Feature columns; an empty list means every column except the target.
    features: list[str] = field(default_factory=list)
    target: str | None = None
    # Rows with a blank/NaN cell are dropped (and counted) only when this is true.
    dropna: bool = False
    # Standardize features for training; learned coefficients are reported in
    # original units either way.
    standardize: bool = False
    # Divide the target by this before training (the tanh net needs |t| < 1).
    target_scale: float = 1.0
    # Synthetic data (dataset=synthetic) only.
    n_samples: int = 0
    n_features: int = 0
    noise: float = 0.1
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # Scalar problems: the starting point x0.
    x0: float = 0.0
    # Parameter initialisation for data models: normal | zeros | constant.
    init: str = "normal"
    init_scale: float = 1.0
    init_value: float = 1.0
    # Logistic loss form: "stable" (softplus) or the notebook's log(p + tol).
    loss_form: str = "stable"
    tol: float = 1e-10


@dataclass
class BackendConfig:
    name: str = MISSING
    dtype: str = "float32"
    # TensorFlow only: run eagerly instead of compiling the loop with tf.function.
    eager: bool = False
    # torch / tensorflow: auto (the GPU when one is visible, else the CPU) | cpu | cuda.
    device: str = "auto"


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    # 0 = full batch; 1 = per-sample SGD (the notebook's tanh-net loop); k = minibatch.
    batch_size: int = 0
    shuffle: bool = False
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # Clip the global gradient norm to this value; 0 disables clipping.
    clip_norm: float = 0.0


@dataclass
class TrackingConfig:
    name: str = "local"
    enabled: bool = True
    # Explicit tracking URI (http://host:port for a server). Empty: embedded SQLite
    # at <root>/mlflow.db with artifacts under <root>.
    uri: str | None = None
    root: str = "mlruns"
    experiment: str = "gradtrack"
    run_name: str | None = None
    log_artifacts: bool = True
    log_model: bool = True
    # Per-step metrics (loss, grad_norm, x) stored per run, at most this many points
    # each: every step up to it, then thinned (log-spaced early, evenly later; first
    # and last step always). The full history is the run's history.npz artifact.
    # 0 = no limit.
    max_points: int = 1000
    # Kept points are buffered and sent once this many are waiting (and at the end).
    flush_every: int = 1000
    # Sweeps: register the best child's model under this name, alias "champion".
    register_best: str | None = None


@dataclass
class ChecksConfig:
    gradcheck: bool = True
    # Check at the initial point, then after every N-th epoch (at epochs N, 2N, ... up
    # to epochs), each logged at its step; 0 = only at the initial point.
    gradcheck_every: int = 0
    gradcheck_tol: float = 1e-7
    baseline: bool = True
    # baseline/pass: every coefficient within baseline_rtol relative or, for
    # coefficients near zero, baseline_atol absolute of scikit-learn's.
    baseline_rtol: float = 1e-6
    baseline_atol: float = 1e-9


@dataclass
class PathsConfig:
    # Project root; data/ and mlruns/ resolve against it. Empty = the working
    # directory the command was started in.
    root: str | None = None


@dataclass
class OutputConfig:
    # Write a small metrics JSON here (DVC metrics); empty = don't.
    metrics_path: str | None = None
    # Write per-step losses as CSV here (DVC plots); empty = don't.
    losses_path: str | None = None


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # The named experiment this run reproduces (conf/experiment/<name>.yaml).
    experiment_name: str = "default"
    # False for the notebook's deliberately short demonstration runs (seed_*): their
    # "not converged" note is then a calm remark, not a warning.
    expect_converged: bool = True
    # One line: what this experiment shows. Opens the MLflow run's description.
    description: str = ""
    # Number of epochs; with full-batch optimisation one epoch is one update.
    epochs: int = 100
    seed: int = 0
    # Record every this many epochs' loss in MLflow (1 = every epoch).
    log_every: int = 1
    # Show a progress bar (only ever on a terminal) for runs with at least this many epochs.
    progress_min_epochs: int = 500
    # Metric that picks the best child of a sweep (lower is better).
    sweep_metric: str = "final_loss"
    # Answer from a FINISHED run with the same fingerprint instead of training
    # (tracking/reuse.py): true, false (always train), or null = on in a sweep, off
    # for a single run.
    reuse: bool | None = None


# Config keys that never change what a run computes: where files go, how and where it
# is tracked, how often progress and metrics are reported, and labels. A key is
# plumbing when it equals one of these or starts with one ending in ".". MLflow
# params (what people compare) and the run fingerprint of resumable runs both use
# this one definition; config.yaml in the run's artifacts keeps every key.
PLUMBING = (
    "paths.",
    "tracking.",
    "output.",
    "hydra.",
    "progress_min_epochs",
    "log_every",
    "sweep_metric",
    "experiment_name",
    "description",
    "expect_converged",  # only softens the convergence note
    "reuse",  # whether a stored result may answer, not what the result is
)


def is_plumbing(key: str) -> bool:
    """True for a dotted config key (``tracking.root``) that does not affect results."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in PLUMBING)


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}}`` → ``{"optimizer.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def result_params(plain_cfg: dict[str, Any]) -> dict[str, Any]:
    """The config values that change a run's result, flattened to dotted keys.

    ``plain_cfg`` is the resolved config as plain dicts (``OmegaConf.to_container``).
    Everything :func:`is_plumbing` names is left out; key order is kept.
    """
    return {k: v for k, v in flatten_config(plain_cfg).items() if not is_plumbing(k)}


def project_root(cfg: Config) -> Path:
    """``paths.root``, or the working directory the command started in."""
    return Path(cfg.paths.root).expanduser().resolve() if cfg.paths.root else Path.cwd()


def resolve_path(root: Path, p: str | None) -> Path | None:
    """A configured path: absolute as given, relative against ``root``; empty → None."""
    if not p:
        return None
    path = Path(p).expanduser()
    return path if path.is_absolute() else root / path


def compose(overrides: list[str] | tuple[str, ...] = (), conf_dir: str | Path | None = None):
    """Compose ``conf_dir`` (default: the ``gradtrack`` command's) into a typed Config.

    The same composition the command does, for gradtrack-compare, the tests and the
    benchmarks; Hydra is imported here, not when this module is.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if conf_dir is None:
        from gradtrack.cli import CONF_DIR as conf_dir
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return to_typed(cfg)


def to_typed(cfg: Any) -> Config:
    """The composed DictConfig as a typed Config, refusing keys the schema lacks.

    Hydra's ``+key=value`` adds a key even where the schema has none, and
    ``OmegaConf.to_object`` then drops it without a word: ``+optimizer.momentun=0.5``
    trained with the default momentum under a run named "momentun=0.5".
    """
    from omegaconf import OmegaConf

    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(
            "; ".join(unknown) + ". gradtrack reads no such key, so its value would be "
            "ignored: remove it, or set an existing key without '+'."
        )
    return OmegaConf.to_object(cfg)


@functools.cache
def _field_types(schema: type) -> dict[str, Any]:
    # get_type_hints evaluates the string annotations: most of unknown_keys' time
    return typing.get_type_hints(schema)


def unknown_keys(cfg: Any, schema: type = Config, prefix: str = "") -> list[str]:
    """One line per key of ``cfg`` (a DictConfig, ``hydra`` aside) that ``schema``
    has no field for, with the nearest field's name when there is one."""
    from omegaconf import DictConfig

    hints = _field_types(schema)
    out: list[str] = []
    for key in cfg:
        name = str(key)
        if not prefix and name == "hydra":
            continue
        if name not in hints:
            near = difflib.get_close_matches(name, list(hints), n=1)
            out.append(
                f"{prefix}{name}: no such setting"
                + (f" (did you mean {prefix}{near[0]}?)" if near else "")
            )
            continue
        node = cfg._get_node(name)
        if dataclasses.is_dataclass(hints[name]) and isinstance(node, DictConfig):
            out += unknown_keys(node, hints[name], f"{prefix}{name}.")
    return out


def register_configs() -> None:
    """Register the schema so conf/config.yaml can name it in its defaults list."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def _check(errors: list[str], ok: bool, key: str, message: str) -> None:
    if not ok and not any(e.startswith(f"{key}: ") for e in errors):  # one problem a key
        errors.append(f"{key}: {message}")


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Every float setting of a config dataclass that is inf or NaN, as messages. The
    range checks below let ``optimizer.lr=inf`` through (inf > 0), and the run then
    "diverged" at its first step."""
    import dataclasses
    import math

    found = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found += _non_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            found.append(f"{prefix}{f.name}: must be a finite number, got {value}")
    return found


def _one_of(errors: list[str], key: str, value: Any, allowed: tuple[str, ...]) -> None:
    _check(
        errors,
        value in allowed,
        key,
        f"{value!r} is not one of {', '.join(allowed)}",
    )


def gpu_visible(backend: str) -> bool:
    """Whether ``backend`` (torch or tensorflow) sees a GPU; imports that framework."""
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    from gradtrack.backends import prepare_tensorflow

    prepare_tensorflow()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def validate(cfg: Config) -> None:
    """Check ranges and combinations Hydra's types cannot express.

    Collects every problem, then raises one ConfigError naming each key, so a user
    fixes the whole config in one go.
    """
    from gradtrack.models import model_class, model_names

    errors: list[str] = _non_finite(cfg)
    m, d, b, o = cfg.model, cfg.dataset, cfg.backend, cfg.optimizer
    _one_of(errors, "model.name", m.name, model_names())
    model = model_class(m.name) if m.name in model_names() else None
    _one_of(errors, "backend.name", b.name, BACKENDS)
    _one_of(errors, "backend.dtype", b.dtype, DTYPES)
    _one_of(errors, "backend.device", b.device, DEVICES)
    if b.device == "cuda" and b.name == "numpy":
        errors.append(
            "backend.device=cuda: backend=numpy runs on the CPU only; use backend=torch or "
            "backend=tensorflow for a GPU, or backend.device=auto"
        )
    elif b.device == "cuda" and b.name in ("torch", "tensorflow") and not gpu_visible(b.name):
        errors.append(
            f"backend.device=cuda: {b.name} sees no GPU on this machine; use "
            "backend.device=auto (the GPU when there is one) or backend.device=cpu"
        )
    _one_of(errors, "optimizer.name", o.name, OPTIMIZERS)
    _one_of(errors, "dataset.task", d.task, TASKS)
    _one_of(errors, "model.init", m.init, ("normal", "zeros", "constant"))
    _one_of(errors, "model.loss_form", m.loss_form, ("stable", "notebook"))

    _check(errors, o.lr > 0, "optimizer.lr", f"must be > 0, got {o.lr} (try 0.01)")
    _check(errors, cfg.epochs >= 1, "epochs", f"must be >= 1, got {cfg.epochs}")
    _check(errors, cfg.log_every >= 1, "log_every", f"must be >= 1, got {cfg.log_every}")
    _check(errors, o.batch_size >= 0, "optimizer.batch_size", f"must be >= 0, got {o.batch_size}")
    _check(
        errors, 0 <= o.momentum < 1, "optimizer.momentum", f"must be in [0, 1), got {o.momentum}"
    )
    _check(errors, 0 <= o.beta1 < 1, "optimizer.beta1", f"must be in [0, 1), got {o.beta1}")
    _check(errors, 0 <= o.beta2 < 1, "optimizer.beta2", f"must be in [0, 1), got {o.beta2}")
    _check(errors, o.eps > 0, "optimizer.eps", f"must be > 0, got {o.eps}")
    _check(errors, o.clip_norm >= 0, "optimizer.clip_norm", f"must be >= 0, got {o.clip_norm}")
    _check(errors, m.tol > 0, "model.tol", f"must be > 0, got {m.tol}")
    _check(
        errors,
        cfg.checks.gradcheck_every >= 0,
        "checks.gradcheck_every",
        f"must be >= 0 (0 = only at the initial point), got {cfg.checks.gradcheck_every}",
    )
    _check(errors, d.target_scale != 0, "dataset.target_scale", "must not be 0")
    _check(errors, cfg.tracking.flush_every >= 1, "tracking.flush_every", "must be >= 1")
    _check(
        errors,
        cfg.tracking.max_points == 0 or cfg.tracking.max_points >= 2,
        "tracking.max_points",
        f"must be 0 (no limit) or >= 2, got {cfg.tracking.max_points}",
    )
    t = cfg.tracking
    if t.name == "server" and t.enabled and (not t.uri or t.uri == "???"):
        errors.append(
            "tracking.uri: a required value is missing for tracking=server; set it, "
            "e.g. tracking.uri=http://127.0.0.1:5000"
        )
    if model is not None and hasattr(model, "config_errors"):
        errors += model.config_errors(m)

    # Combinations: a model's kind says which data it needs.
    kind = model.kind if model is not None else None
    if kind == "scalar" and d.name != "none":
        errors.append(
            f"model={m.name} dataset={d.name}: the scalar problem {m.name} takes no data; "
            "use dataset=none"
        )
    if kind in ("regression", "classification"):
        want = kind
        if d.name == "none":
            errors.append(
                f"model={m.name} dataset=none: {m.name} trains on data; choose a "
                f"{want} dataset (e.g. dataset={'pima' if want == 'classification' else 'auto_mpg'})"
            )
        elif d.task != want:
            errors.append(
                f"model={m.name} dataset={d.name}: {m.name} needs a {want} dataset but "
                f"{d.name} is a {d.task} dataset"
            )
        if d.name not in ("synthetic", "none") and not d.target:
            errors.append(f"dataset.target: {m.name} needs a target column; set dataset.target")
    if d.target and d.target in d.features:
        rest = [f for f in d.features if f != d.target]
        errors.append(
            f"dataset.features: lists the target column {d.target!r}; a model must not "
            f"train on what it predicts. Remove it, e.g. dataset.features=[{','.join(rest)}]"
            + (" (or [] for every other column)" if rest else " ([] = every other column)")
        )
    twice = sorted({f for f in d.features if list(d.features).count(f) > 1})
    if twice:
        errors.append(
            f"dataset.features: lists {', '.join(map(repr, twice))} more than once; "
            "name each feature once"
        )
    if d.name == "synthetic":
        _check(errors, d.n_samples >= 2, "dataset.n_samples", "must be >= 2 for synthetic data")
        _check(errors, d.n_features >= 1, "dataset.n_features", "must be >= 1 for synthetic data")
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
