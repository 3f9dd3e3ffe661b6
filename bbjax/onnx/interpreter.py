"""Evaluate an ONNX graph with the op table, under JAX tracing.

Values are numpy arrays when known at trace time (initializers, constants and everything
computed only from them, including shapes of traced arrays) and JAX arrays otherwise;
ops whose inputs are all static are folded at trace time so that shape arithmetic stays
static under ``jit``. Sequence values are Python lists.

An :class:`Interpreter` holds only what it read from the model and its op overrides; what
one run needs (values, and the ``handlers`` the runtime ops call) lives in that run's
:class:`Scope` chain, so runs may interleave or nest.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import onnx
from onnx import numpy_helper

from bbjax.errors import DataDependentError, LoweringError
from bbjax.onnx.context import NodeContext, attribute_value, is_static, sparse_to_dense
from bbjax.onnx.ops import registry

_GRAPH_ATTR_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _op_label(node: onnx.NodeProto) -> str:
    return f"{node.domain or 'ai.onnx'}::{node.op_type}"


class Scope:
    """Named values of one graph, chained to the enclosing graph's scope; ``handlers`` (the
    run's slot and wire handlers, or None) are the outermost scope's."""

    def __init__(self, interpreter: "Interpreter", outer: "Scope | None" = None,
                 handlers: Any = None):
        self.interpreter = interpreter
        self.outer = outer
        self.handlers = outer.handlers if outer is not None else handlers
        self.values: dict[str, Any] = {}

    def lookup(self, name: str) -> Any:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.outer
        raise KeyError(name)

    def defines(self, name: str) -> bool:
        try:
            self.lookup(name)
        except KeyError:
            return False
        return True


class Interpreter:
    """Runs the graphs of one model: its opset imports and local functions, with ``ops``
    (op-table entries by ``(domain, op_type)``) taking precedence over the op table."""

    def __init__(self, model: onnx.ModelProto,
                 ops: Mapping[tuple[str, str], registry.OpEntry] | None = None):
        self.opsets = {imp.domain: imp.version for imp in model.opset_import}
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.ops = dict(ops or {})

    def opset_of(self, domain: str) -> int:
        if domain in registry.DEFAULT_DOMAINS:
            return self.opsets.get("", self.opsets.get("ai.onnx", 1))
        return self.opsets.get(domain, 1)

    def resolves(self, node: onnx.NodeProto) -> bool:
        return (node.domain, node.op_type) in self.functions or self.entry(node) is not None

    def entry(self, node: onnx.NodeProto) -> registry.OpEntry | None:
        """The implementation of ``node``'s op: an override, else the op table's."""
        return registry.lookup(node.domain, node.op_type, self.ops)

    # -- graphs -------------------------------------------------------------------------------

    def run_graph(self, graph: onnx.GraphProto, inputs: Sequence[Any],
                  outer: Scope | None = None, handlers: Any = None) -> list[Any]:
        """``graph``'s outputs for ``inputs``; a subgraph sees ``outer`` (and its handlers),
        a main graph's runtime ops call ``handlers``."""
        scope = Scope(self, outer, handlers)
        for init in graph.initializer:
            scope.values[init.name] = numpy_helper.to_array(init)
        for init in graph.sparse_initializer:
            scope.values[init.values.name] = sparse_to_dense(init)
        formal = [i.name for i in graph.input if i.name not in scope.values or outer is not None]
        if len(inputs) > len(formal):
            raise LoweringError(f"graph {graph.name!r} takes {len(formal)} inputs, got {len(inputs)}")
        for name, value in zip(formal, inputs):
            scope.values[name] = value
        for node in graph.node:
            self.run_node(node, scope)
        outputs = []
        for out in graph.output:
            try:
                outputs.append(scope.lookup(out.name))
            except KeyError:
                raise LoweringError(f"graph output {out.name!r} is never produced") from None
        return outputs

    def run_node(self, node: onnx.NodeProto, scope: Scope, attr_env: dict | None = None) -> None:
        inputs = []
        for name in node.input:
            if name == "":
                inputs.append(None)
                continue
            try:
                inputs.append(scope.lookup(name))
            except KeyError:
                raise LoweringError(f"input {name!r} is not produced by any earlier node, "
                                    "initializer or graph input",
                                    node=node.name or None, op=_op_label(node)) from None
        attributes = self._attributes(node, attr_env)
        function = self.functions.get((node.domain, node.op_type))
        if function is not None:
            outputs = self._call_function(function, scope, inputs, attributes)
        else:
            outputs = self._call_op(node, scope, inputs, attributes)
        for name, value in zip(node.output, outputs):
            if name:
                scope.values[name] = value

    def _attributes(self, node: onnx.NodeProto, attr_env: dict | None) -> dict[str, Any]:
        attributes = {}
        for attr in node.attribute:
            if attr.ref_attr_name:
                if attr_env is not None and attr.ref_attr_name in attr_env:
                    attributes[attr.name] = attr_env[attr.ref_attr_name]
                continue
            try:
                attributes[attr.name] = attribute_value(attr)
            except ValueError as exc:
                raise LoweringError(str(exc), node=node.name or None, op=_op_label(node)) from exc
        return attributes

    def _call_op(self, node: onnx.NodeProto, scope: Scope, inputs: list[Any],
                 attributes: dict[str, Any]) -> list[Any]:
        entry = self.entry(node)
        if entry is None:
            raise LoweringError("unsupported op (not in bbjax.onnx.supported_ops())",
                                node=node.name or None, op=_op_label(node))
        ctx = NodeContext(node, scope, self.opset_of(node.domain), attributes)
        fold = (entry.foldable and all(is_static(v) for v in inputs)
                and not any(a.type in _GRAPH_ATTR_TYPES for a in node.attribute))
        try:
            if fold:
                with jax.ensure_compile_time_eval():
                    result = entry.impl(ctx, *inputs)
                result = _to_static(result)
            else:
                result = entry.impl(ctx, *inputs)
        except LoweringError:
            raise
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerIntegerConversionError, jax.errors.TracerBoolConversionError) as exc:
            raise ctx.error("a value this op needs at trace time depends on a traced input "
                            f"(data-dependent shape or control flow): {type(exc).__name__}",
                            DataDependentError) from exc
        except Exception as exc:  # an op implementation rejected its inputs or attributes
            raise ctx.error(f"{type(exc).__name__}: {exc}") from exc
        outputs = list(result) if isinstance(result, tuple) else [result]
        wanted = sum(1 for name in node.output if name)
        if len(outputs) < len(node.output) and wanted > len(outputs):
            raise ctx.error(f"implementation returned {len(outputs)} outputs, node declares "
                            f"{len(node.output)}")
        return outputs

    def _call_function(self, function: onnx.FunctionProto, caller: Scope,
                       inputs: list[Any], attributes: dict[str, Any]) -> list[Any]:
        attr_env = {a.name: attribute_value(a) for a in function.attribute_proto}
        attr_env.update(attributes)
        scope = Scope(self, handlers=caller.handlers)
        for name, value in zip(function.input, inputs):
            if name:
                scope.values[name] = value
        for inner in function.node:
            self.run_node(inner, scope, attr_env)
        return [scope.lookup(name) for name in function.output]


def _to_static(result: Any) -> Any:
    if isinstance(result, tuple):
        return tuple(_to_static(r) for r in result)
    if isinstance(result, list):
        return [_to_static(r) for r in result]
    if result is None:
        return None
    return np.asarray(result)
