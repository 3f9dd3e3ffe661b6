"""AllReduce data parallelism against large-batch SGD on the union of the shards (float64
numpy), for 1, 2 and 4 replicas with shards and batch shares of unequal size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.compiler.inline import slot_status
from bbjax.components import ComponentError
from bbjax.errors import DataError, InvalidArgument
from bbjax.models import MLP, cross_entropy
from bbjax.strategies.parallel import (
    AllReduceRound,
    all_reduce_mean,
    all_reduce_population,
    replica,
    shard_source,
    split,
)
from tests.strategies.parallel.parallel_reference import (
    assert_tree_close,
    compile_with,
    loss_and_gradient,
    numpy_params,
    shard_rows,
    tree_map,
)

ROWS, FEATURES, CLASSES, BATCH, STEPS = 23, 5, 3, 7, 4
LEARNING_RATE, MOMENTUM = 0.3, 0.9


def setup(replicas: int, rng: np.random.Generator):
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, ROWS).astype(np.int32)
    model = replica(MLP(FEATURES, 6, CLASSES, rngs=nnx.Rngs(int(rng.integers(1 << 30)))),
                    optax.sgd(LEARNING_RATE, momentum=MOMENTUM), cross_entropy)
    bindings = {"model": model, "data": shard_source(x, y, replicas, BATCH),
                "all_reduce": all_reduce_mean()}
    return x, y, model, bindings


def large_batch_sgd(params: dict, x, y, replicas: int, steps: int, weighted: bool = True):
    """SGD with momentum on each step's union of the replicas' batches (the rows of the
    whole dataset each replica's shard stands for); with ``weighted=False`` on the
    unweighted mean of the replicas' batch gradients instead (somatize's AllReduce)."""
    _, _, sizes, batches = split(x, y, replicas, BATCH)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    velocity = tree_map(np.zeros_like, params)
    losses = []
    for t in range(steps):
        rows = [starts[i] + shard_rows(sizes, batches, i, t) for i in range(replicas)]
        assert sum(map(len, rows)) == BATCH
        loss, grads = loss_and_gradient(params, x[np.concatenate(rows)],
                                        y[np.concatenate(rows)])
        if not weighted:
            each = [loss_and_gradient(params, x[r], y[r])[1] for r in rows]
            grads = tree_map(lambda *g: sum(g) / replicas, *each)
        velocity = tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        params = tree_map(lambda p, v: p - LEARNING_RATE * v, params, velocity)
        losses.append(loss)
    return params, losses


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_all_reduce_equals_large_batch_sgd_on_the_union_of_the_shards(replicas):
    """23 rows and a 7-row batch: shards and batch shares of unequal size for 2 and 4
    replicas (12 + 11 rows, 4 + 3 batch rows; 6 + 6 + 6 + 5, 2 + 2 + 2 + 1), weighted by
    their rows."""
    rng = np.random.default_rng()
    x, y, model, bindings = setup(replicas, rng)
    history = bbjax.simulate(compile_with(AllReduceRound(), bindings),
                             all_reduce_population(x, y, replicas, BATCH), STEPS,
                             jax.random.key(0), bindings=bindings)
    initial = numpy_params(model.init(jax.random.key(0)).params)
    want, losses = large_batch_sgd(initial, x, y, replicas, STEPS)
    params = history.states["replica"]["model"].params
    for i in range(replicas):  # every replica holds the same parameters
        assert_tree_close(jax.tree.map(lambda a, i=i: a[i], params), want, rtol=2e-5,
                          atol=2e-6)
    np.testing.assert_allclose(history["train_loss"], losses, rtol=2e-5)
    assert list(history["batch_rows"]) == [BATCH] * STEPS
    assert list(history["bytes_sent"]) == [0] * STEPS  # the all-reduce sends no message
    if replicas > 1:  # the unweighted mean is another run, far outside the tolerance
        unweighted, _ = large_batch_sgd(initial, x, y, replicas, STEPS, weighted=False)
        gap = max(np.abs(u - w).max() for u, w in zip(jax.tree.leaves(unweighted),
                                                      jax.tree.leaves(want)))
        assert gap > 1e-3


def test_the_all_reduce_slot_stays_opaque_and_refuses_to_run_outside_a_simulation():
    _, _, _, bindings = setup(2, np.random.default_rng(0))
    compiled = compile_with(AllReduceRound(), bindings)
    status = slot_status(compiled.find("all_reduce_replica"))
    assert status["all_reduce"].startswith("opaque: all_reduce.mean does not export")
    assert status["model"] == "inlined"
    component = all_reduce_mean()
    run = jax.jit(lambda v: component.call("mean", {}, v, jnp.float32(1)))
    with pytest.raises(Exception, match="no peer axis 'peers' of replicas"):
        jax.block_until_ready(run(jnp.ones(3)))


def test_split_cuts_rows_and_batch_like_array_split():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    xs, ys, sizes, batches = split(x, y, 3, 8)
    assert list(sizes) == [4, 3, 3] and list(batches) == [3, 3, 2]
    np.testing.assert_array_equal(xs[1, :3], x[4:7])
    np.testing.assert_array_equal(ys[2], [7, 8, 9, 0])  # zero-padded to the widest shard


@pytest.mark.parametrize("args, error, message", [
    ((np.zeros((3, 2)), np.zeros(3), 4, 8), DataError, "3 rows cannot make 4"),
    ((np.zeros((5, 2)), np.zeros(4), 2, 4), DataError, "same length"),
    ((np.zeros((5, 2)), np.zeros(5), 3, 2), InvalidArgument, r"batch_size \(2\) must be at"),
    ((np.zeros((5, 2)), np.zeros(5), 0, 2), InvalidArgument, "replicas must be an integer"),
])
def test_split_errors(args, error, message):
    with pytest.raises(error, match=message):
        split(*args)


def test_replica_needs_an_nnx_module():
    with pytest.raises(ComponentError, match="expected a flax nnx module"):
        replica(object(), optax.sgd(0.1), cross_entropy)
