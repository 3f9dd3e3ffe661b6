"""``install``: verify a compiled artifact and put some of its partitions on a Node."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax

from bbjax.compiler import Compiled, verify_passport
from bbjax.compiler import annotations as ann
from bbjax.compiler.passport import check_component, recorded_bindings
from bbjax.components import Component
from bbjax.errors import BbjaxError, InstallError
from bbjax.runtime.node import Node, NodeConfig, port_spec
from bbjax.runtime.step import PartitionStep


def install(peer: int, compiled: Compiled, targets: Sequence[str],
            bindings: Mapping[str, Component], config: NodeConfig | None = None,
            key: jax.Array | None = None) -> Node:
    """A Node for ``peer`` running ``targets`` (full names or the part before ``#``).

    Verifies the passport, checks that each bound component has the fingerprint the
    passport records for its slot, creates one state per slot (shared by the node's
    partitions) and lowers each target into a jitted step. Raises :class:`InstallError`
    for an unknown target or a slot without a component, and :class:`PassportError` for a
    passport that does not verify or a component that is not the one compiled.
    """
    props = verify_passport(compiled.model)
    config = config or NodeConfig()
    functions = []
    for target in targets:
        try:
            functions.append(compiled.find(target))
        except BbjaxError as exc:
            raise InstallError(str(exc)) from exc
    boot = _bootstrap_partitions(compiled, functions)
    functions += boot
    for slot, value in recorded_bindings(props, functions).items():
        component = bindings.get(slot)
        if component is None:
            raise InstallError(f"slot {slot!r} needs a component ({value})")
        check_component(props, slot, component, "install")
    steps = [PartitionStep(compiled, f.name, bindings) for f in functions]
    slots = sorted({s for step in steps for s in step.slots})
    keys = jax.random.split(key if key is not None else jax.random.PRNGKey(peer),
                            max(len(slots), 1))
    states = {s: bindings[s].init(k) for s, k in zip(slots, keys)}
    specs = {}
    for function in functions:
        types = {v.name: v for v in function.value_info}
        for node in function.node:
            if not ann.is_recv(node):
                continue
            outputs = [types[o] for o in node.output]
            if ann.get(node, ann.GATHER) == "1":
                source = ann.get(node, ann.SOURCE_CLASS)
                if source not in config.peers:
                    raise InstallError(f"port {ann.get(node, ann.PORT)!r} gathers from class "
                                       f"{source!r}: NodeConfig.peers must list its peers")
                specs[ann.get(node, ann.PORT)] = port_spec(outputs[:-1], stacked_over=source)
            else:
                specs[ann.get(node, ann.PORT)] = port_spec(outputs)
    node = Node(peer, [s for s in steps if s.target not in {b.name for b in boot}], states,
                config, specs, compiled)
    for step in steps:
        if step.target in {b.name for b in boot}:
            node.bootstrap(step)
    return node


def _bootstrap_partitions(compiled: Compiled, functions: list) -> list:
    """The bootstrap partitions of the installed targets' peer classes."""
    classes = {ann.function_meta(f, ann.PEER_CLASS) for f in functions}
    return [f for f in compiled.model.functions
            if ann.function_meta(f, ann.PHASE) == "bootstrap"
            and ann.function_meta(f, ann.PEER_CLASS) in classes and f not in functions]
