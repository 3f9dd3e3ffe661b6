"""The op table: every ONNX ``(domain, op_type)`` bbjax can lower, mapped to a JAX implementation.

An implementation is ``impl(ctx, *inputs) -> array | tuple[array, ...]`` where ``ctx`` is a
:class:`bbjax.onnx.context.NodeContext` (attributes, static values, subgraphs) and absent
optional inputs arrive as ``None``. Register one with :func:`op`; ``lower(model, ops=...)``
overrides entries for one lowered function only (:func:`overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from bbjax.errors import LoweringError

OpImpl = Callable[..., Any]
OpKey = tuple[str, str]  # (domain, op_type)

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpEntry:
    """One row of the op table."""

    domain: str
    op_type: str
    impl: OpImpl
    foldable: bool  # may be evaluated at trace time when every input is static


OP_TABLE: dict[tuple[str, str], OpEntry] = {}


def op(*op_types: str, domain: str = "", foldable: bool = True) -> Callable[[OpImpl], OpImpl]:
    """Register ``impl`` for each ``op_type`` in ``domain`` ("" is the default ONNX domain).

    ``foldable=False`` for ops that must never be constant-folded (random sampling,
    control flow, ops with side inputs such as keys).
    """

    def register(impl: OpImpl) -> OpImpl:
        for op_type in op_types:
            key = (domain, op_type)
            if key in OP_TABLE:
                raise ValueError(f"op {domain or 'ai.onnx'}::{op_type} registered twice")
            OP_TABLE[key] = OpEntry(domain, op_type, impl, foldable)
        return impl

    return register


ANY_OP = "*"  # registers an implementation for every op type of a domain


def lookup(domain: str, op_type: str,
           overrides: Mapping[OpKey, OpEntry] | None = None) -> OpEntry | None:
    """The entry for ``(domain, op_type)``, else the domain's ``"*"`` entry, looked up in
    ``overrides`` first, then in the op table; ``ai.onnx`` is an alias of the default
    domain."""
    if domain in DEFAULT_DOMAINS:
        domain = ""
    for table in (overrides or {}, OP_TABLE):
        entry = table.get((domain, op_type)) or table.get((domain, ANY_OP))
        if entry is not None:
            return entry
    return None


def overrides(ops: Mapping[Any, OpImpl]) -> dict[OpKey, OpEntry]:
    """``ops`` (``(domain, op_type) -> impl``) as op-table entries. An override keeps the
    foldability of the entry it replaces; an op the table lacks is never folded.

    Raises :class:`LoweringError` saying what is wrong with a key that is not a ``(domain,
    op_type)`` pair of strings, a default-domain op the table lacks, a key given twice
    (as ``"ai.onnx"`` and ``""``) or an ``impl`` that is not callable.
    """
    entries: dict[OpKey, OpEntry] = {}
    for key, impl in ops.items():
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(part, str) for part in key) and key[1]):
            raise LoweringError(f"op override key {key!r} is not a (domain, op_type) pair of "
                             "strings")
        domain = "" if key[0] in DEFAULT_DOMAINS else key[0]
        label = f"{domain or 'ai.onnx'}::{key[1]}"
        replaced = OP_TABLE.get((domain, key[1]))
        if domain == "" and replaced is None:
            raise LoweringError(f"op override {label}: the op table has no such ai.onnx op")
        if not callable(impl):
            raise LoweringError(f"op override {label} is not callable (got "
                             f"{type(impl).__name__})")
        if (domain, key[1]) in entries:
            raise LoweringError(f"op override {label} is given twice (as 'ai.onnx' and '')")
        foldable = replaced.foldable if replaced is not None else False
        entries[domain, key[1]] = OpEntry(domain, key[1], impl, foldable)
    return entries
