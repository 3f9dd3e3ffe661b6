import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.selection import cohort_mask, select_all, select_available, select_by_tags, select_fraction

from bbjax.errors import SelectionError


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _assert_well_formed(cohort, num_clients, cohort_size):
    idx, valid = np.asarray(cohort.indices), np.asarray(cohort.valid)
    assert idx.shape == valid.shape == (cohort_size,)
    assert idx.dtype == np.int32
    assert len(set(idx.tolist())) == cohort_size
    assert ((0 <= idx) & (idx < num_clients)).all()
    n_valid = int(valid.sum())
    assert valid[:n_valid].all() and not valid[n_valid:].any()
    assert (np.diff(idx[:n_valid]) > 0).all()


def _inclusion_within_5_sigma(freq, p, samples):
    sigma = np.sqrt(p * (1 - p) / samples)
    np.testing.assert_array_less(np.abs(freq - p), 5 * sigma + 1e-12)


def test_select_all_is_everyone():
    cohort = select_all(7).select(jax.random.key(0))
    np.testing.assert_array_equal(cohort.indices, np.arange(7))
    assert np.asarray(cohort.valid).all()


@pytest.mark.parametrize(
    "num_clients,fraction,size", [(10, 0.3, 3), (100, 0.05, 5), (7, 1.0, 7), (5, 0.01, 1)]
)
def test_fraction_cohort_size(num_clients, fraction, size):
    assert select_fraction(num_clients, fraction).cohort_size == size


def test_fraction_samples_clients_uniformly_and_deterministically():
    samples, num_clients = 4000, 10
    selector = select_fraction(num_clients, 0.3)
    keys = _keys(samples)
    cohorts = jax.jit(jax.vmap(selector.select))(keys)
    first = selector.select(keys[0])
    np.testing.assert_array_equal(cohorts.indices[0], first.indices)
    _assert_well_formed(first, num_clients, 3)
    assert len({tuple(row) for row in np.asarray(cohorts.indices[:20]).tolist()}) > 1
    masks = np.asarray(jax.vmap(cohort_mask, (0, None))(cohorts, num_clients))
    assert (masks.sum(axis=1) == 3).all()
    _inclusion_within_5_sigma(masks.mean(axis=0), 0.3, samples)


def test_cohort_mask_marks_valid_clients_only():
    tags = np.array([[True], [False], [True], [False]])
    cohort = select_by_tags(tags, [0], cohort_size=3).select(jax.random.key(0))
    np.testing.assert_array_equal(cohort_mask(cohort, 4), [True, False, True, False])


def test_by_tags_selects_exactly_the_eligible_clients():
    rng = np.random.default_rng(0)
    tags = rng.random((40, 4)) < 0.6
    eligible = np.flatnonzero(tags[:, 1] & tags[:, 3])
    cohort = select_by_tags(tags, [1, 3]).select(jax.random.key(0))
    _assert_well_formed(cohort, 40, 40)
    np.testing.assert_array_equal(np.asarray(cohort.indices)[np.asarray(cohort.valid)], eligible)


@pytest.mark.parametrize("cohort_size", [3, 30])
def test_by_tags_with_cohort_size_samples_among_eligible(cohort_size):
    rng = np.random.default_rng(1)
    tags = rng.random((40, 3)) < 0.5
    eligible = set(np.flatnonzero(tags[:, 0]).tolist())
    selector = select_by_tags(tags, [0], cohort_size)
    cohorts = jax.vmap(selector.select)(_keys(50))
    for idx, valid in zip(np.asarray(cohorts.indices), np.asarray(cohorts.valid)):
        chosen = idx[valid]
        assert set(chosen.tolist()) <= eligible
        assert len(chosen) == min(cohort_size, len(eligible))


def test_available_clients_follow_their_probabilities():
    samples = 4000
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    selector = select_available(5, p)
    cohorts = jax.jit(jax.vmap(selector.select))(_keys(samples, seed=2))
    masks = np.asarray(jax.vmap(cohort_mask, (0, None))(cohorts, 5))
    _inclusion_within_5_sigma(masks.mean(axis=0), p, samples)


def test_available_with_cohort_size_takes_online_clients_only():
    p = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    cohorts = jax.vmap(select_available(6, p, cohort_size=2).select)(_keys(30))
    for idx, valid in zip(np.asarray(cohorts.indices), np.asarray(cohorts.valid)):
        assert valid.all() and set(idx.tolist()) <= {0, 2, 4, 5}


def test_availability_can_depend_on_the_round():
    def diurnal(round_index):
        even = (round_index % 2 == 0).astype(jnp.float32)
        return jnp.array([1.0, 0.0, 1.0, 0.0]) * even + jnp.array([0.0, 1.0, 0.0, 1.0]) * (1 - even)

    selector = select_available(4, diurnal)
    select = jax.jit(selector.select)
    for round_index, online in [(0, [0, 2]), (1, [1, 3]), (6, [0, 2])]:
        cohort = select(jax.random.key(round_index), round_index)
        assert np.asarray(cohort.indices)[np.asarray(cohort.valid)].tolist() == online


FRACTION_SELECTORS = [select_fraction(n, f) for n, f in [(1, 0.5), (9, 0.4), (40, 0.05), (40, 1.0)]]


@given(selector=st.sampled_from(FRACTION_SELECTORS), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_fraction_cohorts_are_well_formed(selector, seed):
    _assert_well_formed(
        selector.select(jax.random.key(seed)), selector.num_clients, selector.cohort_size
    )


@given(num_clients=st.integers(1, 10_000), fraction=st.floats(0.0, 1.0, exclude_min=True))
@settings(max_examples=30, deadline=None)
def test_fraction_cohort_size_rule(num_clients, fraction):
    size = select_fraction(num_clients, fraction).cohort_size
    assert size == max(1, round(fraction * num_clients)) and 1 <= size <= num_clients


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: select_fraction(10, 0.0), "fraction"),
        (lambda: select_fraction(10, 1.5), "fraction"),
        (lambda: select_fraction(0, 0.5), "num_clients"),
        (lambda: select_all(-3), "num_clients"),
        (lambda: select_by_tags(np.ones((4, 2), bool), [2]), "required tags"),
        (lambda: select_by_tags(np.ones((4, 2), int), [0]), "client_tags"),
        (lambda: select_by_tags(np.zeros((4, 2), bool), [0]), "no client"),
        (lambda: select_by_tags(np.ones((4, 2), bool), [0], cohort_size=5), "cohort_size"),
        (lambda: select_available(3, [0.5, 1.2, 0.1]), r"\[0, 1\]"),
        (lambda: select_available(3, [0.5, 0.5]), "shape"),
        (lambda: select_available(3, lambda r: jnp.ones(4)), "shape"),
        (lambda: select_available(3, [0.5] * 3, cohort_size=0), "cohort_size"),
    ],
)
def test_bad_parameters_raise_selection_error(build, match):
    with pytest.raises(SelectionError, match=match):
        build()
