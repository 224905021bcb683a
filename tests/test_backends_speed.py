"""What makes the trainers fast must not change what they compute.

* the in-place optimizer rules equal :func:`apply_update` bit for bit;
* TensorFlow keeps each trainer's state in its own variables, updated in place by a
  loop that every trainer of the same graph shares, and a run that follows another
  of the same graph starts with a full-size chunk (no probe);
* TensorFlow traces its chunk loop once per graph (problem, optimizer kind, dtype,
  shapes), not once per chunk length or per sweep job, and a cache hit computes
  exactly what a fresh trace (or a fresh process) computes;
* ``backend.device`` is validated before anything runs and recorded as a tag.

No timings here: those are in benchmarks/plain_loops.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import compose, run_cli
from gradtrack.optimizers import OptimizerSpec, apply_update, make_inplace_update

SPECS = [
    OptimizerSpec("sgd", lr=0.1),
    OptimizerSpec("momentum", lr=0.05, momentum=0.7),
    OptimizerSpec("adam", lr=0.01),
    OptimizerSpec("adam", lr=0.01, clip_norm=0.5),
]


def _start(rng, dtype):
    return [rng.standard_normal(5).astype(dtype), np.asarray(rng.standard_normal(), dtype=dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-clip{s.clip_norm}")
def test_numpy_inplace_update_equals_apply_update_bit_for_bit(spec, dtype):
    from gradtrack.backends.numpy_backend import OPS

    rng = np.random.default_rng(3)
    ref = _start(rng, dtype)
    ref_slots = [[np.zeros_like(p) for p in ref] for _ in range(spec.n_slots)]
    mine = [p.copy() for p in ref]
    slots = [[np.zeros_like(p) for p in mine] for _ in range(spec.n_slots)]
    update = make_inplace_update(OPS, spec, mine, slots)
    for t in range(1, 30):
        grads = [g.astype(dtype) for g in (rng.standard_normal(5), rng.standard_normal(()))]
        grads[1] = grads[1][()]  # a numpy scalar, as np.add.reduce returns for a bias
        ref, ref_slots = apply_update(OPS, spec, ref, grads, ref_slots, t)
        update(grads, t)
        for a, b in zip(ref, mine):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-clip{s.clip_norm}")
def test_torch_inplace_update_equals_apply_update_bit_for_bit(spec):
    import torch

    from gradtrack.backends.torch_backend import OPS

    rng = np.random.default_rng(4)
    ref = [torch.from_numpy(p) for p in _start(rng, np.float32)]
    ref_slots = [[torch.zeros_like(p) for p in ref] for _ in range(spec.n_slots)]
    mine = [p.clone() for p in ref]
    slots = [[torch.zeros_like(p) for p in mine] for _ in range(spec.n_slots)]
    update = make_inplace_update(OPS, spec, mine, slots)
    for t in range(1, 30):
        grads = [torch.from_numpy(g.astype(np.float32)) for g in _start(rng, np.float64)]
        ref, ref_slots = apply_update(OPS, spec, ref, grads, ref_slots, t)
        update(grads, t)
        for a, b in zip(ref, mine):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-clip{s.clip_norm}")
def test_tensorflow_assign_sub_of_update_steps_equals_apply_update_bit_for_bit(spec, dtype):
    """The TF loop updates variables in place: ``p.assign_sub(step)`` with the steps of
    :func:`update_steps`, the state assigned; that must be apply_update's ``p - step``."""
    import tensorflow as tf

    from gradtrack.backends.tensorflow_backend import OPS
    from gradtrack.optimizers import update_steps

    rng = np.random.default_rng(6)
    ref = [tf.constant(p) for p in _start(rng, dtype)]
    ref_slots = [[tf.zeros_like(p) for p in ref] for _ in range(spec.n_slots)]
    mine = [tf.Variable(p) for p in ref]
    slots = [[tf.Variable(tf.zeros_like(p)) for p in ref] for _ in range(spec.n_slots)]
    for t in range(1, 30):
        grads = [tf.constant(g) for g in _start(rng, dtype)]
        tt = tf.constant(float(t), dtype)
        ref, ref_slots = apply_update(OPS, spec, ref, grads, ref_slots, tt)
        steps, new_slots = update_steps(OPS, spec, grads, slots, tt)
        for group, values in zip(slots, new_slots):
            for var, value in zip(group, values):
                var.assign(value)
        for var, step in zip(mine, steps):
            var.assign_sub(step)
        for a, b in zip(ref, mine):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        for ga, gb in zip(ref_slots, slots):
            for a, b in zip(ga, gb):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- TensorFlow: traces ---------------------------------------------------------


