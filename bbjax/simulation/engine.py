"""``Simulation``: a compiled Module's round for whole populations of peers, as one pure
jittable function ``(states, key, inputs, index, tables) -> (states, metrics)``.

Each stage (a partition) runs its lowered step ``vmap``-ped over the peers that run it:
the entry's cohort slots this round, or all its peers. A stage's messages are routed to
the next stages' inboxes by peer index, at a cost linear in the senders, the ids they
address and the receivers:

* a class of one peer sending to another class: a broadcast. The addressed ids are
  scattered into a mask over the receiving entry, which each receiver reads at its own
  id; the payload is shared by every receiver, not copied. A running receiver that was
  not addressed is inactive: it keeps its state and its outputs and messages count for
  nothing.
* any class sending to a ``g.gather`` port: the senders' payloads stacked on a leading
  axis (shared), and a ``[receivers, senders]`` mask scattered from the addressed ids,
  true where the sender ran, addressed the receiver and was not dropped.
* a class gathering what it sent itself: inside the step, from each peer's neighbours
  (:mod:`bbjax.simulation.exchange`).

A ``peers.<class>`` input holds the running ids of that class, shared by the peers of the
stage, except that the peers of an entry with ``neighbours`` each see their own neighbour
row as the entry's peers. Only the peers that ran write their states back: with a cohort,
each leaf a step rewrote is scattered into the entry's stack at the drawn ids, and leaves
it did not rewrite (a client's data, say) are neither copied nor written. A cohort's step
reads its states from the entry's stacks at the drawn rows (:mod:`bbjax.simulation.rows`),
so a drawn client's ``x[rows]`` is one gather from the stacked data, never a copy of it.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.compiler import Compiled
from bbjax.compiler.program import Program
from bbjax.components import Component, Role
from bbjax.dsl.graph import peer_input_name
from bbjax.errors import SimulationError
from bbjax.simulation.exchange import PEER_AXIS, SimulatedRuntime
from bbjax.simulation.population import Peers, resolve_groups
from bbjax.simulation.rows import RowView
from bbjax.simulation.rows import run as run_rows
from bbjax.simulation.schedule import Stage, build_stages

States = dict[str, dict[str, Any]]  # entry -> slot -> state stacked over the entry's peers
Tables = dict[str, dict[str, Any]]  # entry -> "cohort" / "neighbours" -> array
BYTES_SENT = "bytes_sent"
START_ROUND = "start_round"
_PEERS = peer_input_name("")
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
    (default: the components the artifact was compiled with).

    ``population`` maps a peer class to a count or :class:`Peers`. Raises
    :class:`SimulationError` when the population does not cover the Module's classes, a
    slot has no component, a stage needs an input nobody provides, or a class of many peers
    sends single (non-gather) messages to another class; :class:`PassportError` when the
    passport does not verify or a component's fingerprint is not the one recorded for its
    slot.
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
        self._starts = self._round_starts()

    def _check(self) -> None:
        senders = {port: st for st in self.stages + self.bootstrap for port in st.sends}
        for stage in self.stages + self.bootstrap:
            peers = self.groups[stage.group]
            for name in stage.step.input_names:
                if not name.startswith(_PEERS) and name not in peers.inputs:
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

    def _round_starts(self) -> list[list[str]]:
        """Per main stage, the DataSource slots with a ``start_round`` method that it is the
        entry's first stage to call this round (it tells them the round's index)."""
        seen: set[tuple[str, str]] = set()
        starts = []
        for stage in self.stages:
            here = []
            for slot in stage.step.slots:
                component = self.bindings[slot]
                if (component.role is Role.DATA_SOURCE and START_ROUND in component.methods
                        and (stage.group, slot) not in seen):
                    seen.add((stage.group, slot))
                    here.append(slot)
            starts.append(here)
        return starts

    def with_population(self, population: Mapping[str, int | Peers]) -> Simulation:
        """This simulation (its stages, components and compiled programs' tracing) for
        ``population``'s data, schedules and neighbours, which must have the shapes of this
        one's: what ``simulate``'s cache reuses."""
        other = copy.copy(self)
        other.groups, _ = resolve_groups(population, set(self.group_of))
        return other

    # -- arguments ------------------------------------------------------------------------

    @property
    def init_args(self) -> dict[str, dict[str, tuple]]:
        """Each entry's ``Peers.init_args``: the default of :meth:`init`."""
        return {name: dict(peers.init_args) for name, peers in self.groups.items()}

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        """Each entry's ``Peers.inputs``: the default of :meth:`init` and :meth:`round`."""
        return {name: dict(peers.inputs) for name, peers in self.groups.items()}

    @property
    def tables(self) -> Tables:
        """Each entry's cohort schedule or availability trace (``"cohort"``) and
        ``"neighbours"``, where it has them: the default of :meth:`init` and :meth:`round`.
        Pass them as arguments of a jitted round so they are not baked into its program."""
        return {name: peers.tables for name, peers in self.groups.items() if peers.tables}

    @property
    def scheduled_rounds(self) -> int | None:
        """How many rounds the population's cohort schedules and traces cover (None: any)."""
        covered = [p.plan.rounds for p in self.groups.values()
                   if p.plan is not None and p.plan.rounds is not None]
        return min(covered) if covered else None

    # -- state ----------------------------------------------------------------------------

    def init(self, key: jax.Array, init_args: Mapping[str, Mapping[str, tuple]] | None = None,
             inputs: Mapping[str, Mapping[str, Any]] | None = None,
             tables: Tables | None = None) -> States:
        """Every peer's slot states (from ``init(key_i, *init_args[entry][slot][i])``), after
        the bootstrap partitions ran once on every peer (each node runs its bootstrap when
        it is installed; cohorts apply to rounds). Pass ``init_args``, ``inputs`` and
        ``tables`` (default: the population's) as arguments of a jitted ``init`` so that
        the data is not baked into the program as constants."""
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
            states, _ = self._run_stages(
                self.bootstrap, states, bootstrap_key, self.inputs if inputs is None else inputs,
                self.tables if tables is None else tables, None)
        return states

    # -- one round --------------------------------------------------------------------------

    def round(self, states: States, key: jax.Array,
              inputs: Mapping[str, Mapping[str, Any]] | None = None,
              index: int | jax.Array = 0, tables: Tables | None = None
              ) -> tuple[States, dict[str, jax.Array]]:
        """One round for every peer: the new states and the round's scalar metrics.
        ``index`` is the round's number (counting from 0): cohort schedules and traces
        read their row ``index``, and DataSources with a ``start_round`` method are told
        it. ``inputs`` and ``tables`` as for :meth:`init`. Raises :class:`SimulationError`
        for a concrete ``index`` past what a schedule covers."""
        covered = self.scheduled_rounds
        if covered is not None and isinstance(index, numbers.Integral) \
                and not 0 <= index < covered:
            raise SimulationError(f"round index {index} is outside the {covered} rounds the "
                                  f"cohort schedules cover")
        return self._run_stages(self.stages, states, key,
                                self.inputs if inputs is None else inputs,
                                self.tables if tables is None else tables,
                                jnp.asarray(index, jnp.int32))

    def _run_stages(self, stages: list[Stage], states: States, key: jax.Array,
                    inputs: Mapping[str, Mapping[str, Any]], tables: Tables,
                    index: jax.Array | None) -> tuple[States, dict[str, jax.Array]]:
        """The ``stages`` once; ``index`` None for the bootstrap (no cohort, no round)."""
        cohort_key, drop_key = jax.random.split(key)
        running: dict[str, jax.Array | None] = {}
        for i, (name, peers) in enumerate(sorted(self.groups.items())):
            running[name] = None
            if index is not None and peers.plan is not None:
                running[name] = peers.plan.ids(jax.random.fold_in(cohort_key, i), index,
                                               tables.get(name, {}).get("cohort"), peers.count)
        states = {name: dict(s) for name, s in states.items()}
        sent: dict[str, _Sent] = {}
        metrics: dict[str, jax.Array] = {BYTES_SENT: jnp.float32(0)}
        for position, stage in enumerate(stages):
            starts = self._starts[position] if index is not None else []
            self._run_stage(stage, states, inputs[stage.group], tables, running, sent, metrics,
                            jax.random.fold_in(drop_key, position), index, starts)
        return states, metrics

    def _ids(self, group: str, running: Mapping[str, jax.Array | None]) -> jax.Array:
        """The ids of ``group``'s running peers (``-1`` in empty cohort slots)."""
        ids = running[group]
        return ids if ids is not None else jnp.arange(self.groups[group].count, dtype=jnp.int32)

    def _run_stage(self, stage: Stage, states: States, given: Mapping[str, Any],
                   tables: Tables, running: Mapping[str, jax.Array | None],
                   sent: dict[str, _Sent], metrics: dict, key: jax.Array,
                   index: jax.Array | None, starts: list[str]) -> None:
        peers = self.groups[stage.group]
        cohort = running[stage.group] is not None
        ids = self._ids(stage.group, running)
        rows = jnp.clip(ids, 0)  # where a slot reads (an empty one reads row 0, unused)
        rows_of = _rows_of(ids, peers.count)
        neighbours = tables.get(stage.group, {}).get("neighbours")
        own = None if neighbours is None else jnp.asarray(neighbours)[rows]
        inputs, input_axes = {}, {}
        for name in stage.step.input_names:
            if name.startswith(_PEERS):
                group = self.group_of[name[len(_PEERS):]]
                if group == stage.group and own is not None:
                    inputs[name], input_axes[name] = own, 0
                else:
                    inputs[name], input_axes[name] = self._ids(group, running), None
            else:
                value = jnp.asarray(given[name])
                inputs[name], input_axes[name] = value[rows] if cohort else value, 0
        active = ids >= 0
        inbox, inbox_axes = {}, {}
        for r in stage.receives:
            message = sent[r.port]
            shared = [None] * len(message.leaves)
            if r.gather:
                inbox[r.port] = [*message.leaves, _gather_mask(message, rows_of, ids.shape[0])]
                inbox_axes[r.port] = [*shared, 0]
            else:
                to_me = _addressed(message.peers[0], peers.count)[rows]
                active = active & message.delivered[0] & to_me
                inbox[r.port] = [leaf[0] for leaf in message.leaves]
                inbox_axes[r.port] = shared
        delivers = active
        if peers.dropout > 0:
            delivers = delivers & jax.random.bernoulli(key, 1.0 - peers.dropout, ids.shape)

        def one_peer(states_i, inputs_i, inbox_i, peer_id, delivers_i, neighbours_i):
            runtime = SimulatedRuntime(stage.step.components, states_i, inbox_i,
                                       peer_id=peer_id, delivers=delivers_i,
                                       neighbours=neighbours_i, rows_of=rows_of)
            for slot in starts:
                runtime.call_slot(slot, START_ROUND, (index,))
            outputs = stage.step.run(runtime, inputs_i)
            outbox = {port: (leaves, jnp.atleast_1d(jnp.asarray(to)))
                      for port, (leaves, to) in runtime.outbox.items()}
            return runtime.rewritten(), outputs, outbox

        def one_drawn_peer(stacks, row, *args):
            """``one_peer`` with its states read from the entry's stacks at ``row``
            (:mod:`bbjax.simulation.rows`: no copy of the drawn peers' states)."""
            shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), stacks)
            closed, out = jax.make_jaxpr(lambda st, a: one_peer(st, *a),
                                         return_shape=True)(shapes, args)
            views = [RowView(stack, row) for stack in jax.tree.leaves(stacks)]
            return jax.tree.unflatten(jax.tree.structure(out),
                                      run_rows(closed, views + jax.tree.leaves(args)))

        full = states[stage.group]
        local = {s: full[s] for s in stage.step.slots}
        args = (inputs, inbox, ids, delivers, own)
        axes = (input_axes, inbox_axes, 0, 0, None if own is None else 0)
        if cohort:
            rewritten, outputs, outbox = jax.vmap(
                one_drawn_peer, in_axes=(None, 0, *axes), axis_name=PEER_AXIS)(
                    local, rows, *args)
        else:
            rewritten, outputs, outbox = jax.vmap(
                one_peer, in_axes=(0, *axes), axis_name=PEER_AXIS)(local, *args)
        for slot in stage.step.slots:
            leaves, tree = jax.tree.flatten(full[slot])
            for i, new in enumerate(rewritten[slot]):
                if new is None:
                    continue
                if cohort:  # scatter the rows of the peers that ran; others are dropped
                    target = jnp.where(active, ids, peers.count)
                    leaves[i] = leaves[i].at[target].set(new, mode="drop")
                else:
                    leaves[i] = _select(active, new, leaves[i])
            full[slot] = jax.tree.unflatten(tree, leaves)
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


