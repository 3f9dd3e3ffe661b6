"""FedAvg with the client and server partitions installed on one node.

``bbjax.modules.FedAvgRound`` is compiled into three partitions (the round's initiator,
the client, the server) and all three are installed on node 0, whose peer sets name
itself as the client and the server. Each round, ``start()`` + ``poll()`` closes the whole
round inside the node: the initiator sends the global parameters, the client trains, the
server gathers and averages, and the next round starts from the new global parameters.

    python examples/single_node_fedavg.py
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.runtime import AppOutput, NodeConfig


def main(rounds: int = 15, local_steps: int = 10) -> list[float]:
    data = bbjax.data.synthetic_iid(num_clients=1, seed=0, max_size=2000)
    x, y = data.client(0)
    model = bbjax.components.flax_model(MLP(60, 64, 10, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                                        cross_entropy)
    source = bbjax.components.array_data_source(x, y, batch_size=32)
    bindings = {"model": model, "data": source}
    compiled = (bbjax.Compiler().bind("model", model).bind("data", source)
                .compile(FedAvgRound(local_steps)))
    node = bbjax.install(0, compiled, [p.split("#")[0] for p in compiled.partitions], bindings,
                   NodeConfig(peers={"client": [0], "server": [0]}))

    accuracies = []
    for r in range(rounds):
        node.start()
        outputs = {s.name: float(s.value) for s in node.poll() if isinstance(s, AppOutput)}
        logits = model.call("forward", node.states["model"], jnp.asarray(x))[1]
        accuracies.append(float(jnp.mean(jnp.argmax(logits, -1) == y)))
        print(f"round {r:2d}  participants {int(outputs['participants'])}  "
              f"train loss {outputs['train_loss']:.3f}  accuracy {accuracies[-1]:.3f}")
    return accuracies


if __name__ == "__main__":
    main()
