"""Topologies: structure against index arithmetic, stochasticity and exact-consensus claims in
float64, the seeded random graph, the jittable round lookup and every error path."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bbjax.errors import TopologyError
from bbjax.strategies.decentralized import (
    Topology,
    base_graph,
    complete,
    exponential,
    from_neighbours,
    one_peer_exponential,
    random_regular,
    ring,
    second_largest_eigenvalue_modulus,
    torus,
)


def _neighbour_sets(topology: Topology, round: int | None = None) -> list[set[int]]:
    """Row ``i``'s listed neighbours (with a nonzero weight in ``round``, when given)."""
    rows = []
    for i, row in enumerate(topology.neighbours):
        used = row >= 0
        if round is not None:
            used &= topology.weights[round % topology.period, i] != 0
        rows.append({int(j) for j in row[used]})
    return rows


def _product(topology: Topology, rounds: range) -> np.ndarray:
    """``W_{last} ... W_{first}`` in float64 (einsum: no threaded BLAS on a shared machine)."""
    product = np.eye(topology.count)
    for t in rounds:
        product = np.einsum("ij,jk->ik", topology.matrix(t), product)
    return product


STATIC = [lambda: ring(2), lambda: ring(7), lambda: ring(16), lambda: torus(3, 4),
          lambda: torus(2, 5), lambda: torus(2, 2), lambda: complete(5),
          lambda: random_regular(12, 3, 0), lambda: random_regular(11, 6, 1),
          lambda: random_regular(30, 8, 2), lambda: exponential(5), lambda: exponential(8),
          lambda: exponential(13)]


@pytest.mark.parametrize("make", STATIC)
def test_a_static_topology_is_stochastic_and_its_matrix_matches_its_neighbours(make):
    topology = make()
    n = topology.count
    matrix = topology.matrix()
    assert topology.period == 1 and matrix.dtype == np.float64
    assert topology.neighbours.dtype == np.int32 and topology.weights.dtype == np.float32
    assert topology.self_weights.dtype == np.float32
    expected = np.zeros((n, n))
    for i in range(n):
        for s, j in enumerate(topology.neighbours[i]):
            if j >= 0:
                expected[i, j] = topology.weights[0, i, s]
            else:
                assert topology.weights[0, i, s] == 0
        expected[i, i] = topology.self_weights[0, i]
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert topology.doubly_stochastic
    if not topology.directed:
        np.testing.assert_array_equal(matrix, matrix.T)


def test_ring_torus_and_complete_list_the_index_arithmetic_neighbours():
    assert _neighbour_sets(ring(9)) == [{(i - 1) % 9, (i + 1) % 9} for i in range(9)]
    assert _neighbour_sets(ring(2)) == [{1}, {0}]
    for rows, cols in [(3, 4), (5, 5), (2, 3)]:
        expected = []
        for r, c in itertools.product(range(rows), range(cols)):
            expected.append({((r + 1) % rows) * cols + c, ((r - 1) % rows) * cols + c,
                             r * cols + (c + 1) % cols, r * cols + (c - 1) % cols})
        topology = torus(rows, cols)
        assert _neighbour_sets(topology) == expected
        degree = len(expected[0])
        np.testing.assert_allclose(topology.matrix()[0, sorted(expected[0])], 1 / (degree + 1))
    np.testing.assert_allclose(complete(7).matrix(), np.full((7, 7), 1 / 7), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [2, 5, 8, 13, 32])
