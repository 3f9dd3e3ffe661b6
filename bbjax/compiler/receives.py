"""Pass ``synthesize_receives``: give every Send and Gather a Recv on the destination class.

The sending node keeps its inputs (payload, peer sets) and gets one sentinel output
``sent.<port>``; a new ``ai.bytesandbrains.wire::Recv`` node, homed on the destination
class, produces the values the sending node used to produce (for a Gather: the values
stacked over the senders and the arrival mask, with ``ai.bytesandbrains.gather = "1"``), so
downstream ops read the Recv.
"""

from __future__ import annotations

import onnx

from bbjax.compiler import annotations as ann
from bbjax.errors import CompileError
from bbjax.onnx import domains


def sentinel(port: str) -> str:
    return f"sent.{port}"


def synthesize_receives(model: onnx.ModelProto, context) -> onnx.ModelProto:
    model = ann.copy_model(model)
    nodes = []
    ports = set()
    for node in model.graph.node:
        if not ann.is_send(node):
            nodes.append(node)
            continue
        port = ann.get(node, ann.PORT)
        if port in ports:
            raise CompileError(f"two sends use port {port!r}; ports name wire edges and must "
                               "be unique in a Module")
        ports.add(port)
        recv = onnx.helper.make_node("Recv", [], list(node.output), domain=domains.WIRE,
                                     name=f"recv.{port}")
        for key, value in ((ann.PORT, port), (ann.SOURCE_CLASS, ann.get(node, ann.HOME)),
                           (ann.HOME, ann.get(node, ann.DEST_CLASS))):
            ann.put(recv, key, value)
        if node.op_type == "Gather":
            ann.put(recv, ann.GATHER, "1")
            del node.input[-1]  # the senders' peer set only sizes the receiving side
        del node.output[:]
        node.output.append(sentinel(port))
        if not node.name:
            node.name = f"send.{port}"
        nodes.extend([node, recv])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
