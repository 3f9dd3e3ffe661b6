"""D-PSGD (Lian et al. 2017, "Can Decentralized Algorithms Outperform Centralized
Algorithms?"), one round per iteration: every node sends its model to its out-neighbours,
takes a local step on its own data at that same, pre-averaging point, and keeps

    x_i ← Σ_j W_ij x_j − η ∇f_i(x_i)

(``w_ii x_i + Σ_j w_ij x_j`` over its in-neighbours, :func:`~bbjax.strategies.
decentralized.gossip.mix`, plus the step its ``model`` slot took). With ``optax.sgd(η)``
as the model's optimizer this is the paper's update; another optimizer takes its own step
(its state stays local).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbjax.dsl import Graph, Module
from bbjax.strategies.decentralized.gossip import begin_round, mix


class DPSGDRound(Module):
    """One D-PSGD iteration on every node.

    Slots: ``model`` (a Model with ``train``), ``data`` (a DataSource) and ``weights``
    (:func:`~bbjax.strategies.decentralized.gossip.mixing_weights`). Outputs:
    ``train_loss`` (the nodes' mean loss before their step) and ``neighbours_heard``.
    """

    name = "dpsgd"

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g)
        params = g.slot("model").params(after=tick)
        stacked, arrived = g.gather("params", params, to=out, senders=ins)
        x, y = g.slot("data").next_batch(after=arrived)
        loss = g.slot("model").train(x, y)
        stepped = g.slot("model").params(after=loss)
        weights, self_weight = g.slot("weights").next_round(after=arrived)
        mixed = mix(params, stacked, arrived, weights, self_weight)
        g.slot("model").load_parameters(
            jax.tree.map(lambda m, s, p: m + (s - p), mixed, stepped, params))
        g.output("train_loss", loss)
        g.output("neighbours_heard", jnp.sum(arrived.astype(jnp.int32)))
