"""One model-parallel training step a round: a model cut into ``P`` stages, each on its own
peer, activations sent forward and gradients with respect to them sent backward.

Peer classes (the compiler cuts one partition per class at the sends):

* ``self``: stage 0's forward pass. It draws the round's batch from its ``data`` slot,
  sends the labels to the last stage and cuts the batch into ``M`` micro-batches;
* ``stage<s>_forward`` (``0 < s < P - 1``): stage ``s``'s forward pass;
* ``stage<P-1>``: the last stage's forward pass, loss and backward pass, and its update;
* ``stage<s>`` (``s < P - 1``): stage ``s``'s backward pass and update.

Stage ``s`` is one peer playing ``stage<s>`` and its forward class (Peers' ``hosts``; on a
Node, both targets installed), sharing the slot ``stage<s>``
(:func:`~bbjax.strategies.model_parallel.stage.stage`). The forward and backward passes are
separate classes because a partition runs once a round: one class doing both would need
its own backward messages before it could send its forward ones, a cycle.

The schedule is GPipe's: every micro-batch's forward pass, each micro-batch its own send
per boundary (``activation<s>_m<m>``), then every backward pass (``gradient<s>_m<m>``), in
micro-batch order; each stage accumulates the micro-batches' gradients and takes one
optimizer step with their mean, the gradient of the batch's mean loss. The last stage
outputs ``train_loss``, the mean of the micro-batches' losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bbjax._checks import check_count
from bbjax.compiler.annotations import SELF
from bbjax.components import Component
from bbjax.dsl import Graph, Module
from bbjax.errors import InvalidArgument
from bbjax.simulation import Peers
from bbjax.strategies.model_parallel.stage import micro_batch, stage
from bbjax.strategies.model_parallel.stages import Stages


def slot_name(s: int) -> str:
    """The slot (and the update's peer class) of stage ``s``: ``stage<s>``."""
    return f"stage{s}"


def forward_class(s: int, num_stages: int) -> str:
    """The peer class running stage ``s``'s forward pass (module docstring)."""
    if s == 0:
        return SELF
    return slot_name(s) if s == num_stages - 1 else f"{slot_name(s)}_forward"


def micro_batches_of(batch_size: int, micro_batches: int) -> int:
    """The rows of each of ``micro_batches`` equal micro-batches of ``batch_size`` rows.
    Raises :class:`InvalidArgument` when they do not divide it."""
    if batch_size % micro_batches:
        raise InvalidArgument(f"{micro_batches} micro-batches do not divide a batch of "
                              f"{batch_size} rows")
    return batch_size // micro_batches


class ModelParallelRound(Module):
    """One training step of a model in ``num_stages`` stages over ``micro_batches``
    micro-batches (module docstring).

    Slots: ``data`` (on stage 0: its ``next_batch()`` starts with ``(x, y)``, e.g.
    :func:`~bbjax.components.array_data_source` or a full-batch
    :func:`~bbjax.strategies.parallel.data_shard`) and
    ``stage<s>`` per stage (:func:`~bbjax.strategies.model_parallel.stage.stage` with
    ``micro_batches``; the last one with a ``loss_fn``). Output: ``train_loss``. Raises
    :class:`InvalidArgument` for fewer than 2 stages, a ``micro_batches`` that is not an
    integer >= 1, or (when traced) micro-batches that do not divide the batch.
    """

    name = "model_parallel"

    def __init__(self, num_stages: int, micro_batches: int = 1):
        self.num_stages = check_count("num_stages", num_stages)
        if self.num_stages < 2:
            raise InvalidArgument("a model-parallel round needs at least 2 stages, got 1")
        self.micro_batches = check_count("micro_batches", micro_batches)

    def body(self, g: Graph) -> None:
        p, m_count = self.num_stages, self.micro_batches
        last = p - 1
        x, y = g.slot("data").next_batch()[:2]
        rows = micro_batches_of(x.shape[0], m_count)
        labels = g.send("labels", y, to=g.peers(slot_name(last)))
        acts = [x[m * rows:(m + 1) * rows] for m in range(m_count)]
        for s in range(last):
            outs = [g.slot(slot_name(s)).forward(a, micro_batch(m, m_count))
                    for m, a in enumerate(acts)]
            to = g.peers(forward_class(s + 1, p))
            acts = [g.send(f"activation{s}_m{m}", o, to=to) for m, o in enumerate(outs)]
        grads, losses = [], []
        for m, a in enumerate(acts):
            g_in, loss = g.slot(slot_name(last)).loss_backward(
                a, labels[m * rows:(m + 1) * rows], micro_batch(m, m_count))
            grads.append(g_in)
            losses.append(loss)
        g.slot(slot_name(last)).apply()
        g.output("train_loss", jnp.mean(jnp.stack(losses)))
        for s in reversed(range(last)):
            to = g.peers(slot_name(s))
            received = [g.send(f"gradient{s}_m{m}", d, to=to) for m, d in enumerate(grads)]
            grads = [g.slot(slot_name(s)).backward(d, micro_batch(m, m_count))
                     for m, d in enumerate(received)]
            g.slot(slot_name(s)).apply()


def stage_components(stages: Stages, optimizer: optax.GradientTransformation,
                     loss_fn: Callable[[Any, Any], jax.Array], batch: Any,
                     micro_batches: int = 1) -> dict[str, Component]:
    """The ``stage<s>`` slots' components for ``stages`` trained with ``optimizer`` on
    batches like ``batch`` (the model's input: an array or ``ShapeDtypeStruct``) cut into
    ``micro_batches``; the last stage computes ``loss_fn(prediction, target)``. Raises
    :class:`InvalidArgument` when the micro-batches do not divide the batch, or a stage
    does not output one array."""
    micro_batches = check_count("micro_batches", micro_batches)
    rows = micro_batches_of(jnp.shape(batch)[0], micro_batches)
    first = jax.ShapeDtypeStruct((rows, *jnp.shape(batch)[1:]), jnp.result_type(batch))
    specs = stages.input_specs(first)
    last = len(stages) - 1
    return {slot_name(s): stage(apply, params, optimizer, specs[s], micro_batches,
                                loss_fn if s == last else None, name=slot_name(s))
            for s, (apply, params) in enumerate(zip(stages.applies, stages.params))}


def population(num_stages: int, data_args: tuple | None = None) -> dict[str, Peers]:
    """One peer per stage: ``stage<s>`` playing its forward class too (``stage0`` plays
    ``self``), with ``data_args`` (leaves ``[1, ...]``) as stage 0's ``data`` init args."""
    entries = {}
    for s in range(num_stages):
        hosts = () if s == num_stages - 1 else (forward_class(s, num_stages),)
        init_args = {"data": data_args} if s == 0 and data_args is not None else {}
        entries[slot_name(s)] = Peers(1, init_args=init_args, hosts=hosts)
    return entries
