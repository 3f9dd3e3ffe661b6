"""The brute-force top-k Index against a numpy reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.components import Status, topk_index

from bbjax.errors import ComponentError

CAPACITY, DIM, K = 5, 3, 3
INDEXES = {metric: topk_index(CAPACITY, DIM, K, metric) for metric in ("cosine", "dot")}
CALLS = {
    (metric, method): jax.jit(functools.partial(index.call, method))
    for metric, index in INDEXES.items()
    for method in ("add", "search", "remove")
}


def _scores(vectors, query, metric):
    vectors, query = np.asarray(vectors, np.float64), np.asarray(query, np.float64)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        query = query / max(np.linalg.norm(query), 1e-12)
    return vectors @ query


coordinate = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0])
vector = st.lists(coordinate, min_size=DIM, max_size=DIM).map(lambda v: np.asarray(v, np.float32))
operation = st.one_of(
    st.tuples(st.just("add"), vector),
    st.tuples(st.just("remove"), st.integers(-1, 8)),
    st.tuples(st.just("search"), vector),
)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@settings(max_examples=25, deadline=None)
@given(operations=st.lists(operation, max_size=14))
def test_matches_the_numpy_reference(metric, operations):
    state = INDEXES[metric].init(jax.random.key(0))
    stored, next_id = {}, 0
    for method, arg in operations:
        state, out = CALLS[metric, method](state, arg)
        if method == "add":
            if len(stored) == CAPACITY:
                assert int(out) == -1 and int(state.status) == Status.FULL
            else:
                assert int(out) == next_id and int(state.status) == Status.OK
                stored[next_id] = arg
                next_id += 1
        elif method == "remove":
            assert out == ()
            assert int(state.status) == (Status.OK if arg in stored else Status.UNKNOWN_ID)
            stored.pop(arg, None)
        else:
            ids, scores = np.asarray(out[0]), np.asarray(out[1])
            assert ids.shape == scores.shape == (K,) and ids.dtype == np.int32
            want = np.full(K, -np.inf)
            if stored:
                ref = dict(zip(stored, _scores(list(stored.values()), arg, metric)))
                best = sorted(ref.values(), reverse=True)[:K]
                want[: len(best)] = best
                for i, score in zip(ids, scores):
                    if i != -1:
                        np.testing.assert_allclose(score, ref[int(i)], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
            found = ids[ids != -1].tolist()
            assert len(found) == min(K, len(stored)) == len(set(found))
            assert (scores[ids == -1] == -np.inf).all()


def test_ids_are_not_reused_and_zero_vectors_score_zero():
    index = INDEXES["cosine"]
    add, remove, search = (CALLS["cosine", m] for m in ("add", "remove", "search"))
    state = index.init(jax.random.key(0))
    state, first = add(state, jnp.array([1.0, 0.0, 0.0]))
    state, _ = remove(state, first)
    state, second = add(state, jnp.zeros(DIM))
    assert (int(first), int(second)) == (0, 1)
    _, (ids, scores) = search(state, jnp.array([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(ids, [1, -1, -1])
    np.testing.assert_array_equal(scores, [0.0, -np.inf, -np.inf])


def test_vmap_over_a_stack_of_indexes():
    index, peers = INDEXES["dot"], 4
    vectors = jax.random.normal(jax.random.key(1), (peers, 2, DIM))
    states = jax.jit(jax.vmap(index.init))(jax.random.split(jax.random.key(0), peers))
    add = jax.jit(jax.vmap(functools.partial(index.call, "add")))
    states, ids0 = add(states, vectors[:, 0])
    states, ids1 = add(states, vectors[:, 1])
    np.testing.assert_array_equal(ids0, np.zeros(peers))
    np.testing.assert_array_equal(ids1, np.ones(peers))
    remove = jax.jit(jax.vmap(functools.partial(index.call, "remove")))
    states, _ = remove(states, jnp.arange(peers) % 2)
    search = jax.jit(jax.vmap(functools.partial(index.call, "search"), (0, None)))
    _, (ids, scores) = search(states, jnp.ones(DIM))
    for p in range(peers):
        kept = 1 - p % 2
        np.testing.assert_array_equal(ids[p], [kept, -1, -1])
        np.testing.assert_allclose(scores[p, 0], jnp.sum(vectors[p, kept]), rtol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        ((2, 3, 3, "cosine"), r"k \(3\) exceeds capacity \(2\)"),
        ((4, 3, 2, "l2"), "metric must be 'cosine' or 'dot'"),
        ((4, 0, 2, "dot"), "dim must be an integer >= 1"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ComponentError, match=message):
        topk_index(*args)


def test_vector_of_the_wrong_shape():
    index = INDEXES["cosine"]
    with pytest.raises(ComponentError, match=r"vector of shape \(3,\), got \(4,\)") as info:
        index.call("search", index.init(jax.random.key(0)), jnp.ones(4))
    assert info.value.method == "search" and info.value.component == "topk_index"
