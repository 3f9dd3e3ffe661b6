import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.data import partition

from bbjax.errors import DataError
from bbjax.data.keys import numpy_rng


def _dataset(num_examples, num_classes, seed=0):
    """x = example id (so the partition can be read back), y = random class labels."""
    y = np.random.default_rng(seed).integers(0, num_classes, num_examples)
    return np.arange(num_examples, dtype=np.int64)[:, None], y


def _parts(data):
    """Each client's example ids."""
    return [data.client(i)[0][:, 0] for i in range(data.num_clients)]


def _assert_exact_cover(data, x, y):
    ids = np.concatenate(_parts(data))
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(x)))  # each example exactly once
    for i, part in enumerate(_parts(data)):
        assert np.all(np.diff(part) > 0)  # a client keeps dataset order
        np.testing.assert_array_equal(data.client(i)[1], y[part])  # labels travel with examples


def _label_skew(data, num_classes):
    """Mean total-variation distance between each client's label distribution and the pooled one."""
    pooled = np.bincount(data.y[data.mask], minlength=num_classes) / data.sizes.sum()
    tv = []
    for i in range(data.num_clients):
        local = np.bincount(data.client(i)[1], minlength=num_classes) / data.sizes[i]
        tv.append(0.5 * np.abs(local - pooled).sum())
    return float(np.mean(tv))


PARTITIONERS = {
    "iid": lambda key, x, y, c: partition.iid(key, x, y, c),
    "dirichlet": lambda key, x, y, c: partition.dirichlet(key, x, y, c, 0.3, min_size=1),
    "shards": lambda key, x, y, c: partition.shards(key, x, y, c, 2),
    "quantity_skew": lambda key, x, y, c: partition.quantity_skew(key, x, y, c, 0.5, min_size=1),
}


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
@settings(max_examples=15, deadline=None)
@given(num_examples=st.integers(20, 120), num_clients=st.integers(1, 10), seed=st.integers(0, 99))
def test_every_example_assigned_exactly_once(name, num_examples, num_clients, seed):
    x, y = _dataset(num_examples, 4, seed)
    data = PARTITIONERS[name](jax.random.key(seed), x, y, num_clients)
    assert data.num_clients == num_clients
    _assert_exact_cover(data, x, y)


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_deterministic_under_the_key(name):
    x, y = _dataset(300, 5)
    a = PARTITIONERS[name](jax.random.key(7), x, y, 6)
    b = PARTITIONERS[name](jax.random.key(7), x, y, 6)
    c = PARTITIONERS[name](jax.random.PRNGKey(8), x, y, 6)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(_parts(a), _parts(c)))


def test_iid_sizes_are_balanced():
    x, y = _dataset(103, 3)
    data = partition.iid(jax.random.key(0), x, y, 10)
    np.testing.assert_array_equal(data.sizes, [11, 11, 11] + [10] * 7)


def _reference_dirichlet(key, y, num_clients, alpha, min_size):
    """The documented algorithm, written out per class (NIID-Bench / FedLab style)."""
    rng = numpy_rng(key)
    while True:
        batches = [[] for _ in range(num_clients)]
        for k in np.unique(y):
            idx_k = rng.permutation(np.flatnonzero(y == k))
            p = rng.dirichlet(np.repeat(alpha, num_clients))
            p = np.array([pj * (len(b) < len(y) / num_clients) for pj, b in zip(p, batches)])
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(int)[:-1]
            batches = [b + list(piece) for b, piece in zip(batches, np.split(idx_k, cuts))]
        if min(len(b) for b in batches) >= min_size:
            return [np.sort(b) for b in batches]


def _reference_quantity_skew(key, num_examples, num_clients, alpha, min_size):
    rng = numpy_rng(key)
    idxs = rng.permutation(num_examples)
    p = rng.dirichlet(np.repeat(alpha, num_clients))
    rest = num_examples - num_clients * min_size
    bounds = [0] + list((np.cumsum(p) * rest).astype(int)[:-1]) + [rest]
    pieces, start = [], 0
    for j in range(num_clients):
        size = min_size + bounds[j + 1] - bounds[j]
        pieces.append(np.sort(idxs[start:start + size]))
        start += size
    return pieces


@pytest.mark.parametrize("alpha,min_size", [(0.1, 10), (1.0, 10), (5.0, 0)])
def test_dirichlet_follows_its_documented_algorithm(alpha, min_size):
    x, y = _dataset(2000, 10)
    key = jax.random.key(3)
    data = partition.dirichlet(key, x, y, 20, alpha, min_size=min_size)
    expected = _reference_dirichlet(key, y, 20, alpha, min_size)
    for got, want in zip(_parts(data), expected):
        np.testing.assert_array_equal(got, want)
    assert data.sizes.min() >= min_size


@pytest.mark.parametrize("alpha,min_size", [(0.3, 10), (0.05, 3), (2.0, 0)])
def test_quantity_skew_follows_its_documented_algorithm(alpha, min_size):
    key = jax.random.key(4)
    x, y = _dataset(1500, 3)
    data = partition.quantity_skew(key, x, y, 15, alpha, min_size=min_size)
    for got, want in zip(_parts(data), _reference_quantity_skew(key, 1500, 15, alpha, min_size)):
        np.testing.assert_array_equal(got, want)
    assert data.sizes.min() >= min_size