def _tf_trainer(lr=0.5, name="sgd", dtype="float64", batch_size=0, n=40, seed=0, eager=False):
    from gradtrack.backends import get_backend
    from gradtrack.backends.base import BatchPlan
    from gradtrack.models import InitSpec, get_problem

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 > 0).astype(float)
    problem = get_problem("logistic")
    p0 = problem.init_params(3, InitSpec("zeros"), rng)
    spec = OptimizerSpec(name, lr=lr)
    plan = BatchPlan(n, batch_size, batch_size > 0, seed)
    return get_backend("tensorflow").make_trainer(
        problem, p0, X, y, spec=spec, dtype=dtype, plan=plan, eager=eager
    )


def _chunks(trainer, sizes):
    recs = [trainer.run(n) for n in sizes]
    losses = np.concatenate([r.losses for r in recs])
    return losses, np.concatenate([r.grad_norms for r in recs]), trainer.params()


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


@pytest.mark.parametrize("batch_size", [0, 8])
def test_tf_trainers_sharing_one_compiled_loop_keep_their_own_state(batch_size):
    """One trace serves every trainer of a graph; the state (parameters, Adam's moments,
    the step count) is each trainer's own, passed in by reference: two trainers run
    chunk by chunk in turn compute what each computes alone."""
    from gradtrack.backends import tensorflow_backend as tfb

    tfb.clear_cache()
    sizes = (2, 5, 3)
    alone = [_chunks(_tf_trainer(lr, "adam", batch_size=batch_size), sizes) for lr in (0.1, 0.7)]
    start = tfb.trace_count()
    a, b = (
        _tf_trainer(0.1, "adam", batch_size=batch_size),
        _tf_trainer(0.7, "adam", batch_size=batch_size),
    )
    ra, rb = [], []
    for n in sizes:
        ra.append(a.run(n))
        rb.append(b.run(n))
    assert tfb.trace_count() == start  # the same loop for both
    for tr, recs, ref in ((a, ra, alone[0]), (b, rb, alone[1])):
        got = (
            np.concatenate([r.losses for r in recs]),
            np.concatenate([r.grad_norms for r in recs]),
            tr.params(),
        )
        _assert_same(got, ref)
    assert not np.array_equal(alone[0][0], alone[1][0])  # the two really differ


@pytest.mark.parametrize("batch_size", [0, 8])
def test_tf_eager_and_compiled_chunks_agree_bit_for_bit(batch_size):
    """backend.eager=true runs the same loop body eagerly: the same bits, Adam's step
    count carried across chunks included."""
    sizes = (1, 3, 2)
    compiled = _chunks(_tf_trainer(0.3, "adam", batch_size=batch_size, n=16), sizes)
    eager = _chunks(_tf_trainer(0.3, "adam", batch_size=batch_size, n=16, eager=True), sizes)
    _assert_same(compiled, eager)


def test_first_chunk_probes_unless_the_step_cost_is_known():
    from gradtrack import train

    assert train.first_chunk(None) == train.FIRST_CHUNK_STEPS
    assert train.first_chunk(0.0) == train.FIRST_CHUNK_STEPS
    # About CHUNK_SECONDS of steps, rounded down to a power of two: a signal still waits
    # no longer than one chunk.
    assert train.first_chunk(train.CHUNK_SECONDS / 3000) == 2048
    assert train.first_chunk(train.CHUNK_SECONDS / 2048) == 2048
    assert train.first_chunk(10.0) == 1  # slower than CHUNK_SECONDS: one step at a time
    assert train.first_chunk(1e-12) == train.MAX_CHUNK_STEPS


