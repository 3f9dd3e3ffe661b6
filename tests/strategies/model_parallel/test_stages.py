"""``split`` and ``from_modules`` cut nnx models into pure stages, refusing what cannot be
split; a stage component's backward is the vjp of its forward and its update the mean of
its micro-batches' gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bbjax.errors import ComponentError, InvalidArgument
from bbjax.models import cross_entropy
from bbjax.strategies.model_parallel import (
    Stages,
    from_modules,
    micro_batch,
    split,
    stage,
)
from bbjax.strategies.model_parallel.layered import LayeredMLP


class Tower(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List([nnx.Linear(4, 6, rngs=rngs), nnx.Linear(6, 6, rngs=rngs)])
        self.out = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.blocks[1](jnp.tanh(self.blocks[0](x)))))


class WithBatchNorm(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.dense(x))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def test_split_chains_to_the_model_and_names_its_stages(x):
    net = Tower(nnx.Rngs(1))
    stages = split(net, [["blocks.0", jnp.tanh], ["blocks.1", jnp.tanh, "out"]], example=x)
    assert stages.names == ("blocks.0", "blocks.1+out") and len(stages) == 2
    assert set(stages.params[1]) == {"blocks.1", "out"}
    np.testing.assert_allclose(stages.apply(stages.params, x), net(x), rtol=1e-6)
    specs = stages.input_specs(x)
    assert [s.shape for s in specs] == [(5, 4), (5, 6), (5, 2)]
    kernel = np.asarray(net.blocks[0].kernel[...])
    np.testing.assert_array_equal(stages.params[0]["blocks.0"]["kernel"], kernel)


@pytest.mark.parametrize("stages,match", [
    ([], "non-empty"),
    ([["blocks.0", "blocks.1"]], "belong to no stage"),
    ([["blocks.0"], ["blocks.1", "out", "blocks.0"]], "stage 0 and stage 1"),
    ([["blocks.0", "blocks.0"], ["blocks.1", "out"]], "twice"),
    ([["blocks.7"], ["blocks.1", "out"]], "no sub-module 'blocks.7'"),
    ([["nothing"], ["out"]], "no sub-module 'nothing'"),
    ([[jnp.tanh], ["blocks.0", "blocks.1", "out"]], "names no sub-module"),
    ([["blocks.0", 3], ["blocks.1", "out"]], "parameter-free callable"),
    (["blocks.0", ["blocks.1", "out"]], "stage 0 must be a list"),
])
def test_split_refuses_what_it_cannot_split(stages, match):
    with pytest.raises(InvalidArgument, match=match):
        split(Tower(nnx.Rngs(0)), stages)


def test_split_checks_the_order_on_an_example(x):
    net = Tower(nnx.Rngs(0))
    with pytest.raises(InvalidArgument, match="order the model applies"):
        split(net, [["blocks.0"], ["blocks.1"], ["out"]], example=x)  # the tanh are missing


def test_split_refuses_state_other_than_parameters_and_non_modules():
    with pytest.raises(InvalidArgument, match="BatchStat"):
        split(WithBatchNorm(nnx.Rngs(0)), [["dense"], ["norm"]])
    with pytest.raises(InvalidArgument, match="flax nnx module"):
        split(lambda x: x, [["a"]])
    with pytest.raises(InvalidArgument, match="BatchStat"):
        from_modules([nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.BatchNorm(2, rngs=nnx.Rngs(0))])
    with pytest.raises(InvalidArgument, match="stage 1 must be a flax nnx module"):
        from_modules([nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.tanh])


def test_own_split_and_direct_stages(x):
    first, second = nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    stages = from_modules([first, second], names=["encoder", "decoder"])
    assert stages.names == ("encoder", "decoder")
    np.testing.assert_allclose(stages.apply(stages.params, x), second(first(x)), rtol=1e-6)
    pairs = Stages(("a", "b"), (lambda p, h: h * p, lambda p, h: h + p), (2.0, 1.0))
    assert float(pairs.apply(pairs.params, 3.0)) == 7.0
    with pytest.raises(InvalidArgument, match="one name, apply and params"):
        Stages(("a",), (), ())
    with pytest.raises(InvalidArgument, match="not callable"):
        Stages(("a",), (3,), ({},))


def _vjp_reference(apply, params, x, g_out):
    _, vjp = jax.vjp(apply, params, x)
    return vjp(g_out)


def test_stage_backward_is_the_vjp_and_apply_the_mean_step():
    rng = np.random.default_rng(3)
    net = LayeredMLP(4, (5,), 3, rngs=nnx.Rngs(2))
    stages = split(net, [net.stage_items(["dense0"]), ["head"]])
    apply, params = stages.applies[0], stages.params[0]
    xs = rng.normal(size=(2, 6, 4)).astype(np.float32)
    gs = rng.normal(size=(2, 6, 5)).astype(np.float32)
    component = stage(apply, params, optax.sgd(0.5), xs[0], micro_batches=2)
    state = component.init(jax.random.PRNGKey(0))
    for m in (0, 1):
        state, y = component.call("forward", state, xs[m], micro_batch(m, 2))
        np.testing.assert_allclose(y, apply(params, xs[m]), rtol=1e-6)
    expected = [_vjp_reference(apply, params, xs[m], gs[m]) for m in (0, 1)]
    for m in (1, 0):  # any order: each micro-batch's saved input is used
        state, g_in = component.call("backward", state, gs[m], micro_batch(m, 2))
        np.testing.assert_allclose(g_in, expected[m][1], rtol=1e-5, atol=1e-6)
    state, _ = component.call("apply", state)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, expected[0][0], expected[1][0])
    want = jax.tree.map(lambda p, g: p - 0.5 * g, params, mean)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 state.params, want)
    assert float(state.count) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(state.grads))
    idle, _ = component.call("apply", state)  # nothing accumulated: nothing changes
    jax.tree.map(np.testing.assert_array_equal, idle.params, state.params)


def test_last_stage_loss_backward():
    rng = np.random.default_rng(4)
    head = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    stages = from_modules([head])
    apply, params = stages.applies[0], stages.params[0]
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    component = stage(apply, params, optax.sgd(0.1), x, loss_fn=cross_entropy)
    state = component.init(jax.random.PRNGKey(0))
    state, (g_in, loss) = component.call("loss_backward", state, x, y, micro_batch(0, 1))
    want_loss, (g_p, g_x) = jax.value_and_grad(
        lambda p, a: cross_entropy(apply(p, a), y), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(g_in, g_x, rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state.grads, g_p)
    assert "loss_backward" not in stage(apply, params, optax.sgd(0.1), x).methods
    with pytest.raises(InvalidArgument, match="micro_batches"):
        stage(apply, params, optax.sgd(0.1), x, micro_batches=0)


def test_stage_methods_refuse_another_micro_batch_count_or_input_shape():
    head = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    stages = from_modules([head])
    x = np.zeros((6, 5), np.float32)
    component = stage(stages.applies[0], stages.params[0], optax.sgd(0.1), x, micro_batches=2)
    state = component.init(jax.random.PRNGKey(0))
    with pytest.raises(ComponentError, match=r"bool \[2\] mask.*holds 2 micro-batches"):
        component.call("forward", state, x, micro_batch(3, 4))
    with pytest.raises(ComponentError, match="bool"):
        component.call("backward", state, np.zeros((6, 3), np.float32), jnp.int32(1))
    with pytest.raises(ComponentError, match=r"input shape \[6, 5\], got \[3, 5\]"):
        component.call("forward", state, x[:3], micro_batch(0, 2))