def test_exponential_hears_powers_of_two_with_uniform_weights(n):
    topology = exponential(n)
    tau = math.ceil(math.log2(n))
    assert topology.directed and topology.k == tau
    assert _neighbour_sets(topology) == [{(i + 2 ** j) % n for j in range(tau)}
                                         for i in range(n)]
    matrix = topology.matrix()
    np.testing.assert_allclose(matrix[matrix > 0], 1 / (tau + 1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [8, 12, 16, 31])
def test_the_exponential_graph_mixes_faster_than_the_ring(n):
    exponential_slem = second_largest_eigenvalue_modulus(exponential(n))
    assert exponential_slem < second_largest_eigenvalue_modulus(ring(n)) - 0.1


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_one_peer_exponential_averages_exactly_in_any_tau_consecutive_rounds(n):
    topology = one_peer_exponential(n)
    tau = topology.period
    assert tau == int(math.log2(n)) and topology.directed
    for t in range(tau):
        assert [len(s) for s in _neighbour_sets(topology, t)] == [1] * n
        assert _neighbour_sets(topology, t) == [{(i + 2 ** t) % n} for i in range(n)]
        np.testing.assert_array_equal(np.diag(topology.matrix(t)), 0.5)
    for start in range(tau):
        product = _product(topology, range(start, start + tau))
        assert np.abs(product - 1 / n).max() < 1e-12


def test_one_peer_exponential_is_not_exact_off_powers_of_two():
    topology = one_peer_exponential(6)
    assert topology.period == 3
    assert np.abs(_product(topology, range(3)) - 1 / 6).max() > 1e-2


BASE_SIZES = sorted(set(range(2, 41)) | {41, 43, 47, 53, 59, 61, 64, 81, 97, 100, 125})


@pytest.mark.parametrize("k", [1, 2, 3])
def test_base_graph_averages_exactly_within_k_peers_per_round(k):
    for n in (n for n in BASE_SIZES if n > k):
        topology = base_graph(n, k)
        assert not topology.directed
        for t in range(topology.period):
            assert max(len(s) for s in _neighbour_sets(topology, t)) <= k, (n, k, t)
        product = _product(topology, range(topology.period))
        assert np.abs(product - 1 / n).max() < 1e-12, (n, k)
        assert topology.period <= 2 * math.log(n, k + 1) + 2, (n, k)


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 160), st.integers(1, 6))
def test_base_graph_averages_exactly_for_any_n_and_k(n, k):
    k = min(k, n - 1)
    topology = base_graph(n, k)
    x = np.random.default_rng(n * 7 + k).normal(size=n)
    for t in range(topology.period):
        x = np.einsum("ij,j->i", topology.matrix(t), x)
        assert max(len(s) for s in _neighbour_sets(topology, t)) <= k
    assert np.abs(x - x.mean()).max() < 1e-12


@pytest.mark.parametrize("n, k", [(43, 40), (97, 95), (200, 37), (100, 50)])
def test_base_graph_averages_exactly_with_many_peers_per_round(n, k):
    topology = base_graph(n, k)
    assert max(max(len(s) for s in _neighbour_sets(topology, t))
               for t in range(topology.period)) <= k
    assert np.abs(_product(topology, range(topology.period)) - 1 / n).max() < 1e-12


def test_base_graph_on_powers_of_k_plus_one_is_the_hypercube_and_complete_at_k_n_minus_1():
    assert base_graph(27, 2).period == 3 and base_graph(16, 1).period == 4
    np.testing.assert_allclose(base_graph(6, 5).matrix(), np.full((6, 6), 1 / 6), atol=1e-15)
    two_peers = base_graph(5, 1)
    assert two_peers.period > 3  # 5 is no power of 2: more rounds than log2


