"""Reading and writing bbjax annotations on ONNX nodes (``metadata_props``)."""

from __future__ import annotations

import onnx

from bbjax.onnx import domains

PREFIX = domains.KEY_PREFIX  # + name: a metadata key
HOME = PREFIX + "home"        # the peer class a node runs on
SLOT = PREFIX + "slot"
PORT = PREFIX + "port"
DEST_CLASS = PREFIX + "dest_class"
SOURCE_CLASS = PREFIX + "source_class"
PEER_CLASS = PREFIX + "peer_class"
N_TRIGGERS = PREFIX + "n_triggers"
PHASE = PREFIX + "phase"      # on partitions: "main" or "bootstrap"
GATHER = PREFIX + "gather"    # "1" on a Recv that stacks values from a whole sender class
SELF = "self"


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy, so passes stay pure (ModelProto -> new ModelProto)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def get(node: onnx.NodeProto, key: str, default: str | None = None) -> str | None:
    for prop in node.metadata_props:
        if prop.key == key:
            return prop.value
    return default


def function_meta(function: onnx.FunctionProto, key: str) -> str | None:
    for prop in function.metadata_props:
        if prop.key == key:
            return prop.value
    return None


def put(node: onnx.NodeProto, key: str, value: str) -> None:
    for prop in node.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    node.metadata_props.add(key=key, value=value)


def is_slot_call(node: onnx.NodeProto) -> bool:
    return node.domain.startswith(domains.ROLE_PREFIX)


def is_send(node: onnx.NodeProto) -> bool:
    """A Send or a Gather (the sending side of both)."""
    return node.domain == domains.WIRE and node.op_type in ("Send", "Gather")


def is_recv(node: onnx.NodeProto) -> bool:
    return node.domain == domains.WIRE and node.op_type == "Recv"


def role_of(node: onnx.NodeProto) -> str:
    return node.domain[len(domains.ROLE_PREFIX):]


def label(node: onnx.NodeProto) -> str:
    """``name (domain::op_type)`` for error messages."""
    return f"{node.name or '<unnamed>'} ({node.domain or 'ai.onnx'}::{node.op_type})"
