"""Pytree structures as JSON, so an exported model can restore its caller's pytrees, and
names for a pytree's leaves drawn from their key paths.

A node is encoded as ``{"type": ..., "aux": ..., "children": [...]}``; a leaf as ``null``.
Built-in containers use short names (``tuple``, ``list``, ``dict``, ``None``); any other
registered pytree node type (namedtuples, optax states, ``nnx.State``, flax struct
dataclasses) is named ``module:qualname`` and re-imported on decode. Auxiliary data must be
plain data (str, int, float, bool, None, and tuples / lists / dicts of them).
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import jax
from jax.tree_util import PyTreeDef

from bbjax.errors import TreeCodecError

_BUILTINS = {tuple: "tuple", list: "list", dict: "dict", type(None): "None"}
_BUILTINS_BY_NAME = {name: t for t, name in _BUILTINS.items()}
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[0-9A-Za-z_]`` replaced by ``_`` (``_`` if empty)."""
    return _UNSAFE.sub("_", text) or "_"


def _key_text(key: Any) -> str:
    for field in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, field):
            return safe_name(str(getattr(key, field)))
    return safe_name(str(key))


def leaf_names(tree: Any, prefix: str) -> list[str]:
    """One name per leaf of ``tree``, in ``jax.tree.leaves`` order: ``prefix`` followed by the
    leaf's key path (dict keys, indices, attribute names), joined with ``.``; see
    :func:`safe_name` for each key."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return [".".join([prefix, *map(_key_text, path)]) for path in paths]


def _encode_aux(value: Any, owner: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode_aux(v, owner) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode_aux(v, owner) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode_aux(k, owner), _encode_aux(v, owner)] for k, v in value.items()]}
    raise TreeCodecError(
        f"pytree node {owner} carries auxiliary data of type {type(value).__name__} "
        "that cannot be recorded; use plain containers (dict, tuple, list) for it"
    )


def _decode_aux(value: Any) -> Any:
    if isinstance(value, dict):
        (kind, items), = value.items()
        if kind == "tuple":
            return tuple(_decode_aux(v) for v in items)
        if kind == "list":
            return [_decode_aux(v) for v in items]
        if kind == "dict":
            return {_decode_aux(k): _decode_aux(v) for k, v in items}
        raise TreeCodecError(f"unknown auxiliary data tag {kind!r}")
    return value


def _type_name(node_type: type) -> str:
    if node_type in _BUILTINS:
        return _BUILTINS[node_type]
    return f"{node_type.__module__}:{node_type.__qualname__}"


def _import_type(name: str) -> type:
    if name in _BUILTINS_BY_NAME:
        return _BUILTINS_BY_NAME[name]
    module_name, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TreeCodecError(f"pytree node type {name!r} cannot be imported: {exc}") from exc
    return obj


def _encode(treedef: PyTreeDef) -> Any:
    node_data = treedef.node_data()
    if node_data is None:
        return None
    node_type, aux = node_data
    name = _type_name(node_type)
    return {
        "type": name,
        "aux": _encode_aux(aux, name),
        "children": [_encode(child) for child in treedef.children()],
    }


def _decode(data: Any) -> PyTreeDef:
    if data is None:
        return jax.tree.structure(0)
    node_type = _import_type(data["type"])
    children = [_decode(child) for child in data["children"]]
    try:
        return PyTreeDef.from_node_data_and_children(
            jax.tree_util.default_registry, (node_type, _decode_aux(data["aux"])), children
        )
    except (ValueError, TypeError) as exc:
        raise TreeCodecError(f"cannot rebuild pytree node {data['type']!r}: {exc}") from exc


def treedef_to_json(treedef: PyTreeDef) -> str:
    """Encode a pytree structure as a JSON string."""
    return json.dumps(_encode(treedef), separators=(",", ":"))


def treedef_from_json(text: str) -> PyTreeDef:
    """Decode a structure written by :func:`treedef_to_json`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TreeCodecError(f"pytree structure is not valid JSON: {exc}") from exc
    return _decode(data)
