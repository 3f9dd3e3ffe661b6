"""Pass ``inline_slots``: each slot method's exported ONNX graph spliced into its partition.

Before this pass a slot call is an opaque ``ai.bytesandbrains.role.<role>::<method>`` node
threading a ``uint8`` state token. For every slot whose component's called methods all
export (:func:`bbjax.onnx.export`, at the component's ``abstract_state`` and the input
types the slot call carries) and lower again, the pass replaces each call with the nodes of
``method(state, *inputs) -> (state, outputs)``: the slot's state becomes real partition
inputs ``state.<slot>.<leaf path>`` and outputs ``next_state.<slot>.<leaf path>`` (typed PRNG
keys as their raw ``uint32`` key data), its trigger inputs go (dataflow orders the calls) and
the partition is one ONNX program over tensors. A slot that cannot be inlined keeps its slot
calls and token. Each partition records, per slot it uses, function metadata
``ai.bytesandbrains.inline.<slot>`` = ``"inlined"`` or ``"opaque: <reason>"``, and is renamed
``<base>#<16 hex of its new content hash>``; the passport (stamped after this pass) hashes the
inlined partition.

A DataSource's state leaves keep the leading axis the bound component had at compile time;
a peer whose data source holds another number of examples needs the slot left opaque
(``Compiler(inline=[...])`` without it).
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper

from bbjax.compiler import annotations as ann
from bbjax.components import Component
from bbjax.dsl.graph import next_state_name, state_name
from bbjax.errors import BbjaxError, CompileError
from bbjax.onnx import export
from bbjax.onnx.dtypes import numpy_dtype
from bbjax.onnx.ops import registry
from bbjax.onnx.random_primitives import impl_name
from bbjax.onnx.treedef import leaf_names, treedef_from_json

INLINE = ann.PREFIX + "inline."
INLINED = "inlined"
_REASON_CHARS = 300

PyTree = Any


def slot_status(function: onnx.FunctionProto) -> dict[str, str]:
    """Slot -> ``"inlined"`` or ``"opaque: <reason>"``, as the pass recorded it (empty for a
    partition compiled with ``inline=False``)."""
    return {p.key[len(INLINE):]: p.value for p in function.metadata_props
            if isinstance(p.key, str) and p.key.startswith(INLINE)}


def inlined_slots(function: onnx.FunctionProto) -> list[str]:
    """The slots whose methods ``function`` runs inline, sorted."""
    return sorted(s for s, status in slot_status(function).items() if status == INLINED)


def state_leaf_names(slot: str, abstract_state: PyTree) -> list[str]:
    """The partition inputs of ``slot``'s state leaves: ``state.<slot>.<leaf path>``."""
    return _unique(leaf_names(abstract_state, state_name(slot)))


def next_state_leaf_names(slot: str, abstract_state: PyTree) -> list[str]:
    """The partition outputs of ``slot``'s new state leaves: ``next_state.<slot>.<path>``."""
    prefix = len(state_name(slot))
    return [next_state_name(slot) + n[prefix:] for n in state_leaf_names(slot, abstract_state)]


def inline_slots(model: onnx.ModelProto, context: Any) -> onnx.ModelProto:
    """The pass: every partition of ``model`` with the slots ``context.inline`` selects
    (None: all) inlined where their bound components' methods export."""
    selected = getattr(context, "inline", None)
    out = ann.copy_model(model)
    functions = [_inline_partition(f, context.bindings, selected) for f in out.functions]
    del out.functions[:]
    out.functions.extend(functions)
    imported = {i.domain for i in out.opset_import}
    for function in functions:
        for opset in function.opset_import:
            if opset.domain not in imported:
                out.opset_import.append(opset)
                imported.add(opset.domain)
    return out


# -- one partition ---------------------------------------------------------------------------

@dataclass
class _Call:
    """One slot call: its index in the partition's nodes and the exported method."""

    index: int
    node: onnx.NodeProto
    method: onnx.ModelProto


def _inline_partition(function: onnx.FunctionProto, bindings: Mapping[str, Component],
                      selected: Collection[str] | None) -> onnx.FunctionProto:
    nodes = list(function.node)
    types = {v.name: v for v in function.value_info}
    by_slot: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        if ann.is_slot_call(node):
            by_slot.setdefault(ann.get(node, ann.SLOT), []).append(i)
    status: dict[str, str] = {}
    plans: dict[str, list[_Call]] = {}
    for slot, indices in sorted(by_slot.items()):
        if selected is not None and slot not in selected:
            status[slot] = "opaque: not selected by Compiler(inline=...)"
            continue
        plan = _plan(slot, bindings[slot], [nodes[i] for i in indices], indices, nodes, types)
        if isinstance(plan, str):
            status[slot] = f"opaque: {plan}"[:_REASON_CHARS]
        else:
            status[slot] = INLINED
            plans[slot] = plan
    out = _splice(function, nodes, types, plans, bindings)
    for slot, text in sorted(status.items()):
        out.metadata_props.add(key=INLINE + slot, value=text)
    base = function.name.split("#", 1)[0]
    body = out.SerializeToString(deterministic=True)
    out.name = f"{base}#{hashlib.sha256(body).hexdigest()[:16]}"
    return out


