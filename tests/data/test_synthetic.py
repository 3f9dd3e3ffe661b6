import math

import numpy as np
import pytest

from bbjax.data import synthetic, synthetic_iid

from bbjax.errors import DataError


def _reference(alpha, beta, iid, num_users, seed, dimension=60, num_class=10):
    """Li et al. 2020, Section 5.1, written out example by example in the order of the
    authors' generator scripts (one legacy RandomState, seeded)."""
    rs = np.random.RandomState(seed)
    samples_per_user = rs.lognormal(4, 2, num_users).astype(int) + 50
    cov_x = np.diag([(j + 1) ** -1.2 for j in range(dimension)])
    if iid:
        w_global = rs.normal(0, 1, (dimension, num_class))
        b_global = rs.normal(0, 1, num_class)
    else:
        mean_w = rs.normal(0, alpha, num_users)  # u_k ~ N(0, alpha^2)
        big_b = rs.normal(0, beta, num_users)  # B_k ~ N(0, beta^2)
        mean_x = [rs.normal(big_b[i], 1, dimension) for i in range(num_users)]  # v_k
    xs, ys = [], []
    for i in range(num_users):
        if iid:
            w, b, mean = w_global, b_global, np.zeros(dimension)
        else:
            w = rs.normal(mean_w[i], 1, (dimension, num_class))
            b = rs.normal(mean_w[i], 1, num_class)
            mean = mean_x[i]
        x = rs.multivariate_normal(mean, cov_x, samples_per_user[i])
        labels = []
        for row in x:
            logits = row @ w + b
            softmax = np.exp(logits) / np.sum(np.exp(logits))
            labels.append(int(np.argmax(softmax)))
        xs.append(x)
        ys.append(np.array(labels))
    return xs, ys


@pytest.mark.parametrize(
    "alpha,beta,iid,seed", [(1.0, 1.0, False, 0), (0.5, 0.5, False, 3), (0.0, 0.0, False, 1),
                            (0.0, 0.0, True, 2)]
)
def test_matches_the_paper_generator(alpha, beta, iid, seed):
    data = synthetic_iid(6, seed) if iid else synthetic(alpha, beta, 6, seed)
    xs, ys = _reference(alpha, beta, iid, 6, seed)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int32
    assert data.x.shape == (6, max(map(len, xs)), 60)
    for i in range(6):
        x, y = data.client(i)
        np.testing.assert_array_equal(x, xs[i].astype(np.float32))
        np.testing.assert_array_equal(y, ys[i])


def test_smaller_shapes_and_size_cap():
    data = synthetic(1.0, 1.0, 7, 5, num_features=3, num_classes=4, max_size=80)
    full = synthetic(1.0, 1.0, 7, 5, num_features=3, num_classes=4)
    assert data.x.shape[2:] == (3,) and data.y.max() < 4
    np.testing.assert_array_equal(data.sizes, np.minimum(full.sizes, 80))
    assert data.max_size == min(80, full.max_size)
    xs, ys = _reference(1.0, 1.0, False, 7, 5, dimension=3, num_class=4)
    for i in range(7):
        np.testing.assert_array_equal(full.client(i)[1], ys[i])


def test_deterministic_in_the_seed():
    a, b, c = synthetic(1, 1, 5, 9), synthetic(1, 1, 5, 9), synthetic(1, 1, 5, 10)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.sizes, c.sizes)


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_sizes_follow_the_lognormal_power_law():
    n = 3000  # the cap at 500 keeps the padding small and changes no size below 450
    sizes = synthetic_iid(n, 0, num_features=1, num_classes=2, max_size=500).sizes
    assert sizes.min() >= 50
    extra = sizes.astype(np.int64) - 50  # floor(L), L ~ LogNormal(4, 2)
    for t in (5, 20, 55, 150, 400):
        want = _phi((math.log(t) - 4) / 2)  # P(floor(L) < t) = P(L < t) for integer t
        got = np.mean(extra < t)
        assert abs(got - want) < 5 * math.sqrt(want * (1 - want) / n), (t, got, want)


def _label_skew(data, num_classes=10):
    """Mean total-variation distance of each client's label distribution from the pooled one."""
    pooled = np.bincount(data.y[data.mask], minlength=num_classes) / data.sizes.sum()
    return np.mean([
        0.5 * np.abs(np.bincount(data.client(i)[1], minlength=num_classes) / n - pooled).sum()
        for i, n in enumerate(data.sizes)
    ])


def test_labels_are_skewed_unless_iid():
    iid = [_label_skew(synthetic_iid(30, s)) for s in range(3)]
    skewed = [_label_skew(synthetic(1.0, 1.0, 30, s)) for s in range(3)]
    assert max(iid) < 0.2 < 0.4 < min(skewed), (iid, skewed)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(beta=float("inf")), "beta"),
        (dict(beta=True), "beta"),
        (dict(num_clients=0), "num_clients"),
        (dict(num_clients=2.0), "num_clients"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**32), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(num_features=0), "num_features"),
        (dict(num_classes=-2), "num_classes"),
        (dict(max_size=0), "max_size"),
    ],
)
def test_argument_errors(kwargs, name):
    args = dict(alpha=1.0, beta=1.0, num_clients=3, seed=0) | kwargs
    with pytest.raises(DataError, match=name):
        synthetic(**args)
    if name not in ("alpha", "beta"):
        args.pop("alpha"), args.pop("beta")
        with pytest.raises(DataError, match=name):
            synthetic_iid(**args)
