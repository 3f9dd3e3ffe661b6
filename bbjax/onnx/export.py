"""``export``: any JAX function on pytrees of arrays to an ONNX ModelProto."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from importlib import metadata as importlib_metadata
from typing import Any

import jax
import numpy as np
import onnx
from jax import export as jax_export
from jax.extend import core as jcore

from bbjax.errors import ExportError, TreeCodecError
from bbjax.onnx import domains, jax2onnx_overrides, metadata
from bbjax.onnx.jaxpr_rewrite import prepare_for_onnx, source_of
from bbjax.onnx.random_primitives import impl_name
from bbjax.onnx.treedef import leaf_names, safe_name, treedef_to_json

DEFAULT_OPSET = 23


def export(fn: Callable[..., Any], *example_args: Any, name: str | None = None,
           opset: int = DEFAULT_OPSET, double_precision: bool = False,
           input_names: list[str] | None = None,
           output_names: list[str] | None = None) -> onnx.ModelProto:
    """Export ``fn(*example_args)`` to ONNX.

    ``example_args`` are pytrees whose leaves are arrays, or ``jax.ShapeDtypeStruct`` whose
    shape may name symbolic dimensions (``jax.ShapeDtypeStruct(("B", 784), jnp.float32)``:
    the model then takes any size there). Typed PRNG keys are allowed as leaves; sampling with
    them is recorded as ``ai.bytesandbrains.random`` ops that :func:`bbjax.onnx.lower` turns
    back into the same ``jax.random`` calls. The input and output pytree structures are
    stored in the model's metadata. Each graph input and output is named after its leaf's
    pytree path (``params.dense.kernel``, ``out.loss``; see docs/ir.md);
    ``input_names`` / ``output_names`` (one per leaf, used verbatim) replace those names.
    Raises :class:`ExportError` naming the JAX primitive and its source line for anything
    that cannot be exported.
    """
    leaves, in_tree = jax.tree.flatten(example_args)
    in_keys = {i: impl_name(leaf.dtype) for i, leaf in enumerate(leaves) if _is_key(leaf)}
    specs = _input_specs(leaves, in_keys)
    out_info: dict[str, Any] = {}
    if input_names is None:
        arg_names = _parameter_names(fn, len(example_args))
        input_names = _unique([name for arg, arg_name in zip(example_args, arg_names)
                               for name in leaf_names(arg, arg_name)], set(output_names or ()))

    def flat_fn(*flat: Any) -> list[Any]:
        args = [jax.random.wrap_key_data(x, impl=in_keys[i]) if i in in_keys else x
                for i, x in enumerate(flat)]
        result = fn(*jax.tree.unflatten(in_tree, args))
        out_leaves, out_tree = jax.tree.flatten(result)
        out_info["tree"] = out_tree
        out_info["keys"] = {i: impl_name(x.dtype) for i, x in enumerate(out_leaves) if _is_key(x)}
        out_info["names"] = _result_names(result)
        return [jax.random.key_data(x) if _is_key(x) else x for x in out_leaves]

    model_name = name or getattr(fn, "__name__", "bbjax_model").replace("<", "").replace(">", "")
    try:
        closed = jax.make_jaxpr(flat_fn)(*specs)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"tracing {model_name} failed: {type(exc).__name__}: {exc}") from exc
    prepared = prepare_for_onnx(closed)
    _check_convertible(prepared.jaxpr)
    if output_names is None:
        output_names = _unique(out_info["names"], set(input_names))
    model = _convert(prepared, specs, model_name, opset, double_precision)
    _name_io(model, list(input_names), list(output_names))
    try:
        props = {
            metadata.IN_TREE: treedef_to_json(in_tree),
            metadata.OUT_TREE: treedef_to_json(out_info["tree"]),
            metadata.IN_KEYS: json.dumps(sorted(in_keys.items())),
            metadata.OUT_KEYS: json.dumps(sorted(out_info["keys"].items())),
            metadata.EXPORTER: f"bbjax {_version('bbjax')} / jax2onnx {_version('jax2onnx')}",
        }
    except TreeCodecError as exc:
        raise ExportError(str(exc)) from exc
    onnx.helper.set_model_props(model, {**metadata.read(model), **props})
    _import_custom_domains(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {exc}") from exc
    return model


def _parameter_names(fn: Callable[..., Any], count: int) -> list[str]:
    """Names for ``count`` positional arguments: ``fn``'s parameter names, else ``arg<i>``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    named = [safe_name(p.name) for p in parameters
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [named[i] if i < len(named) else f"arg{i}" for i in range(count)]


def _result_names(result: Any) -> list[str]:
    """``out<i>.<path>`` for the items of a tuple or list result, else ``out.<path>``."""
    if type(result) in (tuple, list):
        return [name for i, item in enumerate(result) for name in leaf_names(item, f"out{i}")]
    return leaf_names(result, "out")


