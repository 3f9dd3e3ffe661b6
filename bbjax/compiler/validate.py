"""Pass ``validate``: the built model is well-formed before any other pass reads it."""

from __future__ import annotations

import onnx

from bbjax.compiler import annotations as ann
from bbjax.errors import CompileError


def validate(model: onnx.ModelProto, context) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise CompileError(f"model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    if not model.graph.node:
        raise CompileError(f"module {model.graph.name!r} has no ops")
    for node in model.graph.node:
        if ann.is_slot_call(node) and not ann.get(node, ann.SLOT):
            raise CompileError(f"{ann.label(node)} is a slot call without a slot name")
        if ann.is_send(node) and not (ann.get(node, ann.PORT) and ann.get(node, ann.DEST_CLASS)):
            raise CompileError(f"{ann.label(node)} is a send without port or destination class")
    return model


def expand_attribute_defaults(model: onnx.ModelProto, context) -> onnx.ModelProto:
    """Write every standard op's omitted attributes with their schema defaults."""
    out = ann.copy_model(model)
    opset = {i.domain: i.version for i in out.opset_import}.get("", 1)
    for node in out.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        present = {a.name for a in node.attribute}
        for name, attr in schema.attributes.items():
            if name not in present and attr.default_value.name:
                node.attribute.append(attr.default_value)
    return out
