"""Wire passes: type checks on edges, batching, gates and deadlines around sends/receives.

- ``check_wire_types``: every receive produces exactly the types its send carries (a
  Gather's receive: each one stacked over the senders, plus a bool mask); a mismatch needs
  a Codec and is a CompileError naming the edge.
- ``analyze_wire_edges``: stamps each send with its batch group (``<home>-><dest class>``):
  the sends of one run to the same peer travel in one envelope.
- ``insert_receive_gates`` / ``insert_send_gates``: ``ai.bytesandbrains.gate`` nodes
  upstream of every Recv (DedupGateRx, PeerHealthGateRx, BackoffGateRx) and every
  Send/Gather (PeerHealthGateTx, BackoffGateTx); each emits a trigger token the gated node
  takes as a trailing input (``ai.bytesandbrains.n_gates`` counts them). The Node enforces
  what they name; lowered, they are no-ops.
- ``insert_deadlines``: a DeadlineCheck upstream of every send and ``…deadline_ns`` on it
  (``CompileContext.per_hop_budget_ns``, default 100 ms).
- ``validate_runtime_complete``: every gate and deadline check is in place.
"""

from __future__ import annotations

import onnx
from onnx import helper

from bbjax.compiler import annotations as ann
from bbjax.errors import CompileError
from bbjax.onnx.domains import GATE as GATE_DOMAIN

RX_GATES = ("DedupGateRx", "PeerHealthGateRx", "BackoffGateRx")
TX_GATES = ("PeerHealthGateTx", "BackoffGateTx", "DeadlineCheck")
DEFAULT_PER_HOP_BUDGET_NS = 100_000_000


def check_wire_types(model: onnx.ModelProto, context) -> onnx.ModelProto:
    graph = model.graph
    types = {v.name: v.type for v in [*graph.input, *graph.output, *graph.value_info]}
    sends = {ann.get(n, ann.PORT): n for n in graph.node if ann.is_send(n)}
    for recv in graph.node:
        if not ann.is_recv(recv):
            continue
        port = ann.get(recv, ann.PORT)
        send = sends[port]
        carried = [types.get(i) for i in send.input[: _n_values(send)]]
        received = [types.get(o) for o in recv.output]
        if ann.get(recv, ann.GATHER) == "1":
            received = received[:-1]
            carried = [_stacked(t) for t in carried]
        if any(a is not None and b is not None and not _same(a, b)
               for a, b in zip(carried, received)) or len(carried) != len(received):
            raise CompileError(f"wire edge {port!r} ({ann.get(recv, ann.SOURCE_CLASS)} -> "
                               f"{ann.get(recv, ann.HOME)}): received types differ from the "
                               "sent ones; insert a Codec")
    return model


def _n_values(send: onnx.NodeProto) -> int:
    return len(send.input) - 1  # the last input is the destination peer set


def _stacked(t: onnx.TypeProto | None) -> onnx.TypeProto | None:
    if t is None:
        return None
    out = onnx.TypeProto()
    out.CopyFrom(t)
    dims = out.tensor_type.shape.dim
    dims.insert(0, onnx.TensorShapeProto.Dimension())
    return out


def _same(a: onnx.TypeProto, b: onnx.TypeProto) -> bool:
    ta, tb = a.tensor_type, b.tensor_type
    if ta.elem_type != tb.elem_type or len(ta.shape.dim) != len(tb.shape.dim):
        return False
    return all(not (x.HasField("dim_value") and y.HasField("dim_value"))
               or x.dim_value == y.dim_value for x, y in zip(ta.shape.dim, tb.shape.dim))


def analyze_wire_edges(model: onnx.ModelProto, context) -> onnx.ModelProto:
    model = ann.copy_model(model)
    for node in model.graph.node:
        if ann.is_send(node):
            ann.put(node, ann.PREFIX + "batch_group",
                    f"{ann.get(node, ann.HOME)}->{ann.get(node, ann.DEST_CLASS)}")
    return model


def _insert_gates(model: onnx.ModelProto, gated, gates: tuple[str, ...]) -> onnx.ModelProto:
    model = ann.copy_model(model)
    nodes = []
    for node in model.graph.node:
        if gated(node):
            port = ann.get(node, ann.PORT)
            for gate in gates:
                token = f"gate.{gate}.{port}"
                g = helper.make_node(gate, [], [token], domain=GATE_DOMAIN,
                                     name=f"{gate}.{port}")
                ann.put(g, ann.HOME, ann.get(node, ann.HOME))
                ann.put(g, ann.PORT, port)
                nodes.append(g)
                node.input.append(token)
            ann.put(node, ann.PREFIX + "n_gates",
                    str(int(ann.get(node, ann.PREFIX + "n_gates", "0")) + len(gates)))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for node in nodes:
        if node.domain == GATE_DOMAIN:
            model.graph.value_info.append(helper.make_tensor_value_info(
                node.output[0], onnx.TensorProto.UINT8, []))
    if not any(i.domain == GATE_DOMAIN for i in model.opset_import):
        model.opset_import.append(helper.make_opsetid(GATE_DOMAIN, 1))
    return model


def insert_receive_gates(model: onnx.ModelProto, context) -> onnx.ModelProto:
    return _insert_gates(model, ann.is_recv, RX_GATES)


def insert_send_gates(model: onnx.ModelProto, context) -> onnx.ModelProto:
    return _insert_gates(model, ann.is_send, TX_GATES[:2])


def insert_deadlines(model: onnx.ModelProto, context) -> onnx.ModelProto:
    model = _insert_gates(model, ann.is_send, TX_GATES[2:])
    budget = getattr(context, "per_hop_budget_ns", DEFAULT_PER_HOP_BUDGET_NS)
    for node in model.graph.node:
        if ann.is_send(node):
            ann.put(node, ann.PREFIX + "deadline_ns", str(budget))
    return model


def validate_runtime_complete(model: onnx.ModelProto, context) -> onnx.ModelProto:
    gates = {(n.op_type, ann.get(n, ann.PORT)) for n in model.graph.node
             if n.domain == GATE_DOMAIN}
    for node in model.graph.node:
        needed = RX_GATES if ann.is_recv(node) else TX_GATES if ann.is_send(node) else ()
        missing = [g for g in needed if (g, ann.get(node, ann.PORT)) not in gates]
        if ann.is_send(node) and not ann.get(node, ann.PREFIX + "deadline_ns"):
            missing.append("deadline_ns")
        if missing:
            raise CompileError(f"{ann.label(node)} on port {ann.get(node, ann.PORT)!r} lacks "
                               f"{missing} (a pass that inserts them was removed?)")
    return model
