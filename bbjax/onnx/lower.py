"""``lower``: an ONNX model back to a pure, jittable JAX function."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from bbjax.errors import LoweringError
from bbjax.onnx import metadata
from bbjax.onnx.dtypes import jax_dtype
from bbjax.onnx.interpreter import Interpreter
from bbjax.onnx.ops import registry
from bbjax.onnx.ops.registry import OpImpl
from bbjax.onnx.ops.runtime import Handlers  # importing bbjax.onnx.ops fills the op table
from bbjax.onnx.treedef import treedef_from_json
from bbjax.errors import TreeCodecError


def supported_ops() -> frozenset[tuple[str, str]]:
    """Every ``(domain, op_type)`` :func:`lower` implements ("" is the default ONNX domain)."""
    return frozenset(registry.OP_TABLE)


def lower(model: onnx.ModelProto,
          ops: Mapping[tuple[str, str], OpImpl] | None = None) -> Callable[..., Any]:
    """Turn ``model`` into a pure JAX function computing the same outputs.

    The function takes the graph inputs positionally (or, for models made by
    :func:`bbjax.onnx.export`, the same pytrees the exported function took) and returns the
    graph outputs (a tuple, or the exported function's output pytree). It is jittable and
    vmappable. A model with slot calls or wire ops (a compiled partition) needs
    ``handlers=`` (a :class:`bbjax.onnx.ops.runtime.Handlers`) in each call: they serve
    those ops during that call only.

    ``ops`` maps ``(domain, op_type)`` to an ``impl(ctx, *inputs)`` with the op-table
    signature of :mod:`bbjax.onnx.ops.registry`; it replaces (or, in another domain, adds)
    that op for this function only, not in the global table. Structural problems and bad
    ``ops`` raise :class:`LoweringError` here, not at call time.
    """
    if not isinstance(model, onnx.ModelProto):
        raise LoweringError(f"lower() expects an onnx.ModelProto, got {type(model).__name__}")
    if ops is not None and not isinstance(ops, Mapping):
        raise LoweringError(f"ops must map (domain, op_type) to an implementation, got "
                            f"{type(ops).__name__}")
    interpreter = Interpreter(model, registry.overrides(ops or {}))
    validate_model(model, interpreter)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    meta = metadata.read(model)
    in_tree = _tree(meta, metadata.IN_TREE)
    out_tree = _tree(meta, metadata.OUT_TREE)
    in_keys = dict(json.loads(meta.get(metadata.IN_KEYS, "[]")))
    out_keys = dict(json.loads(meta.get(metadata.OUT_KEYS, "[]")))

    def lowered(*args: Any, handlers: Handlers | None = None) -> Any:
        if in_tree is not None:
            leaves, tree = jax.tree.flatten(args)
            if tree != in_tree:
                raise LoweringError(f"arguments have structure {tree}, the model expects {in_tree}")
        else:
            leaves = list(args)
        leaves = [jax.random.key_data(x) if i in in_keys else x for i, x in enumerate(leaves)]
        if len(leaves) != len(inputs):
            raise LoweringError(f"model {graph.name!r} takes {len(inputs)} inputs, got {len(leaves)}")
        values = [_check_input(spec, x) for spec, x in zip(inputs, leaves)]
        outputs = interpreter.run_graph(graph, values, handlers=handlers)
        outputs = [_dynamic(v) for v in outputs]
        outputs = [jax.random.wrap_key_data(v, impl=out_keys[i]) if i in out_keys else v
                   for i, v in enumerate(outputs)]
        if out_tree is not None:
            return jax.tree.unflatten(out_tree, outputs)
        return tuple(outputs)

    lowered.__name__ = f"lowered_{graph.name or 'model'}"
    return lowered


def _tree(meta: dict[str, str], key: str):
    if key not in meta:
        return None
    try:
        return treedef_from_json(meta[key])
    except TreeCodecError as exc:
        raise LoweringError(f"metadata {key!r}: {exc}") from exc


def _dynamic(value: Any) -> Any:
    if isinstance(value, list):
        return [_dynamic(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return jnp.asarray(value)
    return value


def _check_input(spec: onnx.ValueInfoProto, value: Any) -> Any:
    kind = spec.type.WhichOneof("value")
    if kind != "tensor_type":
        return value  # sequences / optionals pass through as Python lists / None
    tensor_type = spec.type.tensor_type
    if not hasattr(value, "dtype"):
        value = np.asarray(value)
    if tensor_type.elem_type:
        want = jax_dtype(tensor_type.elem_type)
        got = np.dtype(jax.dtypes.canonicalize_dtype(value.dtype))
        if want != got:
            raise LoweringError(f"input {spec.name!r} expects dtype {want}, got {value.dtype}")
    if tensor_type.HasField("shape"):
        dims = tensor_type.shape.dim
        if len(dims) != np.ndim(value):
            raise LoweringError(f"input {spec.name!r} expects rank {len(dims)}, got shape "
                                f"{tuple(np.shape(value))}")
        for axis, (dim, size) in enumerate(zip(dims, np.shape(value))):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise LoweringError(f"input {spec.name!r} dim {axis} expects {dim.dim_value}, "
                                    f"got shape {tuple(np.shape(value))}")
    if isinstance(value, (np.ndarray, np.generic)):
        value = jnp.asarray(value)
    return value


def validate_model(model: onnx.ModelProto, interpreter: Interpreter) -> None:
    """Reject models :func:`lower` cannot run: checker failures, unknown ops, dangling inputs."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise LoweringError(f"model fails onnx.checker: {_first_line(exc)}") from exc
    _validate_graph(model.graph, interpreter, outer=frozenset())
    for function in model.functions:
        known = set(function.input)
        for node in function.node:
            _validate_node(node, interpreter, known)
            known.update(o for o in node.output if o)


def _validate_graph(graph: onnx.GraphProto, interpreter: Interpreter, outer: frozenset) -> None:
    known = set(outer) | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    known |= {s.values.name for s in graph.sparse_initializer}
    for node in graph.node:
        _validate_node(node, interpreter, known)
        known.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in known:
            raise LoweringError(f"graph {graph.name!r} output {out.name!r} is never produced")


def _validate_node(node: onnx.NodeProto, interpreter: Interpreter, known: set) -> None:
    op = f"{node.domain or 'ai.onnx'}::{node.op_type}"
    if not interpreter.resolves(node):
        raise LoweringError("unsupported op (not in bbjax.onnx.supported_ops())",
                            node=node.name or None, op=op)
    for name in node.input:
        if name and name not in known:
            raise LoweringError(f"input {name!r} is not produced by any earlier node, "
                                "initializer or graph input", node=node.name or None, op=op)
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
            list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
        for sub in graphs:
            _validate_graph(sub, interpreter, frozenset(known))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
