"""``install``: verify a compiled artifact and put some of its partitions on a Node."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax

from bbjax.compiler import Compiled
from bbjax.compiler.program import Partition, Program
from bbjax.components import Component
from bbjax.errors import BbjaxError, InstallError
from bbjax.runtime.node import Node, NodeConfig, PortSpec, port_spec
from bbjax.compiler.step import PartitionStep


def install(peer: int, compiled: Compiled, targets: Sequence[str],
            bindings: Mapping[str, Component] | None = None, config: NodeConfig | None = None,
            key: jax.Array | None = None) -> Node:
    """A Node for ``peer`` running ``targets`` (full names or the part before ``#``) and
    the bootstrap partitions of their classes.

    ``bindings`` (slot -> component) default to the components the artifact was compiled
    with. Verifies the passport, checks that each component has the fingerprint the
    passport records for its slot, creates one state per slot (shared by the node's
    partitions) and lowers each target into a jitted step (with the op overrides of the
    Backends among the bindings). Raises :class:`InstallError` for an unknown target, a slot
    without a component, an artifact loaded without components and no ``bindings``, or a
    gather from a class ``config.peers`` does not list; :class:`PassportError` for a
    passport that does not verify or a component that is not the one compiled.
    """
    program = Program.of(compiled)
    config = config or NodeConfig()
    main = []
    for target in targets:
        try:
            main.append(program.partition(target))
        except BbjaxError as exc:
            raise InstallError(str(exc)) from exc
    boot = list(program.bootstrap_of(main))
    components = program.bind(bindings, main + boot, user="install", error=InstallError)
    specs = {port: spec for p in main + boot for port, spec in _port_specs(p, config).items()}
    steps = [PartitionStep(compiled, p.name, components) for p in main + boot]
    slots = sorted({s for p in main + boot for s in p.slots})
    keys = jax.random.split(key if key is not None else jax.random.PRNGKey(peer),
                            max(len(slots), 1))
    states = {s: components[s].init(k) for s, k in zip(slots, keys)}
    node = Node(peer, steps[:len(main)], states, config, specs, compiled)
    for step in steps[len(main):]:
        node.bootstrap(step)
    return node


def _port_specs(partition: Partition, config: NodeConfig) -> dict[str, PortSpec]:
    """The :class:`PortSpec` of each port ``partition`` receives on."""
    specs = {}
    for r in partition.receives:
        if r.gather and r.source_class not in config.peers:
            raise InstallError(f"port {r.port!r} gathers from class {r.source_class!r}: "
                               "NodeConfig.peers must list its peers")
        symbolic = [v.shape for v in r.values if not all(isinstance(d, int) for d in v.shape)]
        if symbolic:
            raise InstallError(f"port {r.port!r} carries arrays of symbolic shapes {symbolic}; "
                               "a Node receives fixed shapes only")
        specs[r.port] = port_spec(r.values, stacked_over=r.source_class if r.gather else None)
    return specs
