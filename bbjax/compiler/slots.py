"""Pass ``resolve_slots``: every slot call names a bound component of the right role."""

from __future__ import annotations

import onnx

from bbjax.compiler import annotations as ann
from bbjax.errors import CompileError, UnboundSlotError


def resolve_slots(model: onnx.ModelProto, context) -> onnx.ModelProto:
    for node in _all_nodes(model):
        if not ann.is_slot_call(node):
            continue
        slot = ann.get(node, ann.SLOT)
        component = context.bindings.get(slot)
        if component is None:
            raise UnboundSlotError(f"slot {slot!r} (called by {ann.label(node)}) is not bound; "
                                   f"bound slots: {sorted(context.bindings)}")
        if component.role.value != ann.role_of(node):
            raise CompileError(f"slot {slot!r} is called as a {ann.role_of(node)} but bound to "
                               f"{component.name!r}, a {component.role.value}")
        if node.op_type not in component.methods:
            raise CompileError(f"{ann.label(node)}: component {component.name!r} bound to slot "
                               f"{slot!r} has no method {node.op_type!r}")
    return model


def _all_nodes(model: onnx.ModelProto):
    yield from model.graph.node
    for function in model.functions:
        yield from function.node
