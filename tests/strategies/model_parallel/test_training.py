"""Model-parallel training equals single-device training: a 3-stage MLP and a small CNN
(conv → conv → dense, a reshape between), with and without GPipe micro-batches, SGD and
Adam, against the unsplit model's jax step and a float64 numpy MLP; and Nodes exchanging
envelopes end where ``simulate`` ends."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.compiler.inline import slot_status
from bbjax.errors import ComponentError, InvalidArgument
from bbjax.models import cross_entropy
from bbjax.strategies.model_parallel import (
    ModelParallelRound,
    population,
    slot_name,
    split,
    stage_components,
)
from bbjax.strategies.model_parallel.layered import LayeredMLP
from bbjax.strategies.model_parallel.nodes import install_stages, train_round
from bbjax.strategies.parallel import data_shard
from tests.strategies.model_parallel.reference import (
    compile_with,
    numpy_mlp,
    single_device,
)

ROWS, BATCH, STEPS = 40, 16, 3
RTOL, ATOL = 1e-5, 1e-6


class SmallCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(3, 4, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(3 * 3 * 4, 5, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.dense(h.reshape(h.shape[0], -1))


def flatten(h):
    return h.reshape(h.shape[0], -1)


def mlp_case(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 8)).astype(np.float32)
    y = rng.integers(0, 3, ROWS).astype(np.int32)
    net = LayeredMLP(8, (16, 12), 3, rngs=nnx.Rngs(seed))
    stages = split(net, [net.stage_items([n]) for n in net.layers], example=x[:4])
    return net, stages, x, y


def cnn_case(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 5, ROWS).astype(np.int32)
    net = SmallCNN(nnx.Rngs(seed))
    stages = split(net, [["conv1", jax.nn.relu], ["conv2", jax.nn.relu, flatten], ["dense"]],
                   example=x[:4])
    return net, stages, x, y


OPTIMIZERS = {"sgd": lambda: optax.sgd(0.2), "adam": lambda: optax.adam(0.01)}


@functools.cache
def simulated(model: str, optimizer: str, micro: int, seed: int = 0):
    """``(net, x, y, compiled, bindings, history)`` of ``STEPS`` simulated rounds."""
    net, stages, x, y = (mlp_case if model == "mlp" else cnn_case)(seed)
    bindings = {"data": data_shard(x, y, BATCH),
                **stage_components(stages, OPTIMIZERS[optimizer](), cross_entropy,
                                   x[:BATCH], micro)}
    compiled = compile_with(ModelParallelRound(len(stages), micro), bindings, inline=False)
    history = bbjax.simulate(compiled, population(len(stages)), STEPS, jax.random.PRNGKey(0),
                             bindings=bindings)
    return net, x, y, compiled, bindings, history


def stage_params(history, s: int) -> dict:
    return jax.tree.map(lambda a: np.asarray(a[0]), history.states[slot_name(s)][slot_name(s)]
                        .params)


def merged(history, num_stages: int) -> dict:
    """Every stage's parameters as one dict by layer name."""
    out = {}
    for s in range(num_stages):
        out.update(stage_params(history, s))
    return out


def assert_close(got: dict, want: dict, **tolerance) -> None:
    assert set(got) == set(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w),
                                                         **tolerance), got, want)


CASES = [("mlp", "sgd", 1), ("mlp", "sgd", 4), ("mlp", "adam", 2),
         pytest.param("cnn", "sgd", 1, marks=pytest.mark.slow), ("cnn", "adam", 2)]


@pytest.mark.parametrize("model,optimizer,micro", CASES)
def test_update_equals_the_single_device_step(model, optimizer, micro):
    net, x, y, _, _, history = simulated(model, optimizer, micro)
    want, losses = single_device(net, OPTIMIZERS[optimizer](), x, y, BATCH, STEPS)
    assert_close(merged(history, 3), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(history["train_loss"], losses, rtol=RTOL)


@pytest.mark.parametrize("model,optimizer,micro", [("mlp", "sgd", 1), ("mlp", "adam", 2)])
def test_mlp_update_equals_float64_numpy(model, optimizer, micro):
    net, x, y, _, _, history = simulated(model, optimizer, micro)
    initial = nnx.to_pure_dict(nnx.state(net, nnx.Param))
    want, losses = numpy_mlp(initial, x, y, BATCH, STEPS, lr=0.2 if optimizer == "sgd"
                             else 0.01, adam=optimizer == "adam")
    assert_close(merged(history, 3), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(history["train_loss"], losses, rtol=1e-5)


def test_pipelined_update_equals_unpipelined():
    one, four = simulated("mlp", "sgd", 1)[-1], simulated("mlp", "sgd", 4)[-1]
    assert_close(merged(four, 3), merged(one, 3), rtol=RTOL, atol=ATOL)
    start = nnx.to_pure_dict(nnx.state(simulated("mlp", "sgd", 1)[0], nnx.Param))
    moved = jax.tree.map(lambda a, b: float(np.abs(a - np.asarray(b)).max()),
                         merged(one, 3), start)
    assert min(jax.tree.leaves(moved)) > 0  # every layer was updated


def test_nodes_over_envelopes_end_where_simulate_ends():
    _, _, _, compiled, bindings, history = simulated("mlp", "adam", 2)
    nodes = install_stages(compiled, bindings, 3)
    losses = [float(train_round(nodes)["train_loss"]) for _ in range(STEPS)]
    np.testing.assert_allclose(losses, history["train_loss"], rtol=1e-6)
    for s, node in enumerate(nodes):
        got = jax.tree.map(np.asarray, node.states[slot_name(s)].params)
        assert_close(got, stage_params(history, s), rtol=1e-6, atol=1e-7)


def test_a_round_of_another_micro_batch_count_is_refused_when_compiled():
    _, stages, x, y = mlp_case(1)
    bindings = {"data": data_shard(x, y, BATCH),
                **stage_components(stages, optax.sgd(0.1), cross_entropy, x[:BATCH], 2)}
    with pytest.raises(ComponentError, match=r"input shape \[8, 8\], got \[4, 8\]"):
        compile_with(ModelParallelRound(3, 4), bindings)
    wider = dict(bindings, data=data_shard(x, y, 2 * BATCH))  # micro-batches of 8 rows again
    with pytest.raises(ComponentError, match=r"holds 2 micro-batches\), got bool\[4\]"):
        compile_with(ModelParallelRound(3, 4), wider)
    with pytest.raises(InvalidArgument, match="3 micro-batches do not divide a batch of 16"):
        compile_with(ModelParallelRound(3, 3), bindings)
    with pytest.raises(InvalidArgument, match="at least 2 stages"):
        ModelParallelRound(1)


def test_every_stage_method_exports_to_onnx():
    """With the default compiler the partitions hold the whole step as ONNX ops: the
    CNN's forward passes, their vjps and Adam."""
    _, stages, x, y = cnn_case(2)
    bindings = {"data": data_shard(x, y, BATCH),
                **stage_components(stages, optax.adam(0.01), cross_entropy, x[:BATCH], 2)}
    compiled = compile_with(ModelParallelRound(3, 2), bindings)
    status = {f.name.split("#")[0]: slot_status(f) for f in compiled.model.functions}
    assert status == {
        "model_parallel": {"data": "inlined", "stage0": "inlined"},
        "model_parallel_stage0": {"stage0": "inlined"},
        "model_parallel_stage1_forward": {"stage1": "inlined"},
        "model_parallel_stage1": {"stage1": "inlined"},
        "model_parallel_stage2": {"stage2": "inlined"}}