def test_a_second_tf_run_of_the_same_graph_starts_with_a_full_chunk(project, monkeypatch):
    """The first run in a process probes with FIRST_CHUNK_STEPS (its first chunk also
    traces); a later run of the same compiled loop knows the step cost and sizes its
    first chunk from it, so a short run is one call, as a hand-written loop's."""
    from gradtrack import train
    from gradtrack.backends import tensorflow_backend as tfb

    calls: list[tuple[float | None, int]] = []
    real_run = tfb.TensorFlowTrainer.run

    def spy(self, n):
        calls.append((self.seconds_per_step, n))
        return real_run(self, n)

    monkeypatch.setattr(tfb.TensorFlowTrainer, "run", spy)
    tfb.clear_cache()
    cfg = compose(
        "+experiment=fit_linear",
        f"paths.root={project}",
        "backend=tensorflow",
        "epochs=600",
        "tracking.enabled=false",
        "checks.gradcheck=false",
        "checks.baseline=false",
    )
    first = train.run(cfg)
    assert calls[0] == (None, train.FIRST_CHUNK_STEPS)  # a new graph: probe
    assert calls[1][0] is None  # the probe traced: its time is no step cost
    assert len(calls) >= 3 and calls[2][0] is not None
    calls.clear()
    second = train.run(cfg)
    rate, n = calls[0]
    assert rate is not None and n == min(600, train.first_chunk(rate)) > train.FIRST_CHUNK_STEPS
    np.testing.assert_array_equal(first.losses, second.losses)


@pytest.mark.parametrize("batch_size", [0, 8])
def test_new_chunk_length_does_not_retrace_and_chunks_add_up(batch_size):
    from gradtrack.backends import tensorflow_backend as tfb

    tfb.clear_cache()
    whole = _tf_trainer(batch_size=batch_size).run(15)
    before = tfb.trace_count()
    chunked = _tf_trainer(batch_size=batch_size)
    recs = [chunked.run(n) for n in (3, 7, 1, 4)]
    assert tfb.trace_count() == before  # same graph as `whole`: a cache hit, any length
    np.testing.assert_array_equal(np.concatenate([r.losses for r in recs]), whole.losses)
    np.testing.assert_array_equal(np.concatenate([r.grad_norms for r in recs]), whole.grad_norms)


def test_one_trace_per_graph_not_per_run():
    from gradtrack.backends import tensorflow_backend as tfb

    tfb.clear_cache()
    start = tfb.trace_count()
    for lr in (0.1, 0.5, 2.0):
        _tf_trainer(lr=lr).run(5)
    assert tfb.trace_count() - start == 1
    _tf_trainer(name="momentum").run(5)  # another optimizer kind: a new graph
    _tf_trainer(dtype="float32").run(5)  # another dtype
    _tf_trainer(n=41).run(5)  # another shape
    assert tfb.trace_count() - start == 4
    _tf_trainer(lr=0.3, name="momentum").run(5)
    _tf_trainer(lr=0.3, dtype="float32", n=41).run(5)  # float32 at n=41: new
    assert tfb.trace_count() - start == 5


_SWEEP_LRS = (0.5, 1.0, 2.0)


def _sweep_losses(project, lrs=_SWEEP_LRS) -> dict[str, list[float]]:
    from gradtrack import train

    out = {}
    for lr in lrs:
        cfg = compose(
            "+experiment=fit_logistic",
            f"paths.root={project}",
            "backend=tensorflow",
            f"optimizer.lr={lr}",
            "epochs=30",
            "tracking.enabled=false",
            "checks.gradcheck=false",
            "checks.baseline=false",
        )
        out[str(lr)] = train.run(cfg).losses.tolist()
    return out


def test_sweep_jobs_in_one_process_trace_once_and_match_a_fresh_process(project):
    """The basic launcher runs a sweep's jobs one after another in one process: one
    trace for three learning rates, and each job's losses equal to the bit what a
    fresh trace and a fresh process compute (lr is an input, not a baked constant)."""
    from gradtrack.backends import tensorflow_backend as tfb

    tfb.clear_cache()
    start = tfb.trace_count()
    swept = _sweep_losses(project)
    assert tfb.trace_count() - start == 1
    assert len({tuple(v) for v in swept.values()}) == 3  # the lr really differs per job
    for lr in _SWEEP_LRS:  # fresh trace per job
        tfb.clear_cache()
        assert _sweep_losses(project, (lr,)) == {str(lr): swept[str(lr)]}
    # Fresh process, the job that was a cache hit in the sweep above.
    code = (
        "import json, sys; sys.path.insert(0, 'tests'); import test_backends_speed as t; "
        f"from pathlib import Path; print(json.dumps(t._sweep_losses(Path({str(project)!r}), "
        f"({_SWEEP_LRS[1]},))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=_repo()
    )
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh == {str(_SWEEP_LRS[1]): swept[str(_SWEEP_LRS[1])]}


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


