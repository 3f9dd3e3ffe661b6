"""``Simulation``: a compiled Module's round for whole populations of peers, as one pure
jittable function ``(states, key, round) -> (states, metrics)``.

Each stage (a partition) runs its lowered step ``vmap``-ped over the peers that run it; the
messages of a stage are routed to the next stages' inboxes with array operations:

* a class of one peer sending to another class: a broadcast; the peers it addresses run
  the receiving stage, the others keep their state;
* any class sending to a ``g.gather`` port: the senders' payloads stacked on a leading
  axis, with a mask marking the senders that ran, addressed the receiver and were not
  dropped;
* a class gathering what it sent itself (gossip): collectives over the peer axis.

Peers of an entry with a ``cohort`` are drawn each round; only they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.compiler import Compiled
from bbjax.compiler.program import Program
from bbjax.components import Component
from bbjax.errors import SimulationError
from bbjax.simulation.exchange import PEER_AXIS, SimulatedRuntime
from bbjax.simulation.population import Peers, resolve_groups
from bbjax.simulation.schedule import Stage, build_stages

States = dict[str, dict[str, Any]]  # entry -> slot -> state stacked over the entry's peers
BYTES_SENT = "bytes_sent"
_BOOTSTRAP_STREAM = 0xFFFFFFFF
"""The key stream of the bootstrap stages: ``fold_in(key, _BOOTSTRAP_STREAM)``, an index no
peer class uses for its init keys."""


@dataclass
class _Sent:
    """What one stage sent on a port: payload leaves ``[k, ...]``, addressed ids ``[k, m]``
    and whether each of the ``k`` senders' message went out (``[k]``)."""

    leaves: list
    peers: jax.Array
    delivered: jax.Array


