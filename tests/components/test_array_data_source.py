"""The array DataSource: every example once per epoch, reshuffled, per-peer shards."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.components import array_data_source

from bbjax.errors import ComponentError


def _source(n, batch_size):
    x = {"features": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)}
    return array_data_source(x, 10 * np.arange(n), batch_size)


SOURCES = {shape: _source(*shape) for shape in [(12, 4), (7, 3), (5, 5)]}
NEXT_BATCH = {
    shape: jax.jit(functools.partial(source.call, "next_batch"))
    for shape, source in SOURCES.items()
}


def _epochs(shape, state, num_epochs):
    """Per epoch, the x rows seen; checks labels pair with rows and the epoch counter.

    ``state`` must be at the start of an epoch.
    """
    num_examples, batch_size = shape
    first = int(state.epoch)
    epochs = []
    for epoch in range(first, first + num_epochs):
        rows = []
        for _ in range(num_examples // batch_size):
            state, (x, y) = NEXT_BATCH[shape](state)
            assert int(state.epoch) == epoch
            np.testing.assert_array_equal(y, 10 * x["features"][:, 0])
            rows.extend(np.asarray(x["features"][:, 0]).astype(int).tolist())
        epochs.append(rows)
    return state, epochs


@pytest.mark.parametrize("shape", list(SOURCES))
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_each_example_at_most_once_per_epoch_exactly_once_when_batches_divide(shape, seed):
    n, batch_size = shape
    source = SOURCES[shape]
    _, epochs = _epochs(shape, source.init(jax.random.key(seed)), 3)
    for rows in epochs:
        assert len(rows) == (n // batch_size) * batch_size
        assert len(set(rows)) == len(rows) and set(rows) <= set(range(n))
        if n % batch_size == 0:
            assert sorted(rows) == list(range(n))


def test_epochs_are_reshuffled_and_deterministic_under_the_key():
    shape = (12, 4)
    source = SOURCES[shape]
    _, epochs = _epochs(shape, source.init(jax.random.key(0)), 3)
    assert epochs[0] != epochs[1] != epochs[2]
    _, again = _epochs(shape, source.init(jax.random.key(0)), 3)
    _, other = _epochs(shape, source.init(jax.random.key(1)), 3)
    assert again == epochs and other != epochs


def test_reset_starts_the_next_epoch():
    shape = (12, 4)
    source = SOURCES[shape]
    state = source.init(jax.random.key(0))
    state, _ = NEXT_BATCH[shape](state)
    state, out = jax.jit(functools.partial(source.call, "reset"))(state)
    assert out == () and int(state.position) == 0 and int(state.epoch) == 1
    _, epochs = _epochs(shape, state, 1)
    assert sorted(epochs[0]) == list(range(12))


def test_vmap_gives_each_peer_its_own_shard():
    peers, n = 4, 6
    source = array_data_source(np.zeros((n, 3), np.float32), np.zeros(n, np.int32), 3)
    xs = jnp.arange(peers * n * 3, dtype=jnp.float32).reshape(peers, n, 3)
    ys = jnp.arange(peers * n).reshape(peers, n)
    keys = jax.random.split(jax.random.key(0), peers)
    init = jax.jit(source.init)
    one = jax.jit(functools.partial(source.call, "next_batch"))
    many = jax.jit(jax.vmap(one))
    states = jax.jit(jax.vmap(source.init))(keys, xs, ys)
    alone = [init(keys[p], xs[p], ys[p]) for p in range(peers)]
    for _ in range(3):  # crosses an epoch boundary
        states, (xb, yb) = many(states)
        for p in range(peers):
            alone[p], (x, y) = one(alone[p])
            np.testing.assert_array_equal(xb[p], x)
            np.testing.assert_array_equal(yb[p], y)
            assert set(np.asarray(y).tolist()) <= set(range(p * n, (p + 1) * n))
    np.testing.assert_array_equal(states.epoch, np.ones(peers))
    states, _ = jax.vmap(functools.partial(source.call, "reset"))(states)
    np.testing.assert_array_equal(states.epoch, np.full(peers, 2))
    np.testing.assert_array_equal(states.position, np.zeros(peers))


def test_bad_arguments():
    x, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ComponentError, match=r"batch_size \(5\) exceeds the number of examples"):
        array_data_source(x, y, 5)
    with pytest.raises(ComponentError, match="batch_size must be an integer >= 1"):
        array_data_source(x, y, 0)
    with pytest.raises(ComponentError, match=r"leading axis; got sizes \[3, 4\]"):
        array_data_source(x, np.zeros(3), 2)
    with pytest.raises(ComponentError, match="shared, non-empty leading axis"):
        array_data_source(np.zeros((0, 2)), np.zeros(0), 1)
    source = array_data_source(x, y, 2, name="shard")
    with pytest.raises(ComponentError, match=r"init data leaf \[0\] has shape \(5, 2\)") as info:
        source.init(jax.random.key(0), np.zeros((5, 2)), y)
    assert info.value.component == "shard"