# --- device -------------------------------------------------------------------------


def _validate(*overrides):
    from gradtrack.config import validate

    validate(compose("+experiment=fit_linear", *overrides))


def test_device_is_validated_before_anything_runs():
    from gradtrack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"backend.device=cuda: backend=numpy runs on the CPU"):
        _validate("backend=numpy", "backend.device=cuda")
    with pytest.raises(ConfigError, match=r"backend.device: 'gpu' is not one of auto, cpu, cuda"):
        _validate("backend=torch", "backend.device=gpu")
    _validate("backend=torch", "backend.device=cpu")
    _validate("backend=numpy", "backend.device=auto")


def test_cuda_without_a_gpu_is_a_config_error_with_exit_2(project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    out = run_cli(["+experiment=fit_linear", "backend=torch", "backend.device=cuda"], project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "backend.device=cuda: torch sees no GPU" in out.stderr
    assert "backend.device=auto" in out.stderr  # says what to do instead
    assert not (project / "mlruns").exists()  # no MLflow run for an input error


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow"])
def test_run_records_the_device_it_used(project, backend):
    import mlflow

    from gradtrack import train

    cfg = compose(
        "+experiment=fit_logistic_1d",
        f"paths.root={project}",
        f"backend={backend}",
        "epochs=3",
        "tracking.log_artifacts=false",
        "tracking.log_model=false",
        "checks.gradcheck=false",
    )
    res = train.run(cfg)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    tags = client.get_run(res.run_id).data.tags
    gpu = backend != "numpy" and _gpu(backend)
    assert tags["device"] == ("cuda" if gpu else "cpu")


def _gpu(backend: str) -> bool:
    from gradtrack.config import gpu_visible

    return gpu_visible(backend)


def test_trainers_expose_their_device_and_numpy_refuses_cuda():
    from gradtrack.backends import get_backend
    from gradtrack.models import InitSpec, get_problem

    problem = get_problem("quadratic")
    p0 = problem.init_params(0, InitSpec(x0=1.0), np.random.default_rng(0))
    spec = OptimizerSpec(lr=0.1)
    np_be = get_backend("numpy")
    assert np_be.make_trainer(problem, p0, None, None, spec=spec).device == "cpu"
    with pytest.raises(ValueError, match="CPU only"):
        np_be.make_trainer(problem, p0, None, None, spec=spec, device="cuda")
    for name in ("torch", "tensorflow"):
        be = get_backend(name)
        cpu = be.make_trainer(problem, p0, None, None, spec=spec, device="cpu")
        assert cpu.device == "cpu"
        auto = be.make_trainer(problem, p0, None, None, spec=spec, device="auto")
        assert auto.device == ("cuda" if _gpu(name) else "cpu")


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_per_sample_rows_equal_one_row_batches_bit_for_bit(shuffle, dtype):
    """Per-sample SGD hands the tanh net scalars; the result must be what 1-row
    batches (the generic path) give, step for step."""
    from gradtrack.backends import get_backend
    from gradtrack.backends.base import BatchPlan
    from gradtrack.models import InitSpec, get_problem
    from gradtrack.models.tanh_net import TanhNet

    class OneRowBatches(TanhNet):
        takes_rows = False

    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 2, (15, 1))
    y = np.tanh(0.7 * np.tanh(1.3 * X[:, 0]) - 0.2)
    p0 = get_problem("tanh_net").init_params(1, InitSpec("normal", scale=0.5), rng)
    spec = OptimizerSpec("adam", lr=0.05)
    be = get_backend("numpy")
    recs = []
    for problem in (TanhNet(), OneRowBatches()):
        plan = BatchPlan(15, 1, shuffle, 7)
        tr = be.make_trainer(problem, p0, X, y, spec=spec, dtype=dtype, plan=plan)
        assert tr.rows == problem.takes_rows
        recs.append((tr.run(20), tr.params()))
    (a, pa), (b, pb) = recs
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.grad_norms, b.grad_norms)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    assert a.losses[-1] < a.losses[0]


