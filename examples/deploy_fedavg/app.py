"""The components of examples/multi_node_fedavg.py's network, per peer: the same MLP and
seeds; client ``p`` trains on shard ``p - 1`` of Synthetic(1, 1), the server binds shard 0."""

from __future__ import annotations

import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy

NUM_SHARDS = 4


def components(peer: int) -> dict:
    """Slot -> component of ``peer`` (0 the server, 1.. the clients)."""
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=NUM_SHARDS, seed=1, max_size=800)
    model = bbjax.components.flax_model(MLP(60, 64, 10, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                                        cross_entropy)
    shard = data.client(max(peer - 1, 0))
    return {"model": model, "data": bbjax.components.array_data_source(*shard, batch_size=32)}
