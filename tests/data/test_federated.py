import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.data import FederatedData, train_test_split

from bbjax.errors import DataError
from bbjax.errors import BbjaxError


def _check_layout(data, xs, ys):
    """``data`` is ``xs``/``ys`` stacked: shapes, dtypes, mask, zero padding, contents."""
    sizes = [len(a) for a in xs]
    assert data.num_clients == len(xs)
    assert data.x.shape == (len(xs), data.max_size) + xs[0].shape[1:]
    assert data.y.shape == (len(xs), data.max_size) + ys[0].shape[1:]
    assert data.sizes.dtype == np.int32 and data.mask.dtype == bool
    np.testing.assert_array_equal(data.sizes, sizes)
    np.testing.assert_array_equal(data.mask, np.arange(data.max_size) < np.array(sizes)[:, None])
    assert not data.x[~data.mask].any() and not data.y[~data.mask].any()
    for i in range(len(xs)):
        x, y = data.client(i)
        np.testing.assert_array_equal(x, xs[i])
        np.testing.assert_array_equal(y, ys[i])
        assert x.dtype == xs[i].dtype and y.dtype == ys[i].dtype


clients = st.tuples(
    st.lists(st.integers(0, 6), min_size=1, max_size=5),  # client sizes
    st.lists(st.integers(1, 3), max_size=2),  # feature shape
    st.integers(0, 3),  # extra padding
    st.integers(0, 2**31 - 1),  # seed
)


@settings(max_examples=40, deadline=None)
@given(clients)
def test_from_clients_layout(case):
    sizes, feature_shape, extra, seed = case
    rng = np.random.default_rng(seed)
    xs = [rng.integers(1, 100, (n, *feature_shape)).astype(np.float32) for n in sizes]
    ys = [rng.integers(1, 10, n).astype(np.int64) for n in sizes]
    data = FederatedData.from_clients(xs, ys, pad_to=max(sizes) + extra)
    assert data.max_size == max(sizes) + extra
    _check_layout(data, xs, ys)
    _check_layout(FederatedData.from_clients(xs, ys), xs, ys)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_from_indices_layout(num_examples, num_clients, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_examples, 2)).astype(np.float32)
    y = rng.integers(0, 5, (num_examples, 3))
    indices = [rng.integers(0, num_examples, rng.integers(0, 7)) for _ in range(num_clients)]
    data = FederatedData.from_indices(x, y, indices)
    _check_layout(data, [x[i] for i in indices], [y[i] for i in indices])


def test_is_a_pytree_that_jits():
    data = FederatedData.from_clients([np.ones((2, 3)), np.ones((1, 3))], [np.zeros(2), np.ones(1)])
    assert len(jax.tree.leaves(data)) == 4
    total = jax.jit(lambda d: (d.x.sum(axis=(1, 2)), d.sizes.sum()))(data)
    np.testing.assert_array_equal(total[0], [6.0, 3.0])
    assert int(total[1]) == 3


def test_from_clients_errors():
    ok_x, ok_y = np.zeros((2, 3)), np.zeros(2)
    cases = [
        (([], []), "xs"),
        (([ok_x], []), "ys"),
        (([ok_x, np.zeros((2, 4))], [ok_y, ok_y]), r"xs\[1\]"),
        (([ok_x, ok_x.astype(np.float32)], [ok_y, ok_y]), r"xs\[1\]"),
        (([ok_x, ok_x], [ok_y, np.zeros((2, 1))]), r"ys\[1\]"),
        (([ok_x, ok_x], [ok_y, np.zeros(3)]), r"ys\[1\]"),
        (([np.float64(1.0)], [np.float64(1.0)]), r"xs\[0\]"),
        (([np.array([["a"]])], [ok_y[:1]]), r"xs\[0\]"),
    ]
    for (xs, ys), name in cases:
        with pytest.raises(DataError, match=name):
            FederatedData.from_clients(xs, ys)
    for pad_to in (1, -1, 2.5, True):
        with pytest.raises(DataError, match="pad_to"):
            FederatedData.from_clients([ok_x], [ok_y], pad_to=pad_to)
    assert issubclass(DataError, BbjaxError)


def test_from_indices_errors():
    x, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(DataError, match="indices"):
        FederatedData.from_indices(x, y, [])
    with pytest.raises(DataError, match=r"indices\[1\]"):
        FederatedData.from_indices(x, y, [[0], [4]])
    with pytest.raises(DataError, match=r"indices\[0\]"):
        FederatedData.from_indices(x, y, [[-1]])
    with pytest.raises(DataError, match=r"indices\[0\]"):
        FederatedData.from_indices(x, y, [[0.5]])
    with pytest.raises(DataError, match="y"):
        FederatedData.from_indices(x, y[:3], [[0]])
    with pytest.raises(DataError, match="x"):
        FederatedData.from_indices(x[:0], y[:0], [[0]])


def test_client_index_errors():
    data = FederatedData.from_clients([np.zeros((1, 1))], [np.zeros(1)])
    for i in (1, -1, 0.0, True):
        with pytest.raises(DataError, match="client index"):
            data.client(i)


def test_train_test_split_partitions_each_client():
    xs = [np.arange(n, dtype=np.float32)[:, None] + 100 * i for i, n in enumerate([0, 1, 7, 50])]
    ys = [np.full(len(a), i) for i, a in enumerate(xs)]
    data = FederatedData.from_clients(xs, ys, pad_to=60)
    train, test = train_test_split(jax.random.key(0), data, 0.2)
    np.testing.assert_array_equal(train.sizes, [0, 0, 5, 40])  # floor(0.8 n)
    np.testing.assert_array_equal(test.sizes, [0, 1, 2, 10])
    assert train.max_size == 40 and test.max_size == 10
    for i in range(4):
        (xa, ya), (xb, yb) = train.client(i), test.client(i)
        np.testing.assert_array_equal(np.sort(np.concatenate([xa, xb]), axis=0), xs[i])
        assert (np.concatenate([ya, yb]) == i).all()
    # deterministic under the key, different for another key
    again = train_test_split(jax.random.key(0), data, 0.2)[0]
    np.testing.assert_array_equal(again.x, train.x)
    other = train_test_split(jax.random.key(1), data, 0.2)[0]
    assert not np.array_equal(other.x, train.x)
    # the paper's 90/10 default
    assert train_test_split(jax.random.key(0), data)[0].sizes.tolist() == [0, 0, 6, 45]


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5, float("nan"), True])
def test_train_test_split_fraction_error(fraction):
    data = FederatedData.from_clients([np.zeros((2, 1))], [np.zeros(2)])
    with pytest.raises(DataError, match="test_fraction"):
        train_test_split(jax.random.key(0), data, fraction)
