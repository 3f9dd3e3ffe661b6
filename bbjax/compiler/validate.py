"""Pass ``validate``: the built model is well-formed before any other pass reads it."""

from __future__ import annotations

import onnx

from bbjax.compiler import annotations as ann
from bbjax.compiler.errors import CompileError


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
