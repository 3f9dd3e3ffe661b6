"""export -> lower (and export -> onnxruntime) reproduce the original JAX function."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import bbjax
from tests.onnx import models

RTOL, ATOL = 1e-5, 1e-6
SEEDS = given(seed=st.integers(0, 2**31 - 1))
FEW = settings(max_examples=3, deadline=None)


def rng(seed):
    return np.random.default_rng(seed)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


def roundtrip(fn, *args):
    return bbjax.onnx.lower(bbjax.onnx.export(fn, *args))


# -- forward passes -------------------------------------------------------------------------------

@functools.cache
def mlp_case():
    module = models.MLP((20, 32, 16, 5), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(module)

    def forward(params, x):
        return nnx.merge(graphdef, params)(x)

    spec = jax.ShapeDtypeStruct(("B", 20), jnp.float32)
    return forward, params, bbjax.onnx.export(forward, params, spec)


@SEEDS
@FEW
def test_mlp_forward_with_symbolic_batch(seed):
    forward, params, model = mlp_case()
    lowered = jax.jit(bbjax.onnx.lower(model))
    for batch in (1, 7):
        x = rng(seed).normal(size=(batch, 20)).astype(np.float32)
        assert_close(lowered(params, x), forward(params, x))


def test_symbolic_batch_is_named_in_the_model():
    _, _, model = mlp_case()
    x_input = model.graph.input[-1]
    assert x_input.type.tensor_type.shape.dim[0].dim_param == "B"


def test_lowered_function_vmaps():
    forward, params, model = mlp_case()
    lowered = bbjax.onnx.lower(model)
    xs = rng(1).normal(size=(3, 4, 20)).astype(np.float32)
    batched = jax.jit(jax.vmap(lowered, in_axes=(None, 0)))(params, xs)
    assert_close(batched, jax.vmap(forward, in_axes=(None, 0))(params, xs))


@functools.cache
def cnn_case(max_pool=True):
    cnn = models.CNN(max_pool=max_pool)
    x = jnp.zeros((2, 12, 12, 3))
    variables = cnn.init(jax.random.PRNGKey(0), x)
    variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(1), v.shape),
                             variables)

    def forward(variables, x):
        return cnn.apply(variables, x)

    return forward, variables, bbjax.onnx.export(forward, variables, x)


@SEEDS
@FEW
def test_linen_cnn_forward(seed):
    forward, variables, model = cnn_case()
    x = rng(seed).normal(size=(2, 12, 12, 3)).astype(np.float32)
    assert_close(jax.jit(bbjax.onnx.lower(model))(variables, x), forward(variables, x), atol=1e-5)


@functools.cache
def transformer_case():
    block = models.Block(vocab=50, dim=16, heads=2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(block)

    def forward(params, tokens):
        return nnx.merge(graphdef, params)(tokens)

    tokens = jnp.zeros((2, 6), jnp.int32)
    return forward, params, bbjax.onnx.export(forward, params, tokens)


@SEEDS
@FEW
def test_transformer_block_forward(seed):
    forward, params, model = transformer_case()
    tokens = rng(seed).integers(0, 50, size=(2, 6)).astype(np.int32)
    assert_close(jax.jit(bbjax.onnx.lower(model))(params, tokens), forward(params, tokens),
                 atol=1e-5)


# -- gradients and training steps --------------------------------------------------------------

def _loss(params, x, y):
    w1, b1, w2 = params["w1"], params["b1"], params["w2"]
    h = jnp.tanh(x @ w1 + b1)
    return models.cross_entropy(h @ w2, y)


def _params(seed):
    r = rng(seed)
    return {"w1": r.normal(size=(6, 8)).astype(np.float32),
            "b1": r.normal(size=(8,)).astype(np.float32),
            "w2": r.normal(size=(8, 3)).astype(np.float32)}


def _batch(seed, n=5):
    r = rng(seed + 1)
    return r.normal(size=(n, 6)).astype(np.float32), r.integers(0, 3, size=(n,)).astype(np.int32)


@functools.cache
def grad_models():
    params, (x, y) = _params(0), _batch(0)
    return {
        "grad": bbjax.onnx.export(jax.grad(_loss), params, x, y),
        "value_and_grad": bbjax.onnx.export(jax.value_and_grad(_loss), params, x, y),
    }


@pytest.mark.parametrize("kind", ["grad", "value_and_grad"])
@SEEDS
@FEW
def test_gradients(kind, seed):
    fn = {"grad": jax.grad(_loss), "value_and_grad": jax.value_and_grad(_loss)}[kind]
    params, (x, y) = _params(seed), _batch(seed)
    assert_close(jax.jit(bbjax.onnx.lower(grad_models()[kind]))(params, x, y), fn(params, x, y))


OPTIMIZERS = {
    "sgd": optax.sgd(0.1),
    "momentum": optax.sgd(0.1, momentum=0.9),
    "adam": optax.adam(1e-2),
    "adamw": optax.adamw(1e-2, weight_decay=1e-3),
}


@functools.cache
def train_step_case(name):
    module = models.MLP((6, 8, 3), rngs=nnx.Rngs(0))
    step = models.nnx_train_step(module, OPTIMIZERS[name])
    _, params = nnx.split(module, nnx.Param)
    opt_state = OPTIMIZERS[name].init(params)
    x, y = _batch(0)
    return step, params, opt_state, bbjax.onnx.export(step, params, opt_state, x, y)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@SEEDS
@FEW
def test_optax_train_steps(name, seed):
    step, params, opt_state, model = train_step_case(name)
    lowered = jax.jit(bbjax.onnx.lower(model))
    x, y = _batch(seed)
    # run two steps so optimizer state feeds back in
    want = step(params, opt_state, x, y)
    got = lowered(params, opt_state, x, y)
    assert_close(got, want)
    assert_close(lowered(got[0], got[1], x, y), step(want[0], want[1], x, y), atol=1e-5)


@functools.cache
def scan_case():
    module = models.MLP((6, 8, 3), rngs=nnx.Rngs(0))
    train = models.local_training(module, optax.sgd(0.1), steps=4)
    _, params = nnx.split(module, nnx.Param)
    opt_state = optax.sgd(0.1).init(params)
    xs = np.zeros((4, 5, 6), np.float32)
    ys = np.zeros((4, 5), np.int32)
    return train, params, opt_state, bbjax.onnx.export(train, params, opt_state, xs, ys)


@SEEDS
@FEW
def test_scan_of_local_training_steps(seed):
    train, params, opt_state, model = scan_case()
    r = rng(seed)
    xs = r.normal(size=(4, 5, 6)).astype(np.float32)
    ys = r.integers(0, 3, size=(4, 5)).astype(np.int32)
    assert_close(jax.jit(bbjax.onnx.lower(model))(params, opt_state, xs, ys),
                 train(params, opt_state, xs, ys))


def _cond_fn(x, flag):
    return jax.lax.cond(flag > 0, lambda v: jnp.sin(v) * 2.0, lambda v: jnp.cos(v) - 1.0, x)


def _while_fn(x, limit):
    def body(state):
        i, v = state
        return i + 1, v * 1.5 + 0.25

    return jax.lax.while_loop(lambda s: s[0] < limit, body, (jnp.int32(0), x))


def _fori_fn(x):
    return jax.lax.fori_loop(0, 5, lambda i, v: v + jnp.float32(i) * v.mean(), x)


@functools.cache
def control_flow_models():
    x = np.zeros((4,), np.float32)
    return {
        "cond": bbjax.onnx.export(_cond_fn, x, np.int32(1)),
        "while": bbjax.onnx.export(_while_fn, x, np.int32(3)),
        "fori": bbjax.onnx.export(_fori_fn, x),
    }


@SEEDS
@FEW
def test_cond_takes_both_branches(seed):
    lowered = jax.jit(bbjax.onnx.lower(control_flow_models()["cond"]))
    x = rng(seed).normal(size=(4,)).astype(np.float32)
    for flag in (np.int32(1), np.int32(-1)):
        assert_close(lowered(x, flag), _cond_fn(x, flag))


@SEEDS
@FEW
def test_while_loop_with_traced_bound(seed):
    lowered = jax.jit(bbjax.onnx.lower(control_flow_models()["while"]))
    x = rng(seed).normal(size=(4,)).astype(np.float32)
    for limit in (np.int32(0), np.int32(4)):
        assert_close(lowered(x, limit), _while_fn(x, limit))
    assert_close(bbjax.onnx.lower(control_flow_models()["fori"])(x), _fori_fn(x))


# -- pytrees ---------------------------------------------------------------------------------------

def test_pytree_structures_survive():
    step, params, opt_state, model = train_step_case("adam")
    x, y = _batch(3)
    out = bbjax.onnx.lower(model)(params, opt_state, x, y)
    assert isinstance(out, tuple)
    assert jax.tree.structure(out[0]) == jax.tree.structure(params)
    assert jax.tree.structure(out[1]) == jax.tree.structure(opt_state)
    assert isinstance(out[0], nnx.State)


def test_wrong_argument_structure_is_rejected():
    step, params, opt_state, model = train_step_case("sgd")
    x, y = _batch(3)
    with pytest.raises(bbjax.errors.LoweringError, match="structure"):
        bbjax.onnx.lower(model)(params, x, y)


# -- onnxruntime agrees (the ONNX is valid for other tools) ---------------------------------------

def run_onnxruntime(model, *args):
    ort = pytest.importorskip("onnxruntime")
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(args)]
    feeds = {i.name: leaf for i, leaf in zip(session.get_inputs(), leaves)}
    return session.run(None, feeds)


@pytest.mark.parametrize("case", ["mlp", "cnn", "adam", "scan", "grad", "cond"])
def test_onnxruntime_matches_jax(case):
    seed = int(rng(None).integers(0, 2**31 - 1))
    if case == "mlp":
        fn, params, model = mlp_case()
        args = (params, rng(seed).normal(size=(3, 20)).astype(np.float32))
    elif case == "cnn":
        # onnxruntime's MaxPool takes at most 3 spatial dims; jax2onnx's NHWC max pool has 4
        fn, params, model = cnn_case(max_pool=False)
        args = (params, rng(seed).normal(size=(2, 12, 12, 3)).astype(np.float32))
    elif case == "adam":
        fn, params, opt_state, model = train_step_case("adam")
        args = (params, opt_state, *_batch(seed))
    elif case == "scan":
        fn, params, opt_state, model = scan_case()
        r = rng(seed)
        args = (params, opt_state, r.normal(size=(4, 5, 6)).astype(np.float32),
                r.integers(0, 3, size=(4, 5)).astype(np.int32))
    elif case == "grad":
        fn, model = jax.grad(_loss), grad_models()["grad"]
        args = (_params(seed), *_batch(seed))
    else:
        fn, model = _cond_fn, control_flow_models()["cond"]
        args = (rng(seed).normal(size=(4,)).astype(np.float32), np.int32(-1))
    outs = run_onnxruntime(model, *args)
    want = jax.tree.leaves(fn(*args))
    assert len(outs) == len(want)
    for got, expected in zip(outs, want):
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-5)


@functools.cache
def cnn_train_case():
    cnn = models.CNN()
    x = np.zeros((2, 12, 12, 3), np.float32)
    variables = cnn.init(jax.random.PRNGKey(0), x)
    # SGD, not Adam: behind BatchNorm the conv bias gradient is rounding noise, which Adam's
    # normalisation would amplify into O(lr) differences
    opt = optax.sgd(0.1, momentum=0.9)

    def step(params, stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = cnn.apply({"params": p, "batch_stats": stats}, x, train=True,
                                        mutable=["batch_stats"])
            return models.cross_entropy(logits, y), updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    args = (variables["params"], variables["batch_stats"], opt.init(variables["params"]), x,
            np.zeros(2, np.int32))
    return step, args, bbjax.onnx.export(step, *args)


@SEEDS
@FEW
def test_cnn_train_step_with_max_pool_gradient(seed):
    step, args, model = cnn_train_case()
    r = rng(seed)
    args = (*args[:3], r.normal(size=(2, 12, 12, 3)).astype(np.float32),
            r.integers(0, 10, size=(2,)).astype(np.int32))
    assert_close(jax.jit(bbjax.onnx.lower(model))(*args), jax.jit(step)(*args), atol=1e-5)


def _strided_conv_loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", rhs_dilation=(1, 2),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y) ** 2)


@SEEDS
@FEW
def test_strided_conv_gradients_in_both_operands(seed):
    r = rng(seed)
    w = r.normal(size=(3, 3, 2, 4)).astype(np.float32)
    x = r.normal(size=(2, 9, 8, 2)).astype(np.float32)
    grad = jax.grad(_strided_conv_loss, argnums=(0, 1))
    lowered = jax.jit(bbjax.onnx.lower(strided_conv_model()))
    assert_close(lowered(w, x), jax.jit(grad)(w, x), atol=1e-5)


@functools.cache
def strided_conv_model():
    w, x = np.zeros((3, 3, 2, 4), np.float32), np.zeros((2, 9, 8, 2), np.float32)
    return bbjax.onnx.export(jax.grad(_strided_conv_loss, argnums=(0, 1)), w, x)


def _robust_stats(x, idx, upd):
    """Scatter-add, top-k, sort and median: what robust aggregation rules are made of."""
    scattered = jnp.zeros(8, x.dtype).at[idx].add(upd)
    values, indices = jax.lax.top_k(x, 3)
    return scattered, values, indices, jnp.sort(x, axis=0), jnp.median(x.reshape(4, 3), axis=0)


@functools.cache
def robust_stats_model():
    return bbjax.onnx.export(_robust_stats, np.zeros(12, np.float32), np.zeros(5, np.int32),
                             np.zeros(5, np.float32))


@SEEDS
@FEW
def test_scatter_topk_sort_median(seed):
    r = rng(seed)
    args = (r.normal(size=12).astype(np.float32), r.integers(0, 8, 5).astype(np.int32),
            r.normal(size=5).astype(np.float32))
    assert_close(jax.jit(bbjax.onnx.lower(robust_stats_model()))(*args), _robust_stats(*args))
    for got, want in zip(run_onnxruntime(robust_stats_model(), *args), _robust_stats(*args)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["drop", "clip"])
def test_out_of_bounds_scatter_updates_match_jax(mode):
    def scatter(idx, upd):
        return jnp.ones(6, jnp.float32).at[idx].mul(upd, mode=mode), \
            jnp.zeros((3, 4), jnp.float32).at[idx % 3, idx].add(upd, mode=mode)

    idx = np.array([1, 9, -2, 4, 30], np.int32)
    upd = np.array([2.0, 3.0, 5.0, 7.0, 11.0], np.float32)
    lowered = bbjax.onnx.lower(bbjax.onnx.export(scatter, idx, upd))
    assert_close(jax.jit(lowered)(idx, upd), scatter(idx, upd))


def test_dynamic_slice_with_traced_starts_stays_jittable():
    def window(x, i, j):
        return jax.lax.dynamic_slice(x, (i, j), (2, 3))

    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    lowered = jax.jit(bbjax.onnx.lower(bbjax.onnx.export(window, x, np.int32(0), np.int32(0))))
    for i, j in [(-2, -1), (0, 1), (2, 3), (4, 7), (9, 0)]:  # XLA clamps out-of-range starts
        np.testing.assert_array_equal(lowered(x, np.int32(i), np.int32(j)), window(x, i, j))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum"])
def test_robust_aggregation_rules_export(rule):
    from bbjax import aggregators
    agg = {"median": aggregators.median(), "trimmed_mean": aggregators.trimmed_mean(0.25),
           "krum": aggregators.krum(0)}[rule]

    def aggregate(current, stacked, mask):
        return agg.aggregate(agg.init(current), current, stacked, mask.astype(jnp.float32),
                             mask)[0]

    r = rng(7)
    args = ({"w": np.zeros(3, np.float32)}, {"w": r.normal(size=(5, 3)).astype(np.float32)},
            np.array([1, 1, 0, 1, 1], bool))
    lowered = jax.jit(bbjax.onnx.lower(bbjax.onnx.export(aggregate, *args)))
    assert_close(lowered(*args), aggregate(*args))