class Simulation:
    """The round of ``compiled`` for ``population`` with ``bindings`` for its slots
    (default: the components it was compiled with).

    ``population`` maps a peer class to a count or :class:`Peers`. Raises
    :class:`SimulationError` when the population does not cover the Module's classes, a
    slot has no component (or the artifact carries none and no ``bindings`` are given), a
    stage needs an input nobody provides, or a class of many peers sends single
    (non-gather) messages to another class; :class:`PassportError` when the passport does
    not verify or a component's fingerprint is not the one recorded for its slot.
    """

    def __init__(self, compiled: Compiled, population: Mapping[str, int | Peers],
                 bindings: Mapping[str, Component] | None = None):
        program = Program.of(compiled)
        self.groups, self.group_of = resolve_groups(population, set(program.peer_classes))
        self.bindings = program.bind(bindings, program.partitions, user="simulate",
                                     error=SimulationError)
        self.stages = build_stages(compiled, self.bindings, self.group_of, "main")
        self.bootstrap = build_stages(compiled, self.bindings, self.group_of, "bootstrap")
        self.slots = {name: sorted({s for st in self.stages + self.bootstrap
                                    if st.group == name for s in st.step.slots})
                      for name in self.groups}
        self._check()
        self.metric_names = self._metric_names()

    def _check(self) -> None:
        senders = {port: st for st in self.stages + self.bootstrap for port in st.sends}
        for stage in self.stages + self.bootstrap:
            peers = self.groups[stage.group]
            for name in stage.step.input_names:
                if not name.startswith("peers.") and name not in peers.inputs:
                    raise SimulationError(f"{stage.step.target} needs input {name!r}: give it "
                                          f"in Peers(inputs=...) of {stage.group!r}")
            for r in stage.receives:
                source = senders[r.port]
                if not r.gather and self.groups[source.group].running != 1:
                    raise SimulationError(
                        f"port {r.port!r}: {source.step.target} runs on "
                        f"{self.groups[source.group].running} peers; single messages from "
                        f"many peers need g.gather at the receiver")
        for name, peers in self.groups.items():
            extra = sorted(set(peers.init_args) - set(self.slots[name]))
            if extra:
                raise SimulationError(f"Peers.init_args of {name!r} names slots {extra} its "
                                      f"partitions do not call; they call {self.slots[name]}")

    def _metric_names(self) -> dict[tuple[str, str], str]:
        """(stage target, output) -> metric name; ``class.output`` where two stages clash."""
        outputs = [(st, o) for st in self.stages for o in st.step.output_names]
        counts: dict[str, int] = {}
        for _, o in outputs:
            counts[o] = counts.get(o, 0) + 1
        return {(st.step.target, o): o if counts[o] == 1 else f"{st.peer_class}.{o}"
                for st, o in outputs}

    # -- state ----------------------------------------------------------------------------

    @property
    def init_args(self) -> dict[str, dict[str, tuple]]:
        """Each entry's ``Peers.init_args``: the default of :meth:`init`."""
        return {name: dict(peers.init_args) for name, peers in self.groups.items()}

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        """Each entry's ``Peers.inputs``: the default of :meth:`init` and :meth:`round`."""
        return {name: dict(peers.inputs) for name, peers in self.groups.items()}

    def init(self, key: jax.Array, init_args: Mapping[str, Mapping[str, tuple]] | None = None,
             inputs: Mapping[str, Mapping[str, Any]] | None = None) -> States:
        """Every peer's slot states (from ``init(key_i, *init_args[entry][slot][i])``), after
        the bootstrap partitions ran once. Pass ``init_args`` and ``inputs`` (default: the
        population's) as arguments of a jitted ``init`` so that the data is not baked into
        the program as constants."""
        init_args = self.init_args if init_args is None else init_args
        states: States = {}
        for index, (name, peers) in enumerate(sorted(self.groups.items())):
            keys = jax.random.split(jax.random.fold_in(key, index), peers.count)
            slot_keys = jax.vmap(lambda k: jax.random.split(k, max(len(self.slots[name]), 1)))(keys)
            states[name] = {
                slot: jax.vmap(self.bindings[slot].init)(slot_keys[:, i],
                                                         *init_args[name].get(slot, ()))
                for i, slot in enumerate(self.slots[name])}
        if self.bootstrap:
            bootstrap_key = jax.random.fold_in(key, jnp.uint32(_BOOTSTRAP_STREAM))
            states, _ = self._run_stages(self.bootstrap, states, bootstrap_key,
                                         self.inputs if inputs is None else inputs)
        return states

    # -- one round --------------------------------------------------------------------------

    def round(self, states: States, key: jax.Array,
              inputs: Mapping[str, Mapping[str, Any]] | None = None
              ) -> tuple[States, dict[str, jax.Array]]:
        """One round for every peer: the new states and the round's scalar metrics.
        ``inputs`` as for :meth:`init`."""
        return self._run_stages(self.stages, states, key,
                                self.inputs if inputs is None else inputs)

    def _run_stages(self, stages: list[Stage], states: States, key: jax.Array,
                    inputs: Mapping[str, Mapping[str, Any]]
                    ) -> tuple[States, dict[str, jax.Array]]:
        cohort_key, drop_key = jax.random.split(key)
        running = {}
        for index, (name, peers) in enumerate(sorted(self.groups.items())):
            if peers.cohort is not None:
                ids = jax.random.choice(jax.random.fold_in(cohort_key, index), peers.count,
                                        (peers.cohort,), replace=False)
                running[name] = jnp.sort(ids).astype(jnp.int32)
        states = {name: dict(s) for name, s in states.items()}
        sent: dict[str, _Sent] = {}
        metrics: dict[str, jax.Array] = {BYTES_SENT: jnp.float32(0)}
        for index, stage in enumerate(stages):
            self._run_stage(stage, states, inputs[stage.group], running, sent, metrics,
                            jax.random.fold_in(drop_key, index))
        return states, metrics

    def _class_ids(self, peer_class: str, running: Mapping[str, jax.Array]) -> jax.Array:
        """The ids a ``peers.<class>`` input holds: the class's running peers this round."""
        group = self.group_of[peer_class]
        ids = running.get(group)
        return ids if ids is not None else jnp.arange(self.groups[group].count, dtype=jnp.int32)

    def _run_stage(self, stage: Stage, states: States, given: Mapping[str, Any],
                   running: Mapping[str, jax.Array],
                   sent: dict[str, _Sent], metrics: dict, key: jax.Array) -> None:
        peers = self.groups[stage.group]
        ids = running.get(stage.group)
        my_ids = self._class_ids(stage.peer_class, running)
        n = peers.running
        full = states[stage.group]
        local = {s: full[s] if ids is None else jax.tree.map(lambda a: a[ids], full[s])
                 for s in stage.step.slots}
        inputs = {}
        for name in stage.step.input_names:
            if name.startswith("peers."):
                class_ids = self._class_ids(name[len("peers."):], running)
                inputs[name] = jnp.broadcast_to(class_ids, (n, class_ids.shape[0]))
            else:
                value = jnp.asarray(given[name])
                inputs[name] = value if ids is None else value[ids]
        active = jnp.ones((n,), bool)
        inbox = {}
        for r in stage.receives:
            message = sent[r.port]
            to_me = jnp.any(message.peers[None, :, :] == my_ids[:, None, None], axis=-1)
            if r.gather:
                mask = message.delivered[None, :] & to_me
                inbox[r.port] = [jnp.broadcast_to(leaf, (n, *leaf.shape))
                                 for leaf in message.leaves] + [mask]
            else:
                active = active & message.delivered[0] & to_me[:, 0]
                inbox[r.port] = [jnp.broadcast_to(leaf[0], (n, *leaf.shape[1:]))
                                 for leaf in message.leaves]
        delivers = active
        if peers.dropout > 0:
            delivers = delivers & jax.random.bernoulli(key, 1.0 - peers.dropout, (n,))

        def one_peer(states_i, inputs_i, inbox_i, peer_id, delivers_i):
            runtime = SimulatedRuntime(stage.step.components, dict(states_i), inbox_i,
                                       peer_id=peer_id, delivers=delivers_i)
            outputs = stage.step.run(runtime, inputs_i)
            outbox = {port: (leaves, jnp.atleast_1d(jnp.asarray(to)))
                      for port, (leaves, to) in runtime.outbox.items()}
            return runtime.states, outputs, outbox

        new_local, outputs, outbox = jax.vmap(one_peer, axis_name=PEER_AXIS)(
            local, inputs, inbox, my_ids, delivers)
        for slot in stage.step.slots:
            kept = jax.tree.map(lambda new, old: _select(active, new, old),
                                new_local[slot], local[slot])
            full[slot] = kept if ids is None else jax.tree.map(
                lambda whole, part, new: whole if new is part else whole.at[ids].set(new),
                full[slot], local[slot], kept)
        for port, (leaves, to) in outbox.items():
            sent[port] = _Sent(leaves, to, delivers)
            per_message = sum(int(np.prod(leaf.shape[1:])) * leaf.dtype.itemsize
                              for leaf in leaves)
            copies = jnp.sum(delivers[:, None] & (to >= 0))
            metrics[BYTES_SENT] = metrics[BYTES_SENT] + per_message * copies.astype(jnp.float32)
        weight = active.astype(jnp.float32)
        for name, value in outputs.items():
            if (stage.step.target, name) in self.metric_names and jnp.ndim(value) == 1:
                total = jnp.sum(weight * value.astype(jnp.float32))
                metrics[self.metric_names[stage.step.target, name]] = (
                    total / jnp.maximum(jnp.sum(weight), 1.0))


def _select(active: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """``new`` for active peers, ``old`` for the others (no op for an unchanged leaf)."""
    if new is old:
        return new
    return jnp.where(active.reshape(active.shape + (1,) * (new.ndim - 1)), new, old)
