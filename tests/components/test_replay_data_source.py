"""``replay_data_source``: the batches of a published order, by round and step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.components import replay_data_source
from bbjax.errors import ComponentError


def _table(rng, rounds, steps, batch, rows):
    return rng.integers(0, rows, (rounds, steps, batch)).astype(np.int32)


def test_batches_follow_the_table_round_by_round():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    y = rng.integers(0, 3, 9).astype(np.int32)
    rows = _table(rng, 3, 2, 5, 9)
    source = replay_data_source(x, y, rows, size=7)
    state = source.init(jax.random.PRNGKey(0))
    assert int(source.call("num_examples", state)[1]) == 7
    for r in (2, 0, 1):  # rounds in any order, as a cohort schedule would give them
        state, _ = source.call("start_round", state, jnp.int32(r))
        for j in range(3):  # the third batch of a round wraps to its first
            state, (xb, yb) = source.call("next_batch", state)
            np.testing.assert_array_equal(xb, x[rows[r, j % 2]])
            np.testing.assert_array_equal(yb, y[rows[r, j % 2]])
        state, _ = source.call("reset", state)
        _, (xb, _) = source.call("next_batch", state)
        np.testing.assert_array_equal(xb, x[rows[r, 0]])


def test_each_peer_gets_its_own_data_and_table_under_vmap():
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(3, 6, 2)).astype(np.float32)
    ys = rng.integers(0, 2, (3, 6)).astype(np.int32)
    tables = np.stack([_table(rng, 2, 1, 4, 6) for _ in range(3)])
    source = replay_data_source(xs[0], ys[0], tables[0])
    states = jax.vmap(source.init)(jax.random.split(jax.random.PRNGKey(0), 3), xs, ys, tables,
                                   jnp.array([6, 5, 4]))
    states, _ = jax.vmap(lambda s: source.call("start_round", s, jnp.int32(1)))(states)
    _, (xb, _) = jax.vmap(lambda s: source.call("next_batch", s))(states)
    for i in range(3):
        np.testing.assert_array_equal(xb[i], xs[i][tables[i, 1, 0]])
    np.testing.assert_array_equal(jax.vmap(lambda s: source.call("num_examples", s)[1])(states),
                                  [6, 5, 4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=np.zeros((2, 3), np.int32)), r"int array \[rounds, steps, batch_size\]"),
    (dict(rows=np.zeros((2, 1, 3), np.float32)), "int array"),
    (dict(rows=np.zeros((0, 1, 3), np.int32)), "int array"),
    (dict(rows=np.full((1, 1, 2), 5)), r"indices outside \[0, 5\)"),
    (dict(rows=np.full((1, 1, 2), -1)), "indices outside"),
    (dict(rows=np.zeros((1, 1, 2), np.int32), size=6), "size must be at most 5"),
    (dict(rows=np.zeros((1, 1, 2), np.int32), size=0), "size must be an integer >= 1"),
])
def test_errors(kwargs, message):
    x, y = np.zeros((5, 2), np.float32), np.zeros(5, np.int32)
    with pytest.raises(ComponentError, match=message):
        replay_data_source(x, y, **kwargs)


def test_init_refuses_a_table_of_another_shape():
    source = replay_data_source(np.zeros((5, 2), np.float32), np.zeros(5, np.int32),
                                np.zeros((2, 1, 3), np.int32))
    with pytest.raises(ComponentError, match="init rows has shape"):
        source.init(jax.random.PRNGKey(0), rows=np.zeros((3, 1, 3), np.int32))
