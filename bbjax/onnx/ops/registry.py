"""The op table: every ONNX ``(domain, op_type)`` bbjax can lower, mapped to a JAX implementation.

An implementation is ``impl(ctx, *inputs) -> array | tuple[array, ...]`` where ``ctx`` is a
:class:`bbjax.onnx.context.NodeContext` (attributes, static values, subgraphs) and absent
optional inputs arrive as ``None``. Register one with :func:`op`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

OpImpl = Callable[..., Any]

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


def lookup(domain: str, op_type: str) -> OpEntry | None:
    """The entry for ``(domain, op_type)``, else the domain's ``"*"`` entry; ``ai.onnx`` is
    an alias of the default domain."""
    if domain in DEFAULT_DOMAINS:
        domain = ""
    return OP_TABLE.get((domain, op_type)) or OP_TABLE.get((domain, ANY_OP))
