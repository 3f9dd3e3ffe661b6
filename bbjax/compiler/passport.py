"""The compilation passport: what was compiled, by which compiler, with which components.

Model metadata, each key after ``ai.bytesandbrains.``:

* ``compiled`` = the format version; ``compiler`` = the bbjax version;
* ``binding.<target>.<slot>`` = ``<role>|<component name>`` for each slot partition
  ``<target>`` calls, through slot calls or inlined (:mod:`bbjax.compiler.inline`);
* ``fingerprint.<slot>`` = the bound component's :attr:`~bbjax.components.Component.fingerprint`
  and ``component.<slot>`` = its ``fingerprint_parts`` as canonical JSON;
* ``hash.<target>`` = SHA-256 of the partition's deterministic serialization followed by
  the canonical JSON of the ``binding``, ``fingerprint`` and ``component`` entries of the
  slots it calls.

:func:`verify_passport` checks all of it; :func:`check_component` checks a component given
for a slot against the fingerprint recorded for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import onnx

from bbjax.compiler import annotations as ann
from bbjax.compiler.inline import inlined_slots
from bbjax.components.component import Component, canonical_json, digest
from bbjax.errors import NotCompiledError, PassportError

if TYPE_CHECKING:
    from bbjax.compiler.compiler import CompileContext

FORMAT = "v2"
COMPILED = ann.PREFIX + "compiled"
COMPILER = ann.PREFIX + "compiler"
BINDING = ann.PREFIX + "binding."
FINGERPRINT = ann.PREFIX + "fingerprint."
PARTS = ann.PREFIX + "component."
HASH = ann.PREFIX + "hash."
_TABLES = (BINDING, FINGERPRINT, PARTS, HASH)


def compiler_version() -> str:
    import bbjax
    return bbjax.__version__


def called_slots(function: onnx.FunctionProto) -> list[str]:
    """The slots ``function`` calls (through slot calls, or inlined), sorted;
    :class:`PassportError` for a slot call that does not name its slot (an altered
    artifact)."""
    slots = {ann.get(n, ann.SLOT) for n in function.node if ann.is_slot_call(n)}
    if not all(isinstance(slot, str) and slot for slot in slots):
        raise PassportError(f"partition {function.name!r} has a slot call that names no slot "
                            f"(annotation {ann.SLOT!r} missing or empty)")
    return sorted(slots | set(inlined_slots(function)))


def slot_keys(function: onnx.FunctionProto, slot: str) -> tuple[str, str, str]:
    """The passport keys of ``slot`` in ``function``: binding, fingerprint, parts."""
    return f"{BINDING}{function.name}.{slot}", FINGERPRINT + slot, PARTS + slot


def content_hash(function: onnx.FunctionProto, props: Mapping[str, str]) -> str:
    """SHA-256 of ``function``'s bytes and its slots' passport entries in ``props``."""
    table = {key: props[key] for slot in called_slots(function)
             for key in slot_keys(function, slot)}
    hasher = hashlib.sha256(function.SerializeToString(deterministic=True))
    hasher.update(canonical_json(table).encode())
    return hasher.hexdigest()


def stamp_passport(model: onnx.ModelProto, context: CompileContext) -> onnx.ModelProto:
    """Pass ``stamp_passport``: ``model`` with the passport of its partitions."""
    out = ann.copy_model(model)
    props = {p.key: p.value for p in out.metadata_props}
    props[COMPILED] = FORMAT
    props[COMPILER] = compiler_version()
    for function in out.functions:
        for slot in called_slots(function):
            component = context.bindings[slot]
            binding, fingerprint, parts = slot_keys(function, slot)
            props[binding] = f"{component.role.value}|{component.name}"
            props[fingerprint] = component.fingerprint
            props[parts] = canonical_json(dict(component.fingerprint_parts))
        props[HASH + function.name] = content_hash(function, props)
    onnx.helper.set_model_props(out, props)
    return out


def verify_passport(model: onnx.ModelProto) -> dict[str, str]:
    """Check the passport; returns the metadata.

    Raises :class:`NotCompiledError` without a passport and :class:`PassportError` for
    another format or compiler version, a passport entry naming no partition or slot, a
    missing entry, a slot bound to two components, a partition whose bytes or slot entries
    changed after compilation, or a fingerprint that is not the digest of its parts.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if COMPILED not in props:
        raise NotCompiledError("model has no compilation passport (compile it with "
                               "bbjax.Compiler first)")
    if props[COMPILED] != FORMAT:
        raise PassportError(f"passport format {props[COMPILED]!r}, this bbjax reads {FORMAT!r}")
    if props.get(COMPILER) != compiler_version():
        raise PassportError(f"compiled by bbjax {props.get(COMPILER)!r}, this is "
                            f"{compiler_version()!r}; recompile")
    expected = {HASH + f.name for f in model.functions}
    expected.update(key for f in model.functions for slot in called_slots(f)
                    for key in slot_keys(f, slot))
    for key in sorted(props):
        if key.startswith(_TABLES) and key not in expected:
            raise PassportError(f"passport entry {key!r} names no partition of the model or "
                                "no slot its partition calls")
    missing = sorted(expected - set(props))
    if missing:
        raise PassportError(f"the passport has no entries {missing}")
    for function in model.functions:
        if content_hash(function, props) != props[HASH + function.name]:
            raise PassportError(f"partition {function.name!r} or the binding, fingerprint or "
                                "component entries of its slots were altered after "
                                "compilation (content hash mismatch)")
    bound: dict[str, tuple[str, str]] = {}
    for function in model.functions:
        for slot in called_slots(function):
            value = props[slot_keys(function, slot)[0]]
            first = bound.setdefault(slot, (value, function.name))
            if first[0] != value:
                raise PassportError(f"slot {slot!r} is bound to {first[0]!r} in partition "
                                    f"{first[1]!r} and {value!r} in {function.name!r}")
    for slot in bound:
        try:
            consistent = digest(json.loads(props[PARTS + slot])) == props[FINGERPRINT + slot]
        except ValueError:
            consistent = False
        if not consistent:
            raise PassportError(f"slot {slot!r}: entry {PARTS + slot!r} does not hash to "
                                f"fingerprint {props[FINGERPRINT + slot]}")
    return props


def recorded_bindings(props: Mapping[str, str],
                      functions: Iterable[onnx.FunctionProto]) -> dict[str, str]:
    """Slot -> ``<role>|<component name>`` for the slots ``functions`` call, from a
    verified passport's ``props``."""
    return {slot: props[slot_keys(f, slot)[0]] for f in functions for slot in called_slots(f)}


def check_component(props: Mapping[str, str], slot: str, component: Component,
                    user: str) -> None:
    """Raise :class:`PassportError` unless ``component``'s fingerprint is the one a verified
    passport's ``props`` records for ``slot``; the message names the slot, both fingerprints
    and the parts that differ. ``user`` names the caller (``"install"``)."""
    expected = props[FINGERPRINT + slot]
    if component.fingerprint == expected:
        return
    recorded = json.loads(props[PARTS + slot])
    given = component.fingerprint_parts
    differ = [part for part in given if recorded.get(part) != given[part]]
    raise PassportError(
        f"slot {slot!r} was compiled with a component of fingerprint {expected}; {user} was "
        f"given {component.name!r} ({component.role.value}) of fingerprint "
        f"{component.fingerprint}, which differs in: {', '.join(differ)}")