def test_dirichlet_skew_grows_as_alpha_shrinks():
    x, y = _dataset(5000, 10)
    skew = [
        np.mean([_label_skew(partition.dirichlet(jax.random.key(s), x, y, 20, a), 10)
                 for s in range(3)])
        for a in (100.0, 1.0, 0.1)
    ]
    assert skew[0] < 0.1 < skew[1] < skew[2], skew
    assert skew[2] > 0.6, skew
    iid_skew = _label_skew(partition.iid(jax.random.key(0), x, y, 20), 10)
    assert iid_skew < 0.1 and skew[1] > 2 * iid_skew


def test_shards_give_each_client_its_label_blocks():
    x, y = _dataset(1003, 10)
    num_clients, per_client = 20, 3
    data = partition.shards(jax.random.key(0), x, y, num_clients, per_client)
    _assert_exact_cover(data, x, y)
    # position of every example in the label-sorted order, and the shard of each position
    position = np.empty(len(y), int)
    position[np.argsort(y, kind="stable")] = np.arange(len(y))
    shard_of = np.concatenate(
        [np.full(len(s), j) for j, s in enumerate(np.array_split(np.arange(len(y)), 60))]
    )
    shard_sizes = np.bincount(shard_of)
    seen = set()
    for part in _parts(data):
        owned = shard_of[position[part]]
        shards, counts = np.unique(owned, return_counts=True)
        assert len(shards) == per_client  # exactly shards_per_client blocks ...
        np.testing.assert_array_equal(counts, shard_sizes[shards])  # ... each one whole
        seen.update(shards.tolist())
    assert seen == set(range(60))


def test_shards_with_one_class_per_shard():
    y = np.repeat(np.arange(10), 60)  # 10 classes x 60 = 600 examples, 20 shards of 30
    x = np.arange(600)[:, None]
    data = partition.shards(jax.random.key(1), x, y, 10, 2)
    for i in range(10):
        assert len(np.unique(data.client(i)[1])) <= 2
    np.testing.assert_array_equal(data.sizes, 60)


def test_quantity_skew_sizes():
    x, y = _dataset(4000, 5)
    spread = []
    for alpha in (0.2, 1.0, 100.0):
        data = partition.quantity_skew(jax.random.key(0), x, y, 20, alpha)
        assert data.sizes.sum() == 4000 and data.sizes.min() >= 10
        spread.append(data.sizes.std() / data.sizes.mean())
    assert spread[0] > spread[1] > spread[2], spread
    assert spread[2] < 0.2 and spread[0] > 1.0, spread
    # examples are drawn at random, so labels are close to the pooled distribution
    assert _label_skew(partition.quantity_skew(jax.random.key(0), x, y, 10, 10.0), 5) < 0.1


def test_argument_errors():
    x, y = _dataset(40, 4)
    key = jax.random.key(0)
    calls = {
        "iid": lambda **kw: partition.iid(key, kw.get("x", x), kw.get("y", y),
                                          kw.get("num_clients", 4)),
        "dirichlet": lambda **kw: partition.dirichlet(
            key, kw.get("x", x), kw.get("y", y), kw.get("num_clients", 4), kw.get("alpha", 1.0),
            min_size=kw.get("min_size", 1)),
        "shards": lambda **kw: partition.shards(
            key, kw.get("x", x), kw.get("y", y), kw.get("num_clients", 4),
            kw.get("shards_per_client", 2)),
        "quantity_skew": lambda **kw: partition.quantity_skew(
            key, kw.get("x", x), kw.get("y", y), kw.get("num_clients", 4), kw.get("alpha", 1.0),
            min_size=kw.get("min_size", 1)),
    }
    for name, call in calls.items():
        for bad in (0, -1, 2.0, True, 41):
            with pytest.raises(DataError, match="num_clients"):
                call(num_clients=bad)
        with pytest.raises(DataError, match="y"):
            call(y=y[:-1])
        with pytest.raises(DataError, match="x"):
            call(x=x[:0], y=y[:0])
        with pytest.raises(DataError, match="x"):
            call(x=np.array(["a"] * 40))
        if name in ("dirichlet", "shards"):
            with pytest.raises(DataError, match="y must be 1-D integer"):
                call(y=y.astype(float))
            with pytest.raises(DataError, match="y must be 1-D integer"):
                call(y=np.stack([y, y], axis=1))
        if name in ("dirichlet", "quantity_skew"):
            for bad in (0, -1.0, float("inf"), float("nan"), True):
                with pytest.raises(DataError, match="alpha"):
                    call(alpha=bad)
            for bad in (-1, 1.5, 11):  # 11 * 4 > 40 examples
                with pytest.raises(DataError, match="min_size"):
                    call(min_size=bad)
    for bad in (0, 1.0, 11):  # 11 * 4 shards > 40 examples
        with pytest.raises(DataError, match="shards_per_client"):
            calls["shards"](shards_per_client=bad)


def test_dirichlet_unreachable_min_size_raises():
    x, y = _dataset(40, 1)  # one class: Dir(0.01) gives (almost) all of it to one client
    with pytest.raises(DataError, match="min_size"):
        partition.dirichlet(jax.random.key(0), x, y, 4, 0.01, min_size=5)


def test_quantity_skew_reserves_min_size():
    x, y = _dataset(1000, 2)
    data = partition.quantity_skew(jax.random.key(0), x, y, 100, 0.01, min_size=10)
    np.testing.assert_array_equal(data.sizes, 10)  # nothing left to skew
    data = partition.quantity_skew(jax.random.key(0), x, y, 100, 0.01, min_size=5)
    assert data.sizes.min() == 5 and data.sizes.max() > 100
