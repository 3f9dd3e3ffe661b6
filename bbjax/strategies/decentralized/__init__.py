"""Decentralized training: communication topologies and their mixing weights."""

from bbjax.strategies.decentralized.mixing import (
    metropolis_hastings,
    push_sum_weights,
    second_largest_eigenvalue_modulus,
    spectral_gap,
    uniform,
)
from bbjax.strategies.decentralized.topology import (
    Topology,
    base_graph,
    complete,
    exponential,
    from_neighbours,
    one_peer_exponential,
    random_regular,
    ring,
    torus,
)

__all__ = ["Topology", "base_graph", "complete", "exponential", "from_neighbours",
           "metropolis_hastings", "one_peer_exponential", "push_sum_weights", "random_regular",
           "ring", "second_largest_eigenvalue_modulus", "spectral_gap", "torus", "uniform"]
