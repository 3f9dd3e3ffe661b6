"""Mixing rules and spectral quantities against float64 references built from edge lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.errors import InvalidArgument, TopologyError
from bbjax.strategies.decentralized import (
    complete,
    from_neighbours,
    metropolis_hastings,
    push_sum_weights,
    ring,
    second_largest_eigenvalue_modulus,
    spectral_gap,
    uniform,
)


def _random_graph(n: int, p: float, rng: np.random.Generator) -> dict[int, set[int]]:
    """An Erdos-Renyi graph as adjacency sets, with a cycle so no node is isolated."""
    adjacency = {i: set() for i in range(n)}
    order = rng.permutation(n)
    pairs = [(order[i], order[(i + 1) % n]) for i in range(n)]
    pairs += [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    for i, j in pairs:
        if i != j:
            adjacency[int(i)].add(int(j))
            adjacency[int(j)].add(int(i))
    return adjacency


def _layout(adjacency: dict[int, set[int]], rng: np.random.Generator) -> np.ndarray:
    """The in-neighbour array of ``adjacency``, rows shuffled and padded at random slots."""
    width = max(len(v) for v in adjacency.values()) + 1
    array = np.full((len(adjacency), width), -1)
    for i, neighbours in adjacency.items():
        slots = rng.choice(width, size=len(neighbours), replace=False)
        array[i, slots] = rng.permutation(sorted(neighbours))
    return array


def _dense(neighbours: np.ndarray, weights: np.ndarray, self_weights: np.ndarray) -> np.ndarray:
    matrix = np.diag(self_weights.astype(np.float64))
    for i, row in enumerate(neighbours):
        for s, j in enumerate(row):
            if j >= 0:
                matrix[i, j] += weights[i, s]
    return matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metropolis_hastings_matches_the_edge_rule(seed):
    rng = np.random.default_rng(seed)
    adjacency = _random_graph(17, 0.2, rng)
    neighbours = _layout(adjacency, rng)
    matrix = _dense(neighbours, *metropolis_hastings(neighbours))
    reference = np.zeros((17, 17))
    for i, others in adjacency.items():
        for j in others:
            reference[i, j] = 1.0 / (1 + max(len(others), len(adjacency[j])))
        reference[i, i] = 1.0 - reference[i].sum()
    np.testing.assert_allclose(matrix, reference, rtol=0, atol=1e-15)
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-15)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    assert matrix.min() >= 0


@pytest.mark.parametrize("seed", [3, 4])
def test_uniform_puts_one_over_max_degree_plus_one_on_every_edge(seed):
    rng = np.random.default_rng(seed)
    adjacency = _random_graph(13, 0.3, rng)
    neighbours = _layout(adjacency, rng)
    matrix = _dense(neighbours, *uniform(neighbours))
    share = 1.0 / (1 + max(len(v) for v in adjacency.values()))
    for i in range(13):
        for j in range(13):
            if i != j:
                assert matrix[i, j] == (share if j in adjacency[i] else 0.0)
        assert matrix[i, i] == pytest.approx(1.0 - share * len(adjacency[i]), abs=1e-15)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def _strongly_connected_digraph(n: int, extra: int, rng: np.random.Generator
                                ) -> dict[int, set[int]]:
    """In-neighbour sets: a random directed Hamiltonian cycle plus ``extra`` random edges."""
    senders = {i: set() for i in range(n)}
    order = rng.permutation(n)
    for a, b in zip(order, np.roll(order, -1)):
        senders[int(b)].add(int(a))
    while sum(map(len, senders.values())) < n + extra:
        i, j = rng.integers(n, size=2)
        if i != j:
            senders[int(i)].add(int(j))
    return senders


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_push_sum_weights_are_column_stochastic_and_the_ratio_reaches_the_mean(seed):
    rng = np.random.default_rng(seed)
    senders = _strongly_connected_digraph(20, 25, rng)
    neighbours = _layout(senders, rng)
    matrix = _dense(neighbours, *push_sum_weights(neighbours))
    out_degree = {j: sum(j in s for s in senders.values()) for j in range(20)}
    for i in range(20):
        for j in range(20):
            expected = 1.0 / (1 + out_degree[j]) if (j in senders[i] or i == j) else 0.0
            assert matrix[i, j] == pytest.approx(expected, abs=1e-15)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    assert np.abs(matrix.sum(axis=1) - 1.0).max() > 1e-3  # not doubly stochastic

    topology = from_neighbours(neighbours, "push_sum")
    assert topology.directed and not topology.doubly_stochastic
    np.testing.assert_allclose(topology.matrix(), matrix, rtol=0, atol=1e-15)
    x = rng.normal(size=20)
    values, mass = x.copy(), np.ones(20)
    for _ in range(400):
        values, mass = matrix @ values, matrix @ mass
    np.testing.assert_allclose(values / mass, x.mean(), rtol=0, atol=1e-9)
    assert np.abs(values - x.mean()).max() > 1e-3  # the ratio, not the values, is the mean


@pytest.mark.parametrize("n", [3, 4, 5, 9, 16, 25])
def test_ring_slem_is_the_closed_form_and_numpys(n):
    topology = ring(n)
    closed_form = (1 + 2 * math.cos(2 * math.pi / n)) / 3
    eigenvalues = np.linalg.eigvalsh(topology.matrix())
    assert second_largest_eigenvalue_modulus(topology) == pytest.approx(closed_form, abs=1e-12)
    assert np.sort(np.abs(eigenvalues))[-2] == pytest.approx(closed_form, abs=1e-12)
    assert spectral_gap(topology) == pytest.approx(1 - closed_form, abs=1e-12)


def test_complete_graph_has_gap_one_and_a_disconnected_graph_gap_zero():
    assert second_largest_eigenvalue_modulus(complete(6)) == pytest.approx(0.0, abs=1e-12)
    two_rings = np.array([[(i - 1) % 4 + 4 * (i // 4), (i + 1) % 4 + 4 * (i // 4)]
                          for i in range(8)])
    assert spectral_gap(from_neighbours(two_rings)) == pytest.approx(0.0, abs=1e-12)


def test_isolated_nodes_keep_their_value():
    weights, self_weights = metropolis_hastings(np.full((3, 1), -1))
    assert not weights.any() and self_weights.tolist() == [1.0, 1.0, 1.0]
    assert spectral_gap(from_neighbours(np.full((3, 1), -1), "uniform")) == 0.0


@pytest.mark.parametrize("n", [12, 17])
def test_gossip_on_a_ring_contracts_at_the_slem(n):
    topology = ring(n)
    slem = second_largest_eigenvalue_modulus(topology)
    matrix = topology.matrix()
    x = np.random.default_rng(n).normal(size=n)
    error = [np.linalg.norm(x - x.mean())]
    for _ in range(300):
        x = matrix @ x
        error.append(np.linalg.norm(x - x.mean()))
    error = np.asarray(error)
    assert np.all(error <= error[0] * slem ** np.arange(301) * (1 + 1e-9))
    measured = (error[300] / error[200]) ** (1 / 100)
    assert measured == pytest.approx(slem, abs=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 30), st.floats(0.0, 0.6), st.integers(0, 2 ** 31))
def test_both_undirected_rules_give_a_symmetric_doubly_stochastic_matrix(n, p, seed):
    rng = np.random.default_rng(seed)
    neighbours = _layout(_random_graph(n, p, rng), rng)
    for rule in (uniform, metropolis_hastings):
        matrix = _dense(neighbours, *rule(neighbours))
        np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-15)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert matrix.min() >= 0


@pytest.mark.parametrize("neighbours, match", [
    (np.array([[1], [2], [0]]), "symmetric"),
    (np.array([[1.0], [0.0]]), "int array"),
    (np.array([1, 0]), "int array"),
    (np.array([[1], [2]]), "not a node id"),
    (np.array([[-2], [0]]), "not a node id"),
    (np.array([[0], [0]]), "itself"),
    (np.array([[1, 1], [0, -1]]), "twice"),
    (np.zeros((1, 1), dtype=int), "N >= 2"),
])
def test_an_undirected_rule_refuses_a_bad_neighbour_array(neighbours, match):
    for rule in (uniform, metropolis_hastings):
        with pytest.raises(TopologyError, match=match):
            rule(neighbours)


def test_push_sum_accepts_an_asymmetric_array_and_errors_are_invalid_arguments():
    push_sum_weights(np.array([[1], [2], [0]]))
    with pytest.raises(InvalidArgument):
        push_sum_weights(np.array([[3], [0], [1]]))