def _tanh_setup():
    from gradtrack.models import InitSpec, get_problem

    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 2, (15, 1))
    y = np.tanh(0.7 * np.tanh(1.3 * X[:, 0]) - 0.2)
    p0 = get_problem("tanh_net").init_params(1, InitSpec("normal", scale=0.5), rng)
    return X, y, p0


def _three_chunks(backend: str, problem, spec, shuffle: bool):
    """A per-sample (batch_size=1) float64 trainer on the tanh data after chunks of 1, 6
    and 13 epochs (state carried across chunks): (trainer, losses, grad norms)."""
    from gradtrack.backends import get_backend
    from gradtrack.backends.base import BatchPlan

    X, y, p0 = _tanh_setup()
    plan = BatchPlan(15, 1, shuffle, 7)
    tr = get_backend(backend).make_trainer(problem, p0, X, y, spec=spec, dtype="float64", plan=plan)
    recs = [tr.run(n) for n in (1, 6, 13)]
    return (
        tr,
        np.concatenate([r.losses for r in recs]),
        np.concatenate([r.grad_norms for r in recs]),
    )


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.name)
def test_numpy_per_sample_scalar_loop_equals_general_loop_bit_for_bit(spec, shuffle):
    """The generated scalar loop (backends/sample_loop.py) stands in for the general
    epoch loop only because it computes the same bits: losses, gradient norms,
    parameters and optimizer state, across chunks (the state carries over)."""
    from gradtrack.models.tanh_net import TanhNet

    class General(TanhNet):
        sample_loss_and_grad = None  # not offered: the general loop runs

    out = []
    for problem in (TanhNet(), General()):
        tr, losses, norms = _three_chunks("numpy", problem, spec, shuffle)
        assert tr.per_sample == (problem.sample_loss_and_grad is not None)
        out.append((losses, norms, tr.params(), [s[0].copy() for s in tr._slots], tr.t))
    (la, na, pa, sa, ta), (lb, nb, pb, sb, tb) = out
    np.testing.assert_array_equal(la, lb)
    # The general loop's norm is BLAS's ddot of the 3 gradients: left to right on this
    # machine's OpenBLAS kernel (bit-equal here), but another CPU's kernel may group
    # the sum otherwise. The norm never feeds the update (no clipping on this path),
    # so everything else stays bit for bit; a wrong norm is still far outside 1e-14.
    np.testing.assert_allclose(na, nb, rtol=1e-14, atol=0)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    for a, b in zip(sa, sb, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ta == tb == 20 * 15
    assert la[-1] < la[0]


def _rebinds_its_input(w1, w2, b, x, y, tanh=np.tanh):
    x = x * 1.0  # a loop variable: pasting this body would change the loop
    a1 = tanh(w1 * x)
    d = tanh(w2 * a1 + b) - y
    return d * d * 0.5, d * x, d * a1, d


def _uses_a_loop_name(w1, w2, b, x, lr):  # ``lr`` is the loop's learning rate
    d = w2 * np.tanh(w1 * x) + b - lr
    return d * d * 0.5, d * x, d, d


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.name)
def test_sample_loop_pastes_the_models_gradient_only_where_that_computes_the_same(spec):
    """The scalar loop pastes the model's one-row gradient into itself (no call per
    update) when that is safe; pasted or called, the loop computes the same bits."""
    from gradtrack.backends.sample_loop import epochs_function, hyper
    from gradtrack.models.tanh_net import TanhNet

    X, y, p0 = _tanh_setup()
    xs = TanhNet.sample_inputs(X)
    order = np.random.default_rng(3).permutation(15)
    XS, TS = [xs, xs[order]] * 3, [y, y[order]] * 3
    for grad, pasted in (
        (TanhNet.sample_loss_and_grad, True),
        (_rebinds_its_input, False),
        (_uses_a_loop_name, False),
    ):
        runs = [epochs_function(grad, 3, spec.name, inline) for inline in (True, False)]
        assert ("_grad(" not in runs[0].source) == pasted, runs[0].source
        assert "_grad(" in runs[1].source
        params = [p0[k][()] for k in ("w1", "w2", "b")]
        slots = [[np.float64(0.0)] * 3 for _ in range(spec.n_slots)]
        a, b = (run(XS, TS, params, slots, 0, hyper(spec)) for run in runs)
        for u, v in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(np.array(u, dtype=np.float64), v)
        assert a[4] == b[4] == 6 * 15


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-clip{s.clip_norm}")
def test_torch_per_sample_forward_equals_one_row_batches_bit_for_bit(spec, shuffle):
    """PyTorch's per-sample steps differentiate the model's scalar ``sample_loss`` on
    0-d tensors; the result must be the batch forward's on 1-row slices."""
    from gradtrack.models.tanh_net import TanhNet

    class OneRowBatches(TanhNet):
        sample_loss = None

    out = []
    for problem in (TanhNet(), OneRowBatches()):
        tr, losses, norms = _three_chunks("torch", problem, spec, shuffle)
        assert tr.rows == (problem.sample_loss is not None)
        out.append((losses, norms, tr.params()))
    (la, na, pa), (lb, nb, pb) = out
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(na, nb)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    assert la[-1] < la[0]


