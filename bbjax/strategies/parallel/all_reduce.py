"""Synchronous data-parallel SGD with an all-reduce (``DataParallel{AllReduce}``).

Every round is one step: each of the ``R`` replicas computes the gradient of its mean loss
on its share ``b_i`` of the global batch (:mod:`~bbjax.strategies.parallel.shards`), the
replicas all-reduce ``Σ_i b_i g_i / Σ_i b_i`` (the gradient of the mean loss over the whole
batch, shares of unequal size included), and every replica applies that same gradient with
its optimizer. The replicas start equal and stay equal, and the run is large-batch SGD on
the union of their batches.

The all-reduce is ``jax.lax.psum`` over the peer axis the simulation vmaps a class's step
over (:data:`bbjax.simulation.exchange.PEER_AXIS`), inside the ``all_reduce`` slot's
method: the engine's vmap turns it into a sum over the replicas, and under
``simulate(devices=n)``, where that axis is split over a device mesh, XLA makes it a
cross-device all-reduce. Its cost is that of the collective, not of an ``R × R`` exchange,
and no message is sent (``bytes_sent`` counts only the round's 0-byte start). The slot
needs that axis: it does not export to ONNX, so the compiler keeps it opaque, and it runs
only in a simulation; an installed Node has no replicas to reduce with (use
:class:`~bbjax.strategies.parallel.parameter_server.ParameterServerRound` there).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module
from bbjax.errors import StepError
from bbjax.simulation import Peers
from bbjax.simulation.exchange import PEER_AXIS
from bbjax.strategies.parallel.shards import split

PyTree = Any
REPLICA = "replica"
"""The peer class of an all-reduce round's replicas."""


def all_reduce_mean(name: str = "all_reduce") -> Component:
    """A stateless Protocol component: ``mean(tree, weight) -> (mean, total)``, the
    ``weight``-weighted mean of ``tree`` over every replica of the vmapped peer axis,
    ``Σ_i w_i x_i / Σ_i w_i`` (in float32, cast back; 0 when every weight is 0), and
    ``Σ_i w_i``. Without that axis (an installed Node) there is nothing to reduce with:
    the method still has its shapes (so a Module traces and compiles), but running it
    raises :class:`StepError` (wrapped by JAX's runtime error), and it does not export to
    ONNX, so the compiler keeps the slot opaque."""

    def init(key: jax.Array) -> dict:
        del key
        return {}

    def mean(state: dict, tree: PyTree, weight: Any) -> tuple[dict, tuple[PyTree, jax.Array]]:
        weight = jnp.asarray(weight, jnp.float32)
        if not _peer_axis_bound():
            shapes = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x),
                                                                   jnp.result_type(x)), tree),
                      jax.ShapeDtypeStruct((), jnp.float32))
            return state, jax.pure_callback(_no_peer_axis, shapes, tree, weight)
        total = jax.lax.psum(weight, PEER_AXIS)
        scale = 1.0 / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
        summed = jax.lax.psum(jax.tree.map(lambda x: weight * x.astype(jnp.float32), tree),
                              PEER_AXIS)
        return state, (jax.tree.map(lambda s, x: (s * scale).astype(jnp.result_type(x)),
                                    summed, tree), total)

    return Component(Role.PROTOCOL, init, {"mean": mean}, name)


def _peer_axis_bound() -> bool:
    """Whether this code runs inside a vmap (or shard_map) over :data:`PEER_AXIS`."""
    try:
        jax.lax.axis_size(PEER_AXIS)
    except NameError:
        return False
    return True


def _no_peer_axis(*args: Any) -> Any:
    raise StepError(f"all_reduce_mean.mean ran outside a simulation: there is no peer axis "
                    f"{PEER_AXIS!r} of replicas to all-reduce over (an installed Node has "
                    "none; use ParameterServerRound for real nodes)")


class AllReduceRound(Module):
    """One synchronous data-parallel step on every replica.

    Slots: ``model`` (:func:`~bbjax.strategies.parallel.replica.replica`), ``data``
    (:func:`~bbjax.strategies.parallel.shards.data_shard`) and ``all_reduce``
    (:func:`all_reduce_mean`). Outputs: ``train_loss``, the mean loss over the global
    batch before the step, and ``batch_rows``, the global batch's rows (both the same on
    every replica).
    """

    name = "all_reduce"

    def body(self, g: Graph) -> None:
        replicas = g.peers(REPLICA)
        tick = g.send("round", jnp.zeros((0,), jnp.uint8), to=replicas)
        x, y, count = g.slot("data").next_batch(after=tick)
        grads, loss, count = g.slot("model").gradient(x, y, count)
        (mean_grads, mean_loss), rows = g.slot("all_reduce").mean((grads, loss), count)
        g.slot("model").apply_gradients(mean_grads, jnp.bool_(True))
        g.output("train_loss", mean_loss)
        g.output("batch_rows", rows)


def population(x: Any, y: Any, replicas: int, batch_size: int) -> dict[str, Any]:
    """The population of an all-reduce run: ``{"self": 1, "replica": Peers(replicas,
    init_args={"data": split(x, y, replicas, batch_size)})}``. The one ``self`` peer only
    starts each round with an empty (0-byte) message; every replica runs every round (no
    cohort: the all-reduce needs them all). Raises what
    :func:`~bbjax.strategies.parallel.shards.split` raises."""
    shards = split(x, y, replicas, batch_size)
    return {"self": 1, REPLICA: Peers(replicas, init_args={"data": shards})}