def _plan(slot: str, component: Component, calls: Sequence[onnx.NodeProto],
          indices: Sequence[int], nodes: Sequence[onnx.NodeProto],
          types: Mapping[str, onnx.ValueInfoProto]) -> list[_Call] | str:
    """The exported method of every call on ``slot``, or why the slot stays opaque."""
    tokens = {state_name(slot)} | {c.output[-1] for c in calls}
    own = set(indices)
    for i, node in enumerate(nodes):
        if i in own or _is_final_identity(node, slot, tokens):
            continue
        if tokens.intersection(node.input):
            return f"its state token is read by {ann.label(node)}"
    plan = []
    for index, node in zip(indices, calls):
        exported = _export_call(component, node, types)
        if isinstance(exported, str):
            return exported
        plan.append(_Call(index, node, exported))
    return plan


def _is_final_identity(node: onnx.NodeProto, slot: str, tokens: set[str]) -> bool:
    return (node.op_type == "Identity" and node.domain == "" and len(node.input) == 1
            and node.input[0] in tokens and list(node.output) == [next_state_name(slot)])


def _export_call(component: Component, node: onnx.NodeProto,
                 types: Mapping[str, onnx.ValueInfoProto]) -> onnx.ModelProto | str:
    n_triggers = int(ann.get(node, ann.N_TRIGGERS, "0") or 0)
    data = list(node.input[: len(node.input) - 1 - n_triggers])
    specs = []
    for name in data:
        spec = _spec(types.get(name))
        if spec is None:
            return f"input {name!r} of {ann.label(node)} has no complete tensor type"
        specs.append(spec)
    try:
        in_tree = treedef_from_json(ann.get(node, ann.PREFIX + "in_tree") or "")
        args = jax.tree.unflatten(in_tree, specs)
    except (BbjaxError, ValueError, TypeError) as exc:
        return f"the input structure of {ann.label(node)} is unreadable: {exc}"
    exported = _exported(component, node.op_type, args)
    if isinstance(exported, str):
        return exported
    n_state = len(jax.tree.leaves(component.abstract_state))
    n_out = len(exported.graph.output) - n_state
    if n_out != len(node.output) - 1:
        return (f"{component.name}.{node.op_type} returns {n_out} output arrays, the slot call "
                f"has {len(node.output) - 1}")
    for i, name in enumerate(node.output[:-1]):
        want, got = _elem(types.get(name)), _elem_of(exported.graph.output[n_state + i])
        if want is not None and want != got:
            return (f"output {i} of {component.name}.{node.op_type} has ONNX element type "
                    f"{got}, the slot call expects {want}")
    return exported


def _spec(value: onnx.ValueInfoProto | None) -> jax.ShapeDtypeStruct | None:
    if value is None or value.type.WhichOneof("value") != "tensor_type":
        return None
    tensor = value.type.tensor_type
    if not tensor.elem_type or not tensor.HasField("shape"):
        return None
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            return None
    return jax.ShapeDtypeStruct(tuple(dims), numpy_dtype(tensor.elem_type))


def _elem(value: onnx.ValueInfoProto | None) -> int | None:
    return None if value is None else _elem_of(value)


