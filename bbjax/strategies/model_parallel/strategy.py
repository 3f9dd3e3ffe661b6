"""A ``ModelParallel`` strategy configuration as a run's parts: its model split at the
partitions, the round, the bindings, the population and the evaluation.

The model is a :class:`~bbjax.strategies.model_parallel.layered.LayeredMLP` of the
strategy's ``hidden_layers`` sized for ``training``'s data, pooled on one peer (one
client's worth of the generator); partition ``s`` is stage ``s``, whose ``node_ids`` must
be the next layers of the model: together the partitions claim every layer, in order,
without interleaving (somatize's rule). ``Direct`` and ``DataStore`` are the same plain
sends here (one batch a step); ``Pipeline{micro_batch_size}`` cuts each batch of
``training.batch_size`` rows into micro-batches of that many rows. Every stage trains with
SGD at ``training.learning_rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bbjax.components import Component, array_data_source
from bbjax.errors import ConfigError
from bbjax.models import cross_entropy
from bbjax.simulation import Peers
from bbjax.strategies import workload
from bbjax.strategies.config import ModelParallel
from bbjax.strategies.model_parallel.layered import LayeredMLP
from bbjax.strategies.model_parallel.round import (
    ModelParallelRound,
    population,
    slot_name,
    stage_components,
)
from bbjax.strategies.model_parallel.stages import Stages, split


def stage_layers(strategy: ModelParallel, layers: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each partition's ``node_ids``, checked against the model's ``layers``. Raises
    :class:`ConfigError` naming the partition field at fault: fewer than 2 partitions, a
    name that is no layer, a layer out of order, layers no partition claims."""
    parts = strategy.partitions
    if len(parts) < 2:
        raise ConfigError(f"partitions: a ModelParallel run needs at least 2 stages, got "
                          f"{len(parts)}", field="partitions")
    position = 0
    for i, part in enumerate(parts):
        for j, name in enumerate(part.node_ids):
            field = f"partitions[{i}].node_ids[{j}]"
            if name not in layers:
                raise ConfigError(f"{field} {name!r} is not a layer of the model (its layers: "
                                  f"{', '.join(layers)})", field=field)
            if layers.index(name) != position:
                raise ConfigError(f"{field} {name!r} is out of order: the partitions must "
                                  f"claim the layers {', '.join(layers)} in that order, and "
                                  f"{layers[position]!r} comes next", field=field)
            position += 1
    if position < len(layers):
        raise ConfigError(f"partitions claim no layer {list(layers[position:])}: every layer "
                          "of the model must be in a partition", field="partitions")
    return [part.node_ids for part in parts]


def evaluation(stages: Stages, x: Any, y: Any
               ) -> Callable[[dict[str, Any]], dict[str, jax.Array]]:
    """``evaluate(states)``: ``accuracy`` and ``test_loss`` (mean cross-entropy) of the
    stages' current parameters, chained, on rows ``x`` with labels ``y``."""
    x, y = jnp.asarray(x), jnp.asarray(y)

    def evaluate(states: dict[str, Any]) -> dict[str, jax.Array]:
        params = [jax.tree.map(lambda a: a[0], states[slot_name(s)][slot_name(s)].params)
                  for s in range(len(stages))]
        logits = stages.apply(params, x)
        return {"accuracy": jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)),
                "test_loss": cross_entropy(logits, y)}

    return evaluate


def parts(strategy: ModelParallel) -> tuple[ModelParallelRound, dict[str, Component],
                                            dict[str, Peers], Callable[..., Any], Stages]:
    """``(module, bindings, population, evaluate, stages)`` of ``strategy``. Raises
    :class:`ConfigError` for partitions that do not split the model (:func:`stage_layers`)
    or a ``training.batch_size`` larger than the training rows."""
    training = strategy.training
    train, test = workload.peer_data(training, 1)
    x, y = workload.pooled_rows(train)
    test_x, test_y = workload.pooled_rows(test)
    if training.batch_size > len(x):
        raise ConfigError(f"training.batch_size {training.batch_size} exceeds the "
                          f"{len(x)} training rows", field="training.batch_size")
    net = LayeredMLP(int(np.prod(x.shape[1:])), strategy.hidden_layers,
                     int(np.asarray(train.y).max()) + 1, rngs=nnx.Rngs(training.seed))
    stages = split(net, [net.stage_items(names)
                         for names in stage_layers(strategy, net.layers)])
    micro = strategy.micro_batches()
    bindings = {"data": array_data_source(x, y, training.batch_size),
                **stage_components(stages, optax.sgd(training.learning_rate), cross_entropy,
                                   x[:training.batch_size], micro)}
    return (ModelParallelRound(len(stages), micro), bindings, population(len(stages)),
            evaluation(stages, test_x, test_y), stages)
