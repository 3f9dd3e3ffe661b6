"""``export_client``: one inlined partition as a standalone ONNX model onnxruntime runs.

The wire ops become the model's boundary: each array a receive delivers is a graph input
``recv.<port>.<i>``, each array a send or gather sends a graph output ``send.<port>.<i>``
and the peers it goes to the output ``send.<port>.peers``; the gates go (the client runtime
enforces what they mark). The slots' state leaves stay inputs ``state.<slot>.<path>`` and
outputs ``next_state.<slot>.<path>``; given ``states``, their values are stored as
initializers of the same names (defaults a client may override). Model metadata
``bbjax.client`` (JSON) says what a client needs: the source partition, its peer class, the
receive and send ports with their peer classes, array names, dtypes and shapes (and each
send's deadline), the state leaves and the graph outputs. Threefry sampling ops
(``ai.bytesandbrains.random``) are rewritten as the same computation in standard ops
(:mod:`bbjax.compiler.threefry`): the client draws the bits a JAX peer draws.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import onnx
from onnx import helper, numpy_helper

from bbjax.compiler import annotations as ann
from bbjax.compiler import threefry
from bbjax.compiler.compiled import Compiled
from bbjax.compiler.inline import inlined_states, slot_status, state_leaf_names
from bbjax.compiler.passport import HASH, compiler_version, verify_passport
from bbjax.components import Component
from bbjax.errors import CompileError
from bbjax.onnx import domains

CLIENT_METADATA = "bbjax.client"
CLIENT_FORMAT = 1
DEADLINE_NS = ann.PREFIX + "deadline_ns"


def client_partition(compiled: Compiled, target: str) -> onnx.FunctionProto:
    """The main-phase partition of peer class ``target``, else the partition named
    ``target`` (exactly or by its name before ``#``); :class:`CompileError` for neither."""
    for function in compiled.model.functions:
        if (ann.function_meta(function, ann.PEER_CLASS) == target
                and ann.function_meta(function, ann.PHASE) == "main"):
            return function
    return compiled.find(target)


def export_client(compiled: Compiled, target: str,
                  states: Mapping[str, Any] | None = None,
                  components: Mapping[str, Component] | None = None) -> onnx.ModelProto:
    """The partition of ``target`` (a peer class or a partition name) as a model of
    standard ONNX ops only.

    ``states`` (slot -> state pytree) stores those states as the initial values of the state
    inputs; their layout comes from ``components`` (slot -> component, default: the ones
    ``compiled`` was compiled with). Raises :class:`CompileError` when the partition keeps
    an opaque slot (the message gives the reason recorded at compile time), uses an op
    outside the default ONNX domain that has no standard form here (``ai.bytesandbrains.lax``
    ops such as the ``ErfInv`` of normal sampling, a PRNG other than threefry2x32), gathers messages from many senders, when ``states`` come without components, or when
    the result fails ``onnx.checker``; what :func:`verify_passport` raises for the artifact.
    """
    props = verify_passport(compiled.model)
    function = client_partition(compiled, target)
    components = compiled.bindings if components is None else components
    if states is not None and not components:
        raise CompileError("states need the components they belong to (components=...); "
                           "this artifact carries none")
    opaque = {s: v for s, v in slot_status(function).items() if v != "inlined"}
    calls = sorted({ann.get(n, ann.SLOT) for n in function.node if ann.is_slot_call(n)})
    if calls:
        reasons = "; ".join(f"{s!r}: {opaque.get(s, 'opaque: compiled with inline=False')}"
                            for s in calls)
        raise CompileError(f"partition {function.name!r} keeps opaque slots, so it cannot run "
                           f"without their Python components: {reasons}")
    types = {v.name: v for v in function.value_info}
    nodes, inputs, outputs, receives, sends = [], [], [], [], []
    renamed: dict[str, str] = {}
    for index, node in enumerate(function.node):
        if node.domain == domains.GATE:
            continue
        if threefry.is_random(node):
            nodes += threefry.decompose(node, types, f"threefry.{index}.")
            continue
        if ann.is_recv(node):
            port = ann.get(node, ann.PORT)
            if ann.get(node, ann.GATHER) == "1":
                raise CompileError(f"partition {function.name!r} gathers port {port!r} from "
                                   "many senders; the onnx client takes single messages only")
            names = [f"recv.{port}.{i}" for i in range(len(node.output))]
            renamed.update(zip(node.output, names))
            inputs += [_typed(types, o, n) for o, n in zip(node.output, names)]
            receives.append({"port": port, "source_class": ann.get(node, ann.SOURCE_CLASS),
                             "inputs": names, **_dtypes_shapes(types, node.output)})
            continue
        if ann.is_send(node):
            n_gates = int(ann.get(node, ann.PREFIX + "n_gates", "0") or 0)
            values = list(node.input[: len(node.input) - n_gates])
            *payload, peers = values
            port = ann.get(node, ann.PORT)
            names = [f"send.{port}.{i}" for i in range(len(payload))]
            for source, name in zip([*payload, peers], [*names, f"send.{port}.peers"]):
                nodes.append(helper.make_node("Identity", [source], [name]))
                outputs.append(_typed(types, source, name))
            sends.append({"port": port, "dest_class": ann.get(node, ann.DEST_CLASS),
                          "gather": node.op_type == "Gather", "outputs": names,
                          "peers": f"send.{port}.peers",
                          "deadline_ns": int(ann.get(node, DEADLINE_NS, "0") or 0),
                          **_dtypes_shapes(types, payload)})
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        nodes.append(copy)
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise CompileError(f"partition {function.name!r} uses ops onnxruntime does not "
                           f"implement: {foreign}")
    graph_inputs = [_typed(types, name, name) for name in function.input] + inputs
    app = [o for o in function.output if not o.startswith(("next_state.", "sent."))]
    graph_outputs = [_typed(types, o, o) for o in function.output
                     if not o.startswith("sent.")] + outputs
    for node in nodes:
        node.input[:] = [renamed.get(n, n) for n in node.input]
    graph = helper.make_graph(nodes, function.name.split("#", 1)[0], graph_inputs,
                              graph_outputs)
    graph.value_info.extend(v for v in function.value_info
                            if v.name not in {*function.input, *function.output, *renamed})
    layouts = inlined_states(function, components) if components else {}
    if states is not None and sorted(states) != sorted(layouts):
        raise CompileError(f"states are given for slots {sorted(states)}; the partition "
                           f"keeps the state of {sorted(layouts)}")
    state = {}
    for slot, layout in layouts.items():
        state[slot] = {"inputs": list(layout.inputs), "outputs": list(layout.outputs)}
        if states is not None:
            for name, leaf in zip(layout.inputs, layout.leaves(states[slot])):
                graph.initializer.append(numpy_helper.from_array(np.asarray(leaf), name))
    for slot in slot_status(function):
        state.setdefault(slot, {
            "inputs": [i for i in function.input if i.startswith(f"state.{slot}.")],
            "outputs": [o for o in function.output if o.startswith(f"next_state.{slot}.")]})
    model = helper.make_model(graph, ir_version=compiled.model.ir_version,
                              opset_imports=[o for o in function.opset_import
                                             if o.domain in ("", "ai.onnx")])
    meta = {"format": CLIENT_FORMAT, "partition": function.name,
            "peer_class": ann.function_meta(function, ann.PEER_CLASS),
            "hash": props[HASH + function.name], "compiler": compiler_version(),
            "receives": receives, "sends": sends, "state": state, "outputs": app,
            "inputs": [i for i in function.input if not i.startswith("state.")]}
    helper.set_model_props(model, {CLIENT_METADATA: json.dumps(meta, sort_keys=True)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise CompileError(f"the client model of {function.name!r} fails onnx.checker: "
                           f"{str(exc).splitlines()[0]}") from exc
    return model


def client_state(states: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``states`` (slot -> state pytree, e.g. a Node's ``states``) as the state inputs of an
    exported client (``state.<slot>.<leaf path>`` -> array; PRNG keys as key data), for
    :class:`bbjax.onnxclient.OnnxClient`'s ``state``."""
    out = {}
    for slot, state in states.items():
        for name, leaf in zip(state_leaf_names(slot, state), jax.tree.leaves(state)):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            out[name] = np.asarray(leaf)
    return out


def _typed(types: Mapping[str, onnx.ValueInfoProto], source: str,
           name: str) -> onnx.ValueInfoProto:
    if source not in types:
        raise CompileError(f"value {source!r} has no type in the partition")
    value = onnx.ValueInfoProto()
    value.CopyFrom(types[source])
    value.name = name
    return value


def _dtypes_shapes(types: Mapping[str, onnx.ValueInfoProto], names) -> dict[str, list]:
    dtypes, shapes = [], []
    for name in names:
        tensor = types[name].type.tensor_type
        dtypes.append(str(helper.tensor_dtype_to_np_dtype(tensor.elem_type)))
        shapes.append([d.dim_value if d.HasField("dim_value") else d.dim_param
                       for d in tensor.shape.dim])
    return {"dtypes": dtypes, "shapes": shapes}