def _elem_of(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


# -- exporting one method ----------------------------------------------------------------------

_EXPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _exported(component: Component, method: str, args: Any) -> onnx.ModelProto | str:
    """``method`` of ``component`` exported at its abstract state and ``args`` (cached per
    component), or why it cannot be."""
    key = (method, _signature(args))
    cache = _EXPORTS.setdefault(component, {})
    if key not in cache:
        cache[key] = _export_method(component, method, args)
    return cache[key]


def _signature(args: Any) -> str:
    leaves, tree = jax.tree.flatten(args)
    return f"{tree}|" + ";".join(f"{leaf.dtype}{tuple(leaf.shape)}" for leaf in leaves)


def _export_method(component: Component, method: str, args: Any) -> onnx.ModelProto | str:
    state = jax.tree.map(_example_leaf, component.abstract_state)
    n_state = len(jax.tree.leaves(state))
    n_args = len(jax.tree.leaves(args))

    def run(state: PyTree, args: Any) -> tuple[PyTree, Any]:
        return component.call(method, state, *args)

    try:
        out = jax.eval_shape(run, state, args)
        n_out = len(jax.tree.leaves(out))
        model = export(run, state, args, name=f"{component.name}.{method}",
                       input_names=[f"s{i}" for i in range(n_state)]
                       + [f"x{i}" for i in range(n_args)],
                       output_names=[f"ns{i}" for i in range(n_state)]
                       + [f"y{i}" for i in range(n_out - n_state)])
    except Exception as exc:  # noqa: BLE001 - any failure keeps the slot opaque, with why
        text = re.sub(r"\S*[/\\]", "", " ".join(str(exc).split()))  # no machine paths
        return f"{component.name}.{method} does not export: {type(exc).__name__}: {text}"
    missing = sorted(_unlowerable(model.graph))
    if missing:
        return f"{component.name}.{method} exports ops bbjax cannot lower: {missing}"
    if model.graph.sparse_initializer:
        return f"{component.name}.{method} exports sparse initializers"
    return model


def _example_leaf(leaf: Any) -> Any:
    """A state leaf for export: typed PRNG keys as concrete keys (export reads their
    implementation), everything else as it is."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        name = impl_name(leaf.dtype)
        data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=name)))
        return jax.random.wrap_key_data(jnp.zeros(tuple(leaf.shape) + data.shape, data.dtype),
                                        impl=name)
    return leaf


def _unlowerable(graph: onnx.GraphProto) -> set[str]:
    missing = set()
    for node in graph.node:
        if registry.lookup(node.domain, node.op_type) is None:
            missing.add(f"{node.domain or 'ai.onnx'}::{node.op_type}")
        for sub in _subgraphs(node):
            missing |= _unlowerable(sub)
    return missing


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return graphs


# -- splicing ----------------------------------------------------------------------------------

def _splice(function: onnx.FunctionProto, nodes: list[onnx.NodeProto],
            types: Mapping[str, onnx.ValueInfoProto], plans: Mapping[str, list[_Call]],
            bindings: Mapping[str, Component]) -> onnx.FunctionProto:
    """``function`` with the calls in ``plans`` replaced by their methods' nodes."""
    out = onnx.FunctionProto()
    out.CopyFrom(function)
    if not plans:
        return out
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    new_types: dict[str, onnx.ValueInfoProto] = {}
    token_names: set[str] = set()
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for slot, calls in plans.items():
        abstract = bindings[slot].abstract_state
        first, last = state_leaf_names(slot, abstract), next_state_leaf_names(slot, abstract)
        inputs[state_name(slot)], outputs[next_state_name(slot)] = first, last
        current = first
        token_names |= {state_name(slot), next_state_name(slot)}
        for k, call in enumerate(calls):
            token_names.add(call.node.output[-1])
            final = k == len(calls) - 1
            body, value_info, current = _instantiate(call, f"inline.{slot}.{k}.", current,
                                                     last if final else None)
            replaced[call.index] = body
            for value in value_info:
                new_types.setdefault(value.name, value)
        final_tokens = {state_name(slot), calls[-1].node.output[-1]}
        dropped |= {i for i, n in enumerate(nodes) if _is_final_identity(n, slot, final_tokens)}
    body = []
    for i, node in enumerate(nodes):
        if i in dropped:
            continue
        body.extend(replaced.get(i, [node]))
    del out.node[:]
    out.node.extend(body)
    out.input[:] = [leaf for name in function.input for leaf in inputs.get(name, [name])]
    out.output[:] = [leaf for name in function.output for leaf in outputs.get(name, [name])]
    kept = [v for v in function.value_info if v.name not in token_names]
    known = {v.name for v in kept}
    added = [v for name, v in sorted(new_types.items()) if name not in known]
    del out.value_info[:]
    out.value_info.extend(kept + added)
    imported = {i.domain for i in out.opset_import}
    for call in (c for calls in plans.values() for c in calls):
        for opset in call.method.opset_import:
            if opset.domain not in imported:
                out.opset_import.append(opset)
                imported.add(opset.domain)
    return out


def _instantiate(call: _Call, prefix: str, state: Sequence[str],
                 final: Sequence[str] | None
                 ) -> tuple[list[onnx.NodeProto], list[onnx.ValueInfoProto], list[str]]:
    """The nodes of ``call``'s method reading the state leaves ``state``, their value types
    and the names of the new state leaves (``final`` for the slot's last call)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(call.method.graph)
    node = call.node
    n_state = len(state)
    n_triggers = int(ann.get(node, ann.N_TRIGGERS, "0") or 0)
    data = list(node.input[: len(node.input) - 1 - n_triggers])
    names: dict[str, str] = {}
    for i, name in enumerate(state):
        names[f"s{i}"] = name
    for i, name in enumerate(data):
        names[f"x{i}"] = name
    new_state = list(final) if final is not None else [f"{prefix}ns{i}" for i in range(n_state)]
    for i, name in enumerate(new_state):
        names[f"ns{i}"] = name
    for i, name in enumerate(node.output[:-1]):
        names[f"y{i}"] = name

    def rename(name: str) -> str:
        return names.get(name, prefix + name) if name else name

    _rename_graph(graph, rename)
    body = [helper.make_node("Constant", [], [t.name], value=t, name=f"{t.name}.const")
            for t in graph.initializer]
    for n in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        body.append(copy)
    value_info = [*graph.input[:n_state], *graph.output, *graph.value_info]
    return body, value_info, new_state


def _rename_graph(graph: onnx.GraphProto, rename: Callable[[str], str]) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = rename(value.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        if node.name:
            node.name = rename(node.name)
        for sub in _subgraphs(node):
            _rename_graph(sub, rename)


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 0
        while candidate in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


# -- the step's view ---------------------------------------------------------------------------

@dataclass(frozen=True)
class InlinedState:
    """How one inlined slot's state travels through a partition: its leaves in
    ``inputs`` / ``outputs`` (names), the state's structure, each leaf's PRNG
    implementation (None for a plain array) and whether the partition passes it through
    unchanged."""

    slot: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    treedef: Any
    key_impls: tuple[str | None, ...]
    unchanged: tuple[bool, ...]

    def leaves(self, state: PyTree) -> list[Any]:
        """``state``'s leaves as the partition takes them (keys as raw key data)."""
        return [jax.random.key_data(x) if impl else x
                for x, impl in zip(jax.tree.leaves(state), self.key_impls)]

    def state(self, leaves: Sequence[Any], previous: PyTree = None) -> PyTree:
        """The state the partition's output ``leaves`` spell; with the ``previous`` state,
        the leaves the partition passes through unchanged are ``previous``'s own."""
        old = [None] * len(leaves) if previous is None else jax.tree.leaves(previous)
        return jax.tree.unflatten(self.treedef, [
            o if same and o is not None else jax.random.wrap_key_data(x, impl=impl) if impl
            else x for x, o, impl, same in zip(leaves, old, self.key_impls, self.unchanged)])


def inlined_states(function: onnx.FunctionProto, components: Mapping[str, Component],
                   error: type[BbjaxError] = CompileError) -> dict[str, InlinedState]:
    """Each inlined slot of ``function`` with its bound component's state layout.

    Raises ``error`` when a component's state leaves are not the partition's state inputs
    (names, dtypes and shapes): the component is not the one the slot was inlined for.
    """
    types = {v.name: v for v in function.value_info}
    producers = {o: n for n in function.node for o in n.output}

    def source(name: str) -> str:
        while name in producers and producers[name].op_type == "Identity" \
                and producers[name].domain == "":
            name = producers[name].input[0]
        return name

    layouts = {}
    for slot in inlined_slots(function):
        abstract = components[slot].abstract_state
        leaves, treedef = jax.tree.flatten(abstract)
        names = state_leaf_names(slot, abstract)
        outs = next_state_leaf_names(slot, abstract)
        missing = [n for n in names if n not in function.input]
        if missing or len([i for i in function.input
                           if i.startswith(state_name(slot) + ".")]) != len(names):
            raise error(f"partition {function.name!r} inlined slot {slot!r} with other state "
                        f"leaves than component {components[slot].name!r} has "
                        f"(missing {missing[:3]})")
        impls = []
        for name, leaf in zip(names, leaves):
            impl = impl_name(leaf.dtype) if jax.dtypes.issubdtype(
                leaf.dtype, jax.dtypes.prng_key) else None
            impls.append(impl)
            want = _spec(types.get(name))
            got = jax.eval_shape(jax.random.key_data, leaf) if impl else leaf
            if want is None or tuple(want.shape) != tuple(got.shape) or \
                    np.dtype(want.dtype) != np.dtype(got.dtype):
                shown = "?" if want is None else f"{np.dtype(want.dtype)}{list(want.shape)}"
                raise error(f"partition {function.name!r} inlined slot {slot!r} for state leaf "
                            f"{name!r} of {shown}; component {components[slot].name!r} has "
                            f"{np.dtype(got.dtype)}{list(got.shape)} (a data source of another "
                            "size? compile with that slot opaque: Compiler(inline=[...]))")
        unchanged = tuple(source(o) == i for i, o in zip(names, outs))
        layouts[slot] = InlinedState(slot, tuple(names), tuple(outs), treedef, tuple(impls),
                                     unchanged)
    return layouts

