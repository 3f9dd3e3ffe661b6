"""padded_data_source: batches of real rows only, epochs, per-peer sizes under vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.components import padded_data_source

from bbjax.errors import ComponentError


def _padded(size: int, max_size: int = 12):
    x = np.zeros((max_size, 2), np.float32)
    x[:size, 0] = np.arange(1, size + 1)  # real rows are numbered 1..size, padding is 0
    y = np.zeros(max_size, np.int32)
    y[:size] = np.arange(1, size + 1)
    return x, y


def _batches(source, state, count):
    step = jax.jit(lambda s: source.call("next_batch", s))
    rows = []
    for _ in range(count):
        state, (x, y) = step(state)
        np.testing.assert_array_equal(np.asarray(x[:, 0]).astype(int), np.asarray(y))
        rows.append(np.asarray(y))
    return state, rows


@pytest.mark.parametrize("size, batch", [(7, 3), (5, 5), (4, 6), (12, 4)])
def test_every_batch_holds_only_real_rows_and_each_epoch_covers_them_all(size, batch):
    source = padded_data_source(*_padded(size), size=size, batch_size=batch)
    state = source.init(jax.random.PRNGKey(size))
    per_epoch = -(-size // batch)
    state, rows = _batches(source, state, 3 * per_epoch)
    for epoch in range(3):
        seen = np.concatenate(rows[epoch * per_epoch:(epoch + 1) * per_epoch])
        assert seen.min() >= 1 and seen.max() <= size  # never a padding row
        assert set(seen.tolist()) == set(range(1, size + 1))
        assert len(seen) == per_epoch * batch
    assert int(state.epoch) == 2


def test_one_component_serves_clients_of_different_sizes_under_vmap():
    sizes = np.array([3, 9, 12], np.int32)
    xs, ys = zip(*[_padded(int(n)) for n in sizes])
    source = padded_data_source(xs[0], ys[0], size=3, batch_size=4)
    states = jax.vmap(source.init)(jax.random.split(jax.random.PRNGKey(0), 3),
                                   np.stack(xs), np.stack(ys), sizes)
    _, counts = jax.vmap(lambda s: source.call("num_examples", s))(states)
    np.testing.assert_array_equal(counts, sizes)
    states, (_, y) = jax.jit(jax.vmap(lambda s: source.call("next_batch", s)))(states)
    for i, n in enumerate(sizes):
        assert 1 <= y[i].min() and y[i].max() <= n


def test_reset_starts_a_new_epoch():
    source = padded_data_source(*_padded(6), size=6, batch_size=2)
    state, _ = _batches(source, source.init(jax.random.PRNGKey(1)), 1)
    state, () = source.call("reset", state)
    assert int(state.epoch) == 1 and int(state.position) == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=0, batch_size=2), "size must be an integer >= 1"),
    (dict(size=13, batch_size=2), r"size \(13\) exceeds the 12 rows"),
    (dict(size=4, batch_size=0), "batch_size must be an integer >= 1"),
])
def test_errors(kwargs, message):
    with pytest.raises(ComponentError, match=message):
        padded_data_source(*_padded(4), **kwargs)


def test_mismatched_leading_axes_are_rejected():
    with pytest.raises(ComponentError, match="one shared, non-empty leading axis"):
        padded_data_source(np.zeros((5, 2)), np.zeros(4, np.int32), size=3, batch_size=2)


def test_array_data_source_reports_its_example_count():
    from bbjax.components import array_data_source
    source = array_data_source(jnp.zeros((9, 2)), jnp.zeros(9, jnp.int32), batch_size=3)
    assert int(source.call("num_examples", source.init(jax.random.PRNGKey(0)))[1]) == 9