@pytest.mark.parametrize("n, k", [(12, 3), (20, 5), (11, 6), (12, 9), (40, 8), (9, 8)])
def test_random_regular_is_simple_k_regular_and_seeded(n, k):
    topology = random_regular(n, k, seed=5)
    sets = _neighbour_sets(topology)
    assert topology.k == k and all(len(s) == k and i not in s for i, s in enumerate(sets))
    assert all(i in sets[j] for i, s in enumerate(sets) for j in s)
    again = random_regular(n, k, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(again.neighbours, topology.neighbours)
    np.testing.assert_allclose(topology.matrix()[topology.matrix() > 0], 1 / (k + 1), atol=1e-7)


def test_random_regular_seeds_give_different_graphs():
    graphs = {random_regular(20, 3, seed).neighbours.tobytes() for seed in range(5)}
    assert len(graphs) == 5


def test_random_regular_is_uniform_over_the_70_two_regular_graphs_on_six_nodes():
    rng = np.random.default_rng(11)
    counts = Counter(random_regular(6, 2, rng).neighbours.tobytes() for _ in range(1400))
    assert len(counts) == 70  # 60 hexagons and 10 pairs of triangles
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


@pytest.mark.parametrize("make", [lambda: ring(8), lambda: base_graph(10, 2),
                                  lambda: one_peer_exponential(8)])
def test_weights_at_under_jit_is_the_round_modulo_the_period(make):
    topology = make()
    lookup = jax.jit(topology.weights_at)
    for t in range(2 * topology.period + 1):
        weights, self_weights = lookup(jnp.int32(t))
        np.testing.assert_array_equal(weights, topology.weights[t % topology.period])
        np.testing.assert_array_equal(self_weights, topology.self_weights[t % topology.period])
    weights, _ = topology.weights_at(3)
    assert weights.dtype == jnp.float32 and weights.shape == (topology.count, topology.k)


def test_the_engine_accepts_a_time_varying_topologys_neighbours():
    from bbjax.simulation.population import Peers

    topology = base_graph(13, 2)
    peers = Peers(13, neighbours=topology.neighbours)
    np.testing.assert_array_equal(peers.tables["neighbours"], topology.neighbours)


def test_topology_arrays_are_read_only():
    topology = ring(5)
    with pytest.raises(ValueError):
        topology.weights[0, 0, 0] = 1.0
    assert "ring(5)" in repr(topology) and "k=2" in repr(topology)


@pytest.mark.parametrize("call, match", [
    (lambda: ring(1), "n must be an integer >= 2"),
    (lambda: ring(4.0), "n must be an integer >= 2"),
    (lambda: ring(True), "n must be an integer >= 2"),
    (lambda: torus(1, 3), "rows must be"),
    (lambda: complete("3"), "n must be"),
    (lambda: exponential(0), "n must be"),
    (lambda: one_peer_exponential(1), "n must be"),
    (lambda: random_regular(5, 3, 0), "n \\* k must be even"),
    (lambda: random_regular(5, 5, 0), "k must be an integer in \\[1, 4\\]"),
    (lambda: random_regular(6, 0, 0), "k must be an integer"),
    (lambda: random_regular(6, 2, -1), "seed"),
    (lambda: random_regular(6, 2, "x"), "seed"),
    (lambda: base_graph(5, 0), "k must be an integer in \\[1, 4\\]"),
    (lambda: base_graph(5, 5), "k must be"),
    (lambda: from_neighbours(np.array([[1], [0]]), "bogus"), "weights must be one of"),
    (lambda: from_neighbours(np.array([[1], [2], [0]])), "symmetric"),
    (lambda: ring(5).matrix(1.5), "round must be an integer"),
    (lambda: ring(5).weights_at(1.0), "round must be an integer scalar"),
    (lambda: ring(5).weights_at(jnp.arange(2)), "round must be an integer scalar"),
])
def test_bad_arguments_raise_topology_error(call, match):
    with pytest.raises(TopologyError, match=match):
        call()


PAIR = np.array([[1], [0]])
HALF = np.full((1, 2, 1), 0.5)


@pytest.mark.parametrize("fields, match", [
    ({"neighbours": PAIR.astype(float)}, "int array"),
    ({"weights": HALF.astype(int)}, "float array"),
    ({"weights": HALF[0]}, "float array"),
    ({"self_weights": np.full((2, 2), 0.5)}, "2 rounds"),
    ({"self_weights": np.full((1, 2), 0.6)}, "doubly stochastic"),
    ({"weights": np.array([[[0.5], [0.4]]]), "self_weights": np.array([[0.5, 0.6]])},
     "symmetric"),
    ({"weights": np.array([[[0.5], [np.nan]]])}, "non-finite"),
    ({"directed": True, "self_weights": np.array([[0.4, 0.5]])}, "column-stochastic"),
    ({"neighbours": np.array([[1, -1], [0, -1]]), "weights": np.array([[[0.5, 0.1], [0.5, 0]]])},
     "padding"),
    ({"name": 3}, "name"),
    ({"directed": "yes"}, "directed"),
])
def test_a_topology_refuses_arrays_that_do_not_fit(fields, match):
    arguments = {"name": "pair", "neighbours": PAIR, "weights": HALF,
                     "self_weights": np.full((1, 2), 0.5), "directed": False}
    Topology(**arguments)
    with pytest.raises(TopologyError, match=match):
        Topology(**{**arguments, **fields})