def _unique(names: list[str], taken: set[str]) -> list[str]:
    """``names`` with ``_1``, ``_2``, … appended to each that repeats an earlier or taken one."""
    taken = set(taken)
    unique = []
    for name in names:
        candidate, k = name, 0
        while candidate in taken:
            k += 1
            candidate = f"{name}_{k}"
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _name_io(model: onnx.ModelProto, input_names: list[str], output_names: list[str]) -> None:
    """Rename the graph's inputs and outputs in place; an output that is not a fresh node
    result (an input, an initializer, a repeated value) gets an ``Identity`` node."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(input_names) != len(inputs) or len(output_names) != len(graph.output):
        raise ExportError(f"{len(input_names)} input names and {len(output_names)} output names "
                          f"given for {len(inputs)} inputs and {len(graph.output)} outputs")
    wanted = input_names + output_names
    if len(set(wanted)) != len(wanted) or "" in wanted:
        raise ExportError(f"input and output names must be distinct and non-empty: {wanted}")
    mapping = {i.name: name for i, name in zip(inputs, input_names)}
    produced = {o for node in graph.node for o in node.output}
    copies = []
    for out, name in zip(graph.output, output_names):
        if out.name in produced and out.name not in mapping:
            mapping[out.name] = name
        else:
            copies.append((out.name, name))
    existing = _value_names(graph)
    taken = existing | set(wanted)
    for name in sorted(existing - mapping.keys()):
        if name in wanted:  # an internal value already holds a wanted name: move it aside
            mapping[name] = _unique([name], taken)[0]
            taken.add(mapping[name])
    _rename(graph, mapping)
    for out, name in zip(graph.output, output_names):
        out.name = name
    graph.node.extend(onnx.helper.make_node("Identity", [mapping.get(source, source)], [name])
                      for source, name in copies)


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {i.name for i in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for sub in _subgraphs(node):
            names |= _value_names(sub)
    return names - {""}


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer,
                  *(s.values for s in graph.sparse_initializer)]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for sub in _subgraphs(node):
            _rename(sub, mapping)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _input_specs(leaves: list[Any], in_keys: dict[int, str]) -> list[jax.ShapeDtypeStruct]:
    names: list[str] = []
    for leaf in leaves:
        for dim in getattr(leaf, "shape", ()):
            if isinstance(dim, str) and dim not in names:
                names.append(dim)
    scope = jax_export.SymbolicScope()
    symbols = {n: jax_export.symbolic_shape(n, scope=scope)[0] for n in names}
    specs = []
    for i, leaf in enumerate(leaves):
        if i in in_keys:
            leaf = jax.random.key_data(leaf)
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        shape = tuple(symbols[d] if isinstance(d, str) else int(d) for d in leaf.shape)
        specs.append(jax.ShapeDtypeStruct(shape, leaf.dtype))
    return specs


def _sub_jaxprs(eqn: Any):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def _check_convertible(jaxpr: jcore.Jaxpr) -> None:
    from jax2onnx.plugins.plugin_system import PLUGIN_REGISTRY
    jax2onnx_overrides.install()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name not in PLUGIN_REGISTRY:
            raise ExportError("no ONNX conversion exists for this JAX primitive",
                              primitive=eqn.primitive.name, source=source_of(eqn))
        for sub in _sub_jaxprs(eqn):
            _check_convertible(sub)


def _convert(prepared: jcore.ClosedJaxpr, specs: list, model_name: str, opset: int,
             double_precision: bool) -> onnx.ModelProto:
    from jax2onnx import to_onnx
    jax2onnx_overrides.install()
    run = jcore.jaxpr_as_fun(prepared)
    try:
        with _quiet("onnx_ir", "jax2onnx"):
            model = to_onnx(lambda *args: tuple(run(*args)), specs, model_name=model_name,
                            opset=opset, enable_double_precision=double_precision)
    except ExportError:
        raise
    except Exception as exc:
        primitive = _primitive_in_message(str(exc))
        raise ExportError(f"ONNX conversion failed: {type(exc).__name__}: {exc}",
                          primitive=primitive) from exc
    if not isinstance(model, onnx.ModelProto):
        raise ExportError(f"jax2onnx returned {type(model).__name__}, expected a ModelProto")
    return model


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence the converter's value-type chatter; errors still raise."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _primitive_in_message(message: str) -> str | None:
    marker = "primitive '"
    if marker in message:
        return message.split(marker, 1)[1].split("'", 1)[0]
    return None


def _import_custom_domains(model: onnx.ModelProto) -> None:
    used = set()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            used.add(node.domain)
            for sub in _subgraphs(node):
                visit(sub)

    visit(model.graph)
    imported = {imp.domain for imp in model.opset_import}
    for domain in sorted(used - imported):
        if domain.startswith(domains.PREFIX):
            version = domains.OPSETS.get(domain, 1)
            model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
