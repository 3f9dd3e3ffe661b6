"""The compilation passport: what was compiled, by which compiler, with which bindings.

Model metadata ``ai.bytesandbrains.compiled`` = format version; ``…compiler`` = bbjax
version; ``…binding.<target>.<slot>`` = ``<role>|<component name>`` for each slot a
partition calls; ``…hash.<target>`` = SHA-256 of the partition's deterministic
serialization. :func:`verify_passport` checks all of it.
"""

from __future__ import annotations

import hashlib

import onnx

from bbjax.compiler import annotations as ann
from bbjax.errors import NotCompiledError, PassportError

FORMAT = "v1"
COMPILED = ann.PREFIX + "compiled"
COMPILER = ann.PREFIX + "compiler"
BINDING = ann.PREFIX + "binding."
HASH = ann.PREFIX + "hash."


def compiler_version() -> str:
    import bbjax
    return bbjax.__version__


def content_hash(function: onnx.FunctionProto) -> str:
    return hashlib.sha256(function.SerializeToString(deterministic=True)).hexdigest()


def stamp_passport(model: onnx.ModelProto, context) -> onnx.ModelProto:
    out = ann.copy_model(model)
    props = {p.key: p.value for p in out.metadata_props}
    props[COMPILED] = FORMAT
    props[COMPILER] = compiler_version()
    for function in out.functions:
        for node in function.node:
            if ann.is_slot_call(node):
                slot = ann.get(node, ann.SLOT)
                component = context.bindings[slot]
                props[f"{BINDING}{function.name}.{slot}"] = \
                    f"{component.role.value}|{component.name}"
        props[HASH + function.name] = content_hash(function)
    onnx.helper.set_model_props(out, props)
    return out


def verify_passport(model: onnx.ModelProto) -> dict[str, str]:
    """Check the passport; returns the metadata. Raises NotCompiledError / PassportError."""
    props = {p.key: p.value for p in model.metadata_props}
    if COMPILED not in props:
        raise NotCompiledError("model has no compilation passport (compile it with "
                               "bbjax.Compiler first)")
    if props[COMPILED] != FORMAT:
        raise PassportError(f"passport format {props[COMPILED]!r}, this bbjax reads {FORMAT!r}")
    if props.get(COMPILER) != compiler_version():
        raise PassportError(f"compiled by bbjax {props.get(COMPILER)!r}, this is "
                            f"{compiler_version()!r}; recompile")
    names = {f.name for f in model.functions}
    for key in props:
        if key.startswith(HASH) and key[len(HASH):] not in names:
            raise PassportError(f"partition {key[len(HASH):]!r} named by the passport is missing")
    for function in model.functions:
        recorded = props.get(HASH + function.name)
        if recorded is None:
            raise PassportError(f"partition {function.name!r} is not in the passport")
        if content_hash(function) != recorded:
            raise PassportError(f"partition {function.name!r} was altered after compilation "
                                "(content hash mismatch)")
    return props
