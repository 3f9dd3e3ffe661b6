import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.data import FederatedData, epoch_batches, sample_batch

from bbjax.errors import DataError

MAX_SIZE, BATCH = 12, 5


def _ids_data(sizes, pad_to=MAX_SIZE):
    """Client i's example j has x = y = 1000 i + j + 1 (ids > 0; padding is 0)."""
    xs = [1000 * i + np.arange(1, n + 1, dtype=np.float32)[:, None] for i, n in enumerate(sizes)]
    ys = [a[:, 0].astype(np.int32) for a in xs]
    return FederatedData.from_clients(xs, ys, pad_to=pad_to)


sample_all = jax.jit(jax.vmap(functools.partial(sample_batch, batch_size=BATCH)))
epoch_all = jax.jit(jax.vmap(functools.partial(epoch_batches, batch_size=BATCH)))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, MAX_SIZE), min_size=4, max_size=4), st.integers(0, 2**31 - 1))
def test_sample_batch_draws_distinct_real_examples(sizes, seed):
    data = _ids_data(sizes)
    batch = sample_all(jax.random.split(jax.random.key(seed), 4), data)
    assert batch.x.shape == (4, BATCH, 1) and batch.y.shape == (4, BATCH)
    assert batch.mask.dtype == jnp.bool_
    for i, n in enumerate(sizes):
        ids = np.asarray(batch.y[i])
        mask = np.asarray(batch.mask[i])
        np.testing.assert_array_equal(mask, np.arange(BATCH) < min(n, BATCH))
        real = ids[mask]
        assert len(set(real.tolist())) == len(real)  # no repeats
        assert ((real > 1000 * i) & (real <= 1000 * i + n)).all()  # only this client's real rows
        assert (ids[~mask] == 0).all() and (np.asarray(batch.x[i])[~mask] == 0).all()
        np.testing.assert_array_equal(np.asarray(batch.x[i])[:, 0], ids)
        if n <= BATCH:
            assert sorted(real.tolist()) == list(range(1000 * i + 1, 1000 * i + n + 1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, MAX_SIZE), min_size=4, max_size=4), st.integers(0, 2**31 - 1))
def test_epoch_batches_visit_every_real_example_once(sizes, seed):
    data = _ids_data(sizes)
    batches = epoch_all(jax.random.split(jax.random.key(seed), 4), data)
    num_batches = -(-MAX_SIZE // BATCH)
    assert batches.x.shape == (4, num_batches, BATCH, 1)
    assert batches.mask.shape == (4, num_batches, BATCH)
    for i, n in enumerate(sizes):
        ids = np.asarray(batches.y[i]).ravel()
        mask = np.asarray(batches.mask[i]).ravel()
        np.testing.assert_array_equal(mask, np.arange(num_batches * BATCH) < n)
        assert sorted(ids[mask].tolist()) == list(range(1000 * i + 1, 1000 * i + n + 1))
        assert (ids[~mask] == 0).all()


def test_sample_batch_is_uniform_over_real_examples():
    data = _ids_data([10])
    one = jax.tree.map(lambda a: a[0], data)
    draws = jax.jit(jax.vmap(sample_batch, (0, None, None)), static_argnums=2)(
        jax.random.split(jax.random.key(0), 4000), one, 3
    )
    counts = np.bincount(np.asarray(draws.y).ravel(), minlength=11)
    assert counts[0] == 0
    expected = 4000 * 3 / 10  # each draw holds 3 of the 10, all equally likely
    sd = np.sqrt(4000 * 0.3 * 0.7)
    assert np.all(np.abs(counts[1:] - expected) < 5 * sd), counts
    # every position of the batch is uniform too (random order)
    first = np.bincount(np.asarray(draws.y[:, 0]), minlength=11)[1:]
    assert np.all(np.abs(first - 400) < 5 * np.sqrt(4000 * 0.1 * 0.9)), first


def test_batch_larger_than_padded_size():
    data = _ids_data([2, 3], pad_to=3)
    batch = jax.vmap(functools.partial(sample_batch, batch_size=8))(
        jax.random.split(jax.random.key(0), 2), data
    )
    np.testing.assert_array_equal(batch.mask.sum(axis=1), [2, 3])
    assert batch.x.shape == (2, 8, 1) and not np.asarray(batch.y)[~np.asarray(batch.mask)].any()
    epoch = jax.vmap(functools.partial(epoch_batches, batch_size=8))(
        jax.random.split(jax.random.key(0), 2), data
    )
    assert epoch.x.shape == (2, 1, 8, 1)
    np.testing.assert_array_equal(epoch.mask.sum(axis=(1, 2)), [2, 3])


def test_needs_one_client_and_a_valid_batch_size():
    data = _ids_data([2, 3])
    for fn in (sample_batch, epoch_batches):
        with pytest.raises(DataError, match="one client"):
            fn(jax.random.key(0), data, 2)
        for bad in (0, -1, 2.0):
            with pytest.raises(DataError, match="batch_size"):
                fn(jax.random.key(0), jax.tree.map(lambda a: a[0], data), bad)