def _rows_of(ids: jax.Array, count: int) -> jax.Array:
    """For each of an entry's ``count`` ids, its row among the running ``ids`` (-1: none)."""
    target = jnp.where(ids >= 0, ids, count)
    rows = jnp.arange(ids.shape[0], dtype=jnp.int32)
    return jnp.full((count,), -1, jnp.int32).at[target].set(rows, mode="drop")


def _addressed(ids: jax.Array, count: int) -> jax.Array:
    """bool ``[count]``: which of an entry's peers ``ids`` names (other ids name nobody)."""
    target = jnp.where((ids >= 0) & (ids < count), ids, count)
    return jnp.zeros((count,), bool).at[target].set(True, mode="drop")


def _gather_mask(message: _Sent, rows_of: jax.Array, receivers: int) -> jax.Array:
    """bool ``[receivers, senders]``: sender ``j`` delivered to the receiver of row ``i``."""
    count = rows_of.shape[0]
    peers = message.peers
    valid = (peers >= 0) & (peers < count)
    rows = jnp.where(valid, rows_of[jnp.clip(peers, 0, count - 1)], -1)
    rows = jnp.where(rows >= 0, rows, receivers)
    senders = jnp.broadcast_to(jnp.arange(peers.shape[0])[:, None], peers.shape)
    mask = jnp.zeros((receivers, peers.shape[0]), bool).at[rows, senders].set(True, mode="drop")
    return mask & message.delivered[None, :]


def _select(active: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """``new`` for active peers, ``old`` for the others."""
    return jnp.where(active.reshape(active.shape + (1,) * (new.ndim - 1)), new, old)
