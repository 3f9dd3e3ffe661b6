"""What an op implementation sees of its node: attributes, static values, subgraphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np
import onnx
from onnx import numpy_helper

from bbjax.errors import DataDependentError, LoweringError

if TYPE_CHECKING:
    from bbjax.onnx.interpreter import Scope

_REQUIRED = object()


def attribute_value(attr: onnx.AttributeProto) -> Any:
    """The Python value of an attribute: numbers, str, numpy arrays, lists, GraphProtos."""
    kind = attr.type
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        return float(attr.f)
    if kind == A.INT:
        return int(attr.i)
    if kind == A.STRING:
        return attr.s.decode("utf-8")
    if kind == A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if kind == A.SPARSE_TENSOR:
        return sparse_to_dense(attr.sparse_tensor)
    if kind == A.GRAPH:
        return attr.g
    if kind == A.TYPE_PROTO:
        return attr.tp
    if kind == A.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == A.INTS:
        return [int(v) for v in attr.ints]
    if kind == A.STRINGS:
        return [s.decode("utf-8") for s in attr.strings]
    if kind == A.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    if kind == A.GRAPHS:
        return list(attr.graphs)
    raise ValueError(f"attribute {attr.name!r} has unsupported type {kind}")


def sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def is_static(value: Any) -> bool:
    """Whether ``value`` is known at trace time (a numpy array or a list of them)."""
    if isinstance(value, list):
        return all(is_static(v) for v in value)
    return value is None or isinstance(value, (np.ndarray, np.generic))


class NodeContext:
    """The node being lowered, as seen by its op implementation."""

    def __init__(self, node: onnx.NodeProto, scope: "Scope", opset: int,
                 attributes: dict[str, Any]):
        self.node = node
        self.scope = scope
        self.opset = opset
        self._attributes = attributes

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def num_outputs(self) -> int:
        """How many outputs the node declares (trailing optional ones may be absent)."""
        return len(self.node.output)

    def has_output(self, index: int) -> bool:
        return index < len(self.node.output) and self.node.output[index] != ""

    @property
    def handlers(self) -> Any:
        """The slot and wire handlers of this call (``lowered(*args, handlers=...)``)."""
        handlers = self.scope.handlers
        if handlers is None:
            raise self.error("this op needs slot and wire handlers: call the lowered "
                             "partition with handlers=... (or run it as a PartitionStep)")
        return handlers

    def metadata(self, key: str, default: str | None = None) -> str | None:
        """The node's ``metadata_props`` entry ``key``."""
        for prop in self.node.metadata_props:
            if prop.key == key:
                return prop.value
        return default

    def has_attr(self, name: str) -> bool:
        return name in self._attributes

    def attr(self, name: str, default: Any = _REQUIRED) -> Any:
        """The attribute ``name``; missing without a default raises :class:`LoweringError`."""
        if name in self._attributes:
            return self._attributes[name]
        if default is _REQUIRED:
            raise self.error(f"required attribute {name!r} is missing")
        return default

    def error(self, message: str, kind: type[LoweringError] = LoweringError) -> LoweringError:
        op = f"{self.node.domain or 'ai.onnx'}::{self.node.op_type}"
        return kind(message, node=self.node.name or None, op=op)

    def static(self, value: Any, what: str) -> np.ndarray:
        """``value`` as a numpy array; it must be known at trace time (shapes, axes, counts)."""
        if value is None:
            raise self.error(f"{what} is required")
        if isinstance(value, (np.ndarray, np.generic)):
            return np.asarray(value)
        try:
            return np.asarray(value)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as exc:
            raise self.error(f"{what} must be known at trace time, but it depends on a "
                             "traced input", DataDependentError) from exc

    def static_ints(self, value: Any, what: str) -> list[int]:
        return [int(v) for v in self.static(value, what).reshape(-1)]

    def subgraph(self, attr_name: str) -> Callable[[Sequence[Any]], list[Any]]:
        """The graph attribute ``attr_name`` as ``fn(inputs) -> outputs`` seeing this scope."""
        graph = self.attr(attr_name)
        scope = self.scope

        def run(inputs: Sequence[Any]) -> list[Any]:
            return scope.interpreter.run_graph(graph, list(inputs), outer=scope)

        return run