@pytest.mark.parametrize(
    "why, spec, dtype, batch_size",
    [
        ("clipping", OptimizerSpec("sgd", lr=0.1, clip_norm=0.5), "float64", 1),
        ("float32 norms", OptimizerSpec("sgd", lr=0.1), "float32", 1),
        ("minibatches", OptimizerSpec("sgd", lr=0.1), "float64", 2),
    ],
)
def test_numpy_per_sample_scalar_loop_only_where_it_is_exact(why, spec, dtype, batch_size):
    from gradtrack.backends import get_backend
    from gradtrack.backends.base import BatchPlan
    from gradtrack.models import get_problem

    X, y, p0 = _tanh_setup()
    plan = BatchPlan(15, batch_size, False, 7)
    tr = get_backend("numpy").make_trainer(
        get_problem("tanh_net"), p0, X, y, spec=spec, dtype=dtype, plan=plan
    )
    assert not tr.per_sample, why
    assert np.isfinite(tr.run(3).losses).all()


# --- the benchmark's plain loops do the same work as gradtrack ----------------------


@pytest.fixture
def plain_loops():
    bench = str(_repo() / "benchmarks")
    sys.path.insert(0, bench)
    try:
        import plain_loops

        yield plain_loops
    finally:
        sys.path.remove(bench)


@pytest.mark.parametrize(
    "case", ["fit_linear/adam", "fit_logistic/momentum", "tanh_net/per_sample_sgd"]
)
def test_plain_loops_reach_gradtrack_final_loss_on_every_backend(plain_loops, project, case):
    # in_process asserts the final losses agree to 1e-12 relative before timing.
    out = plain_loops.in_process(cases=(case,), repeats=1, steps=30, root=project)
    for be in ("numpy", "torch", "tensorflow"):
        v = out[case][be]
        assert v["final_loss_rel_diff"] <= 1e-12 and v["ratio"] > 0


def test_plain_loop_that_does_less_is_refused(plain_loops, project):
    """A reference loop that skips work (here: half the steps) must not be timed."""
    cfg = plain_loops.config("fit_linear/sgd", "numpy", 40, project)
    model, X, y, p0, opt = plain_loops.problem_data(cfg)
    short, _ = plain_loops.NumpyPlain(model, X, y, p0, opt).run(20)
    _, ours = plain_loops.gradtrack_run(cfg)
    with pytest.raises(AssertionError):
        plain_loops._same_final_loss(
            "fit_linear/sgd", "numpy", np.pad(short, (0, 20), "edge"), ours
        )


def test_big_data_section_reports_each_backend_against_its_matvecs(plain_loops):
    out = plain_loops.big_data(n=3000, d=5, k=2, repeats=1)
    assert set(out) == {
        f"{b}/{d}" for b in ("numpy", "torch", "tensorflow") for d in ("float64", "float32")
    }
    assert out["numpy/float32"]["X_mb"] == pytest.approx(out["numpy/float64"]["X_mb"] / 2)
    rat = plain_loops.ratios({"big_data": out})
    assert all(r["target"] == 1.10 for r in rat.values())
