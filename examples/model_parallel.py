"""Model-parallel training of a 3-stage MLP: simulated, then on three Nodes exchanging only
envelope bytes, and once more on one device without any split.

Each layer of the MLP is a stage on its own peer. A round is one training step: stage 0
draws a batch, cuts it into micro-batches (GPipe) and sends their activations forward;
the last stage computes the loss and sends the gradients with respect to its inputs back;
every stage steps its own parameters with Adam. The three runs end with the same
parameters.

    python examples/model_parallel.py [--rounds 20] [--micro-batches 4]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import cross_entropy
from bbjax.strategies.model_parallel import (
    ModelParallelRound,
    population,
    slot_name,
    split,
    stage_components,
)
from bbjax.strategies.model_parallel.layered import LayeredMLP
from bbjax.strategies.model_parallel.nodes import install_stages, train_round
from bbjax.strategies.parallel import data_shard

BATCH = 32


def single_device(net: nnx.Module, optimizer, x, y, rounds: int) -> dict:
    """The unsplit model's parameters after ``rounds`` steps on the batches the stages
    read (a full-batch ``data_shard``: step ``t`` takes rows ``t·B … t·B + B - 1``)."""
    graphdef, params = nnx.split(net, nnx.Param)
    params = nnx.to_pure_dict(params)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        grads = jax.grad(lambda p: cross_entropy(nnx.merge(graphdef, p)(xb), yb))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for t in range(rounds):
        rows = (t * BATCH + np.arange(BATCH)) % len(x)
        params, opt_state = step(params, opt_state, x[rows], y[rows])
    return params


def largest_difference(a: dict, b: dict) -> float:
    return max(float(np.abs(np.asarray(u) - np.asarray(v)).max())
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(rounds: int = 20, micro_batches: int = 4) -> dict[str, float]:
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=1, seed=0, max_size=400)
    x, y = (np.asarray(a)[np.asarray(data.mask[0], bool)] for a in (data.x[0], data.y[0]))
    net = LayeredMLP(x.shape[1], (64, 32), int(y.max()) + 1, rngs=nnx.Rngs(0))
    stages = split(net, [net.stage_items([layer]) for layer in net.layers], example=x[:8])
    bindings = {"data": data_shard(x, y, BATCH),
                **stage_components(stages, optax.adam(1e-3), cross_entropy, x[:BATCH],
                                   micro_batches)}
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(ModelParallelRound(len(stages), micro_batches))
    print("partitions:", ", ".join(sorted(t.split("#")[0] for t in compiled.partitions)))

    history = bbjax.simulate(compiled, population(len(stages)), rounds,
                             jax.random.PRNGKey(0), bindings=bindings)
    simulated = {s: jax.tree.map(lambda a: a[0], history.states[slot_name(s)][slot_name(s)]
                                 .params) for s in range(len(stages))}
    nodes = install_stages(compiled, bindings, len(stages))
    losses = [float(train_round(nodes)["train_loss"]) for _ in range(rounds)]
    on_nodes = {s: node.states[slot_name(s)].params for s, node in enumerate(nodes)}
    reference = single_device(net, optax.adam(1e-3), x, y, rounds)
    one_device = {s: {name: reference[name] for name in stages.params[s]}
                  for s in range(len(stages))}

    print(f"train loss: round 1 {losses[0]:.4f}, round {rounds} {losses[-1]:.4f} (Nodes); "
          f"{history['train_loss'][0]:.4f}, {history['train_loss'][-1]:.4f} (simulate)")
    differences = {}
    for s, name in enumerate(stages.names):
        differences[f"nodes-simulate {name}"] = largest_difference(on_nodes[s], simulated[s])
        differences[f"simulate-one device {name}"] = largest_difference(simulated[s],
                                                                         one_device[s])
    for what, value in differences.items():
        print(f"max |param difference| {what}: {value:.2e}")
    return differences


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--micro-batches", type=int, default=4)
    args = parser.parse_args()
    main(args.rounds, args.micro_batches)
