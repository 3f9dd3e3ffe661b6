"""Pass ``partition_by_peer_class``: cut the graph into one function per peer class.

Each partition is a FunctionProto (domain ``ai.bytesandbrains.partition``) named
``<Module>_<class>#<16 hex of its content hash>``. Its inputs are the graph inputs it reads
(``state.<slot>`` tokens included), its outputs the graph outputs it computes, the final
``next_state.<slot>`` token of every slot it calls, and its sends' sentinels. Each slot's
token chain is cut per class: a partition's first call on a slot reads ``state.<slot>``.
Classless nodes (constant arithmetic) and initializers are copied into every partition that
needs them; ``value_info`` keeps every value's type.
"""

from __future__ import annotations

import hashlib

import onnx
from onnx import helper

from bbjax.compiler import annotations as ann
from bbjax.onnx import domains
from bbjax.errors import CompileError
from bbjax.dsl.graph import next_state_name, state_name


def partition_name(module: str, peer_class: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()[:16]
    base = module if peer_class == ann.SELF else f"{module}_{peer_class}"
    return f"{base}#{digest}"


def partition_by_peer_class(model: onnx.ModelProto, context) -> onnx.ModelProto:
    graph = model.graph
    types = {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: (i, node) for i, node in enumerate(graph.node) for out in node.output if out}
    classes = {ann.get(n, ann.HOME) for n in graph.node} - {""}
    if _classless_outputs(graph, producers):
        classes.add(ann.SELF)
    classes = sorted(classes)
    functions = [_partition(model, c, types, initializers, producers, context) for c in classes]
    out = ann.copy_model(model)
    out.graph.Clear()
    out.graph.name = graph.name
    del out.functions[:]
    out.functions.extend(functions)
    out.opset_import.append(helper.make_opsetid(domains.PARTITION, 1))
    return out


def _partition(model, peer_class, types, initializers, producers,
               context) -> onnx.FunctionProto:
    graph = model.graph
    mine = [n for n in graph.node if ann.get(n, ann.HOME) == peer_class]
    roots = _classless_outputs(graph, producers) if peer_class == ann.SELF else []
    needed = _classless_closure(mine, producers, roots)
    nodes = [_copy_node(n) for i, n in enumerate(graph.node)
             if i in needed or ann.get(n, ann.HOME) == peer_class]
    last_token: dict[str, str] = {}
    inputs: list[str] = []
    for node in nodes:
        if ann.is_slot_call(node) and ann.get(node, ann.HOME) == peer_class:
            slot = ann.get(node, ann.SLOT)
            node.input[-1] = last_token.get(slot, state_name(slot))
            last_token[slot] = node.output[-1]
    produced = {o for n in nodes for o in n.output if o}
    constants = []
    for node in nodes:
        for name in node.input:
            if not name or name in produced or name in inputs:
                continue
            if name in initializers:
                constants.append(helper.make_node("Constant", [], [name],
                                                  value=initializers[name]))
                produced.add(name)
            elif name in producers:
                raise CompileError(f"value {name!r} of class "
                                   f"{ann.get(producers[name][1], ann.HOME)!r} is read on class "
                                   f"{peer_class!r} without a send")
            else:
                inputs.append(name)
    outputs = [o.name for o in graph.output if o.name in produced
               and not o.name.startswith("next_state.")
               and (peer_class == ann.SELF or _output_home(o.name, producers) != "")]
    finals = []
    for slot, token in sorted(last_token.items()):
        if token != next_state_name(slot):  # the graph's own final token needs no rename
            finals.append(helper.make_node("Identity", [token], [next_state_name(slot)]))
        outputs.append(next_state_name(slot))
    outputs += [o for n in nodes if ann.is_send(n) for o in n.output]
    body = [*constants, *nodes, *finals]
    value_info = [types[n] for n in sorted({*inputs, *produced, *outputs}) if n in types]
    value_info += [_token_type(n) for n in [*inputs, *outputs]
                   if n.startswith(("state.", "next_state.", "sent.")) and n not in types]
    function = helper.make_function(
        domains.PARTITION, peer_class, inputs, outputs, body,
        opset_imports=[i for i in model.opset_import if i.domain != domains.PARTITION])
    function.value_info.extend(value_info)
    function.name = partition_name(graph.name or "module", peer_class,
                                   function.SerializeToString(deterministic=True))
    function.doc_string = f"peer class {peer_class!r}"
    phase = "bootstrap" if getattr(context, "module", "").endswith("__bootstrap") else "main"
    function.metadata_props.add(key=ann.PEER_CLASS, value=peer_class)
    function.metadata_props.add(key=ann.PHASE, value=phase)
    return function


def _classless_outputs(graph: onnx.GraphProto, producers) -> list[str]:
    """Graph outputs computed by classless nodes only (constants): the ``self`` partition
    computes them, as it owns the graph's inputs."""
    return [o.name for o in graph.output if _output_home(o.name, producers) == ""]


def _output_home(name: str, producers) -> str | None:
    node = producers.get(name, (None, None))[1]
    return None if node is None else ann.get(node, ann.HOME)


def _classless_closure(mine, producers, roots=()) -> set[int]:
    """Indices of the classless nodes the partition's nodes (and the values ``roots``) read
    from, transitively."""
    needed: set[int] = set()
    stack = [i for n in mine for i in n.input if i] + list(roots)
    while stack:
        index, node = producers.get(stack.pop(), (None, None))
        if node is None or index in needed or ann.get(node, ann.HOME) != "":
            continue
        needed.add(index)
        stack.extend(i for i in node.input if i)
    return needed


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _token_type(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, [])


