"""A model-parallel run on Nodes: one Node per stage, exchanging only envelope bytes.

Stage ``s`` is peer ``s``: a Node running the partitions of its forward class and of
``stage<s>`` (:mod:`~bbjax.strategies.model_parallel.round`), which share its slot
states. :func:`train_round` plays the network in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bbjax.compiler import Compiled
from bbjax.components import Component
from bbjax.errors import NodeError
from bbjax.runtime import AppOutput, Node, NodeConfig, Outbound, install
from bbjax.strategies.model_parallel.round import (
    ModelParallelRound,
    forward_class,
    slot_name,
)


def install_stages(compiled: Compiled, bindings: Mapping[str, Component],
                   num_stages: int) -> list[Node]:
    """Nodes ``0 … num_stages - 1`` for a compiled :class:`ModelParallelRound` of
    ``num_stages`` stages, each given ``bindings`` (every slot's component; stage 0's
    ``data`` is its own). Raises what :func:`~bbjax.runtime.install` raises."""
    prefix = ModelParallelRound.name
    peers = {slot_name(s): [s] for s in range(num_stages)}
    peers.update({forward_class(s, num_stages): [s] for s in range(num_stages)})
    nodes = []
    for s in range(num_stages):
        classes = dict.fromkeys([forward_class(s, num_stages), slot_name(s)])
        targets = [prefix if c == "self" else f"{prefix}_{c}" for c in classes]
        nodes.append(install(s, compiled, targets, bindings, NodeConfig(peers=peers)))
    return nodes


def train_round(nodes: Sequence[Node], now: float | None = None) -> dict[str, Any]:
    """One round: stage 0 starts it and the host ships every envelope to its peer until
    no node has anything to send; returns the round's graph outputs (``train_loss``).
    Raises :class:`NodeError` when a node rejects an envelope or the round ends without
    its outputs."""
    nodes[0].start()
    outputs: dict[str, Any] = {}
    steps = [step for node in nodes for step in node.poll(now=now)]
    while True:
        outputs.update({s.name: np.asarray(s.value) for s in steps
                        if isinstance(s, AppOutput)})
        problems = [s for s in steps if not isinstance(s, (AppOutput, Outbound))]
        if problems:
            raise NodeError(f"the round stalled: {problems}")
        outbound = [s for s in steps if isinstance(s, Outbound)]
        if not outbound:
            break
        for s in outbound:
            nodes[s.peer].deliver(s.data)
        steps = [step for node in nodes for step in node.poll(now=now)]
    if "train_loss" not in outputs:
        raise NodeError("the round ended without the last stage's train_loss")
    return outputs
