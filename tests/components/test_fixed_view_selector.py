"""The fixed-view PeerSelector: all peers, or n distinct ones deterministic under the key."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.components import fixed_view_selector

from bbjax.errors import ComponentError

VIEW = [3, 17, 4, 99, 0, 12, 8]
N = 3
SELECTOR = fixed_view_selector(VIEW, N)
SAMPLE = jax.jit(functools.partial(SELECTOR.call, "sample"))


def _draws(state, count):
    draws = []
    for _ in range(count):
        state, peers = SAMPLE(state)
        draws.append(np.asarray(peers).tolist())
    return draws


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_samples_are_distinct_view_members_and_deterministic_under_the_key(seed):
    state = SELECTOR.init(jax.random.key(seed))
    draws = _draws(state, 4)
    for peers in draws:
        assert len(peers) == N == len(set(peers)) and set(peers) <= set(VIEW)
    assert _draws(SELECTOR.init(jax.random.key(seed)), 4) == draws
    assert len({tuple(d) for d in draws}) > 1  # the key advances


def test_samples_are_uniform_over_the_view():
    keys = jax.random.split(jax.random.key(0), 4000)
    _, peers = jax.jit(jax.vmap(lambda k: SELECTOR.call("sample", SELECTOR.init(k))))(keys)
    counts = np.array([(np.asarray(peers) == p).sum() for p in VIEW])
    expected = len(keys) * N / len(VIEW)
    assert counts.sum() == len(keys) * N
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_all_and_current_view():
    selector = fixed_view_selector(VIEW)
    state = selector.init(jax.random.key(0))
    new, peers = selector.call("sample", state)
    assert np.asarray(peers).tolist() == VIEW and new is state
    _, view = jax.jit(functools.partial(SELECTOR.call, "current_view"))(state)
    assert view.dtype == jnp.int32 and np.asarray(view).tolist() == VIEW


def test_vmap_over_per_peer_views():
    views = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    selector = fixed_view_selector([0, 1, 2, 3], 2)
    keys = jax.random.split(jax.random.key(0), len(views))
    states = jax.jit(jax.vmap(selector.init))(keys, views)
    sample = functools.partial(selector.call, "sample")
    new, peers = jax.jit(jax.vmap(sample))(states)
    for p, view in enumerate(np.asarray(views)):
        assert set(np.asarray(peers[p]).tolist()) <= set(view.tolist())
        _, alone = sample(selector.init(keys[p], views[p]))
        np.testing.assert_array_equal(peers[p], alone)
    _, current = jax.vmap(functools.partial(selector.call, "current_view"))(new)
    np.testing.assert_array_equal(current, views)


@pytest.mark.parametrize(
    "peers, n, message",
    [
        ([], None, "non-empty 1-D sequence of ints"),
        ([1.0, 2.0], None, "non-empty 1-D sequence of ints"),
        ([[1, 2]], None, "non-empty 1-D sequence of ints"),
        ([1, 2, 1], None, "distinct and >= 0"),
        ([1, -2], None, "distinct and >= 0"),
        ([1, 2], 3, r"n \(3\) exceeds the view's 2 peers"),
        ([1, 2], 0, "n must be an integer >= 1"),
    ],
)
def test_bad_arguments(peers, n, message):
    with pytest.raises(ComponentError, match=message) as info:
        fixed_view_selector(peers, n, name="view")
    assert info.value.component == "view" and info.value.role == "peer_selector"


def test_init_view_of_the_wrong_length():
    with pytest.raises(ComponentError, match=r"init peers must have shape \(7,\)"):
        SELECTOR.init(jax.random.key(0), jnp.arange(3))
