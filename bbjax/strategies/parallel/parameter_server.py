"""Data-parallel SGD through a parameter server (``DataParallel{ParameterServer}``):
synchronous, or asynchronous with bounded staleness (Stale Synchronous Parallel).

A ``server`` peer holds the parameters and the optimizer; ``R`` ``worker`` peers pull the
parameters, compute the gradient of their mean loss on their share ``b_p`` of a global
batch of ``B`` rows (:mod:`~bbjax.strategies.parallel.shards`) and push it. A round is one
tick of the server's clock.

**Synchronous** (``staleness=None``): every round every worker pulls, computes and pushes,
and the server applies ``Σ_p b_p g_p / Σ_p b_p`` over the gradients that arrived: the
all-reduce step of :class:`~bbjax.strategies.parallel.all_reduce.AllReduceRound`.

**Stale synchronous** (``staleness=τ``, Ho et al. 2013, "More Effective Distributed ML via
a Stale Synchronous Parallel Parameter Server"). Worker ``p``'s clock ``c_p`` counts the
gradients it has pushed. Each round the server sends its parameters, its version (the
number of steps it has applied) and the slowest clock ``c_min``; then each worker:

1. when idle, starts iteration ``c_p`` if ``c_p - c_min <= τ``: it pulls the parameters
   and takes ``d_p`` further rounds (its delay) to compute; otherwise it blocks (SSP's
   rule: the fastest worker is at most ``τ`` clocks ahead of the slowest);
2. when its computation is done (``d_p`` rounds after the pull, the same round for
   ``d_p = 0``), pushes the gradient of the pulled parameters on its batch of iteration
   ``c_p`` and counts ``c_p + 1``.

The server applies the gradients that arrive in a round as they come, as one optimizer
step with ``Σ_arrived b_p g_p / B``: each gradient weighs its worker's share of the global
batch, so with ``τ = 0`` and no delays every worker pushes every round and the step is the
synchronous one; with plain SGD it is the sum of one step per gradient. A gradient is never
dropped: blocking bounds its staleness, ``c_p - c_min`` at the pull, by ``τ``
(metric ``staleness``); ``version_lag`` is how many server steps were applied between its
pull and its arrival. Workers compute a gradient every round, the unused ones masked out
(fixed shapes under ``vmap``); a worker sends only when it pushes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax._checks import check_count
from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module, PeerSet
from bbjax.errors import InvalidArgument
from bbjax.simulation import Peers
from bbjax.strategies.parallel.shards import split

SERVER = "server"
WORKER = "worker"
"""The peer classes of a parameter-server round."""


@struct.dataclass
class WorkerClock:
    """A worker's SSP clock (gradients pushed), whether it is computing, the rounds left,
    its delay, and the clock lag and server version of its last pull."""

    clock: jax.Array
    busy: jax.Array
    remaining: jax.Array
    delay: jax.Array
    lag: jax.Array
    pulled_version: jax.Array


@struct.dataclass
class ServerClocks:
    """Every worker's clock as the server counts its arrivals, and the server's version."""

    clocks: jax.Array  # int32 [R]
    version: jax.Array  # int32


def _staleness(staleness: Any) -> int:
    if isinstance(staleness, bool) or not isinstance(staleness, (int, np.integer)) \
            or staleness < 0:
        raise InvalidArgument(f"staleness must be an integer >= 0, got {staleness!r}")
    return int(staleness)


def ssp_worker(staleness: int, name: str = "ssp_worker") -> Component:
    """A Protocol component holding a worker's SSP clock (:class:`WorkerClock`).

    ``init(key, delay=0)``: the worker's delay in rounds (clipped to >= 0). ``tick(
    min_clock, version) -> (pull, push, iteration, lag, pulled_version)``: this round's
    decisions (see the module docstring): whether it pulls the parameters, whether it
    pushes, the iteration of the gradient it computes (its clock), and the clock lag and
    server version of the parameters it holds. Raises :class:`InvalidArgument` for a
    ``staleness`` that is not an integer >= 0.
    """
    tau = _staleness(staleness)

    def init(key: jax.Array, delay: Any = 0) -> WorkerClock:
        del key
        zero = jnp.int32(0)
        return WorkerClock(zero, jnp.bool_(False), zero,
                           jnp.maximum(jnp.asarray(delay, jnp.int32), 0), zero, zero)

    def tick(state: WorkerClock, min_clock: Any, version: Any
             ) -> tuple[WorkerClock, tuple[jax.Array, ...]]:
        ahead = state.clock - jnp.asarray(min_clock, jnp.int32)
        pull = ~state.busy & (ahead <= tau)
        busy = state.busy | pull
        remaining = jnp.where(pull, state.delay, state.remaining)
        lag = jnp.where(pull, ahead, state.lag)
        pulled = jnp.where(pull, jnp.asarray(version, jnp.int32), state.pulled_version)
        push = busy & (remaining == 0)
        still = busy & ~push
        new = WorkerClock(state.clock + push.astype(jnp.int32), still,
                          jnp.where(still, remaining - 1, remaining), state.delay, lag, pulled)
        return new, (pull, push, state.clock, lag, pulled)

    return Component(Role.PROTOCOL, init, {"tick": tick}, name, config={"staleness": tau})


def ssp_server(num_workers: int, batch_size: int, name: str = "ssp_server") -> Component:
    """A Protocol component holding the server's view of the SSP clocks
    (:class:`ServerClocks`) and the global batch size ``B`` the gradients are weighed
    against. Methods: ``read() -> (version, min_clock, batch_size)``; ``record(arrived)
    -> ()``: count the arrivals (bool ``[num_workers]``, in worker order) and, when any
    arrived, one more version. Raises :class:`InvalidArgument` for a count that is not an
    integer >= 1."""
    num_workers = check_count("num_workers", num_workers)
    batch_size = check_count("batch_size", batch_size)

    def init(key: jax.Array) -> ServerClocks:
        del key
        return ServerClocks(jnp.zeros((num_workers,), jnp.int32), jnp.int32(0))

    def read(state: ServerClocks) -> tuple[ServerClocks, tuple[jax.Array, ...]]:
        return state, (state.version, jnp.min(state.clocks), jnp.float32(batch_size))

    def record(state: ServerClocks, arrived: Any) -> tuple[ServerClocks, tuple[()]]:
        arrived = jnp.asarray(arrived, bool)
        return ServerClocks(state.clocks + arrived.astype(jnp.int32),
                            state.version + jnp.any(arrived).astype(jnp.int32)), ()

    return Component(Role.PROTOCOL, init, {"read": read, "record": record}, name,
                     config={"num_workers": num_workers, "batch_size": batch_size})


def _weighted_sum(stacked: Any, weights: jax.Array) -> Any:
    return jax.tree.map(lambda s: jnp.tensordot(weights, s.astype(jnp.float32), 1)
                        .astype(s.dtype), stacked)


class ParameterServerRound(Module):
    """One server tick of parameter-server data parallelism over ``num_workers`` workers:
    synchronous with ``staleness=None``, stale synchronous with bound ``staleness``.

    Slots: ``model`` (:func:`~bbjax.strategies.parallel.replica.replica`, on the server
    and the workers) and ``data`` (:func:`~bbjax.strategies.parallel.shards.data_shard`,
    on the workers); with a ``staleness``, ``clock`` (:func:`ssp_worker`) on the workers
    and ``clocks`` (:func:`ssp_server`) on the server. Outputs (the server's):
    ``train_loss``, the ``b_p``-weighted mean loss of the gradients applied (0 when none);
    ``gradients``, how many were applied; with a ``staleness`` also ``staleness`` and
    ``version_lag``, their largest clock lag and version lag (0 when none) and
    ``version``, the server's version after the round. Raises :class:`InvalidArgument`
    for a ``num_workers`` that is not an integer >= 1 or a ``staleness`` that is not an
    integer >= 0.
    """

    name = "parameter_server"

    def __init__(self, num_workers: int, staleness: int | None = None):
        self.num_workers = check_count("num_workers", num_workers)
        self.staleness = None if staleness is None else _staleness(staleness)

    def body(self, g: Graph) -> None:
        workers, server = g.peers(WORKER, self.num_workers), g.peers(SERVER)
        if self.staleness is None:
            self._synchronous(g, workers, server)
        else:
            self._stale_synchronous(g, workers, server)

    def _synchronous(self, g: Graph, workers: PeerSet, server: PeerSet) -> None:
        pulled = g.send("params", g.slot("model").params(), to=workers)
        g.slot("model").load_parameters(pulled)
        x, y, count = g.slot("data").next_batch(after=pulled)
        grads, loss, count = g.slot("model").gradient(x, y, count)
        (stacked, losses, counts), arrived = g.gather("gradient", (grads, loss, count),
                                                      to=server, senders=workers)
        weights = jnp.where(arrived, counts, 0).astype(jnp.float32)
        total = jnp.sum(weights)
        coefficients = weights / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
        g.slot("model").apply_gradients(_weighted_sum(stacked, coefficients), total > 0)
        g.output("train_loss", jnp.sum(coefficients * losses))
        g.output("gradients", jnp.sum(arrived.astype(jnp.int32)))

    def _stale_synchronous(self, g: Graph, workers: PeerSet, server: PeerSet) -> None:
        version, min_clock, _ = g.slot("clocks").read()
        pulled, version, min_clock = g.send(
            "params", (g.slot("model").params(), version, min_clock), to=workers)
        pull, push, iteration, lag, pulled_version = g.slot("clock").tick(min_clock, version)
        held = g.slot("model").params(after=pull)
        g.slot("model").load_parameters(
            jax.tree.map(lambda new, old: jnp.where(pull, new, old), pulled, held))
        x, y, count = g.slot("data").batch(iteration)
        grads, loss, count = g.slot("model").gradient(x, y, count)
        to = PeerSet(jnp.where(push, server.ids, -1), SERVER)
        message = (grads, loss, count, lag, pulled_version)
        (stacked, losses, counts, lags, versions), arrived = g.gather(
            "gradient", message, to=to, senders=workers)
        now, _, batch_size = g.slot("clocks").read(after=arrived)
        weights = jnp.where(arrived, counts, 0).astype(jnp.float32)
        applied = jnp.any(arrived)
        g.slot("model").apply_gradients(_weighted_sum(stacked, weights / batch_size), applied)
        g.slot("clocks").record(arrived)
        total = jnp.sum(weights)
        g.output("train_loss", jnp.sum(weights * losses)
                 / jnp.maximum(total, jnp.finfo(jnp.float32).tiny))
        g.output("gradients", jnp.sum(arrived.astype(jnp.int32)))
        g.output("staleness", jnp.max(jnp.where(arrived, lags, 0)))
        g.output("version_lag", jnp.max(jnp.where(arrived, now - versions, 0)))
        g.output("version", now + applied.astype(jnp.int32))


def random_delays(num_workers: int, max_delay: int, seed: int) -> np.ndarray:
    """int32 ``[num_workers]`` delays drawn uniformly from ``[0, max_delay]`` by
    ``numpy.random.default_rng(seed)``. Raises :class:`InvalidArgument` for a count that
    is not an integer >= 1 or a ``max_delay`` that is not an integer >= 0."""
    num_workers = check_count("num_workers", num_workers)
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, np.integer)) \
            or max_delay < 0:
        raise InvalidArgument(f"max_delay must be an integer >= 0, got {max_delay!r}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, int(max_delay) + 1, num_workers).astype(np.int32)


def population(x: Any, y: Any, num_workers: int, batch_size: int,
               delays: Any = None) -> dict[str, Any]:
    """The population of a parameter-server run: ``{"server": 1, "worker":
    Peers(num_workers, init_args=...)}``, the workers' ``data`` their
    :func:`~bbjax.strategies.parallel.shards.split` shards of ``x``, ``y`` and ``clock``
    their ``delays`` (int ``[num_workers]``, rounds >= 0: give them, zeros included, for a
    stale synchronous round and not for a synchronous one). The server also plays the
    round's ``self``; every worker runs every round (no cohort, no dropout: the clocks
    assume every push arrives). Raises :class:`InvalidArgument` for delays of another
    shape, negative or not integers, and what ``split`` raises."""
    shards = split(x, y, num_workers, batch_size)
    init_args: dict[str, tuple] = {"data": shards}
    if delays is not None:
        given = np.asarray(delays)
        if given.shape != (num_workers,) or not np.issubdtype(given.dtype, np.integer) \
                or (given < 0).any():
            raise InvalidArgument(f"delays must be {num_workers} integers >= 0, got "
                                  f"{given.dtype}{list(given.shape)}: {given.tolist()}")
        init_args["clock"] = (given.astype(np.int32),)
    return {SERVER: 1, WORKER: Peers(num_workers, init_args=init_args)}
