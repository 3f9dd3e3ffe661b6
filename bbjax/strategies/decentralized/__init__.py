"""Decentralized training: communication topologies, their mixing weights, and the rounds
that mix over them (gossip averaging, D-PSGD, push-sum, CHOCO)."""

from bbjax.strategies.decentralized.choco import ChocoGossip, ChocoSGDRound, choco_copies
from bbjax.strategies.decentralized.dpsgd import DPSGDRound
from bbjax.strategies.decentralized.gossip import (
    GossipAveraging,
    gossip_value,
    mixing_weights,
    population,
)
from bbjax.strategies.decentralized.metrics import average, consensus_distance, evaluator

from bbjax.strategies.decentralized.mixing import (
    metropolis_hastings,
    push_sum_weights,
    second_largest_eigenvalue_modulus,
    spectral_gap,
    uniform,
)
from bbjax.strategies.decentralized.push_sum import PushSumAveraging, PushSumSGD, push_sum_mass
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

__all__ = ["ChocoGossip", "ChocoSGDRound", "DPSGDRound", "GossipAveraging", "PushSumAveraging",
           "PushSumSGD", "Topology", "average", "base_graph", "choco_copies", "complete",
           "consensus_distance", "evaluator", "exponential", "from_neighbours", "gossip_value",
           "metropolis_hastings", "mixing_weights", "one_peer_exponential", "population",
           "push_sum_mass", "push_sum_weights", "random_regular", "ring",
           "second_largest_eigenvalue_modulus", "spectral_gap", "torus", "uniform"]
