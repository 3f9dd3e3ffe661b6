"""``Compiler``: bind components to slots, run the ordered passes, return ``Compiled``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Callable, Mapping

import onnx

from bbjax.compiler import annotations as ann
from bbjax.compiler.compiled import Compiled
from bbjax.compiler.inline import inline_slots
from bbjax.errors import CompileError
from bbjax.compiler.partition import partition_by_peer_class
from bbjax.compiler.passport import stamp_passport
from bbjax.compiler.peer_classes import infer_peer_classes
from bbjax.compiler.receives import synthesize_receives
from bbjax.compiler.slots import resolve_slots
from bbjax.compiler.validate import expand_attribute_defaults, validate
from bbjax.compiler.wire import (DEFAULT_PER_HOP_BUDGET_NS, analyze_wire_edges, check_wire_types,
                                 insert_deadlines, insert_receive_gates, insert_send_gates,
                                 validate_runtime_complete)
from bbjax.components import Component
from bbjax.dsl import Module
from bbjax.dsl.module import trace_to_onnx

PassFn = Callable[[onnx.ModelProto, "CompileContext"], onnx.ModelProto]


@dataclass(frozen=True)
class CompileContext:
    """What passes may read besides the model."""

    module: str
    bindings: Mapping[str, Component]
    per_hop_budget_ns: int = DEFAULT_PER_HOP_BUDGET_NS
    inline: frozenset[str] | None = None  # the slots ``inline_slots`` may inline (None: all)


@dataclass(frozen=True)
class Pass:
    name: str
    run: PassFn


DEFAULT_PASSES: tuple[Pass, ...] = (
    Pass("validate", validate),
    Pass("expand_attribute_defaults", expand_attribute_defaults),
    Pass("infer_peer_classes", infer_peer_classes),
    Pass("synthesize_receives", synthesize_receives),
    Pass("check_wire_types", check_wire_types),
    Pass("resolve_slots", resolve_slots),
    Pass("analyze_wire_edges", analyze_wire_edges),
    Pass("insert_receive_gates", insert_receive_gates),
    Pass("insert_send_gates", insert_send_gates),
    Pass("insert_deadlines", insert_deadlines),
    Pass("validate_runtime_complete", validate_runtime_complete),
    Pass("partition_by_peer_class", partition_by_peer_class),
    Pass("inline_slots", inline_slots),
    Pass("stamp_passport", stamp_passport),
)


class Compiler:
    """``Compiler().bind("model", component)....compile(module)``.

    ``passes`` is the ordered, editable list of named passes; each is a pure
    ``(ModelProto, CompileContext) -> ModelProto`` function.

    ``inline`` (pass ``inline_slots``, :mod:`bbjax.compiler.inline`): ``True`` splices the
    methods of every slot whose component exports into its partitions, a collection of
    slot names only those slots', ``False`` none (the pass is left out: every slot call
    stays an opaque node, as before inlining existed).
    """

    def __init__(self, per_hop_budget_ns: int = DEFAULT_PER_HOP_BUDGET_NS,
                 inline: bool | Collection[str] = True) -> None:
        if per_hop_budget_ns <= 0:
            raise CompileError(f"per_hop_budget_ns must be positive, got {per_hop_budget_ns}")
        self.bindings: dict[str, Component] = {}
        self.passes: list[Pass] = list(DEFAULT_PASSES)
        self.per_hop_budget_ns = per_hop_budget_ns
        self.inline = _inline_option(inline)
        if inline is False:
            self.remove("inline_slots")

    def bind(self, slot: str, component: Component) -> "Compiler":
        if not isinstance(component, Component):
            raise CompileError(f"slot {slot!r}: expected a bbjax Component, got "
                               f"{type(component).__name__}")
        if slot in self.bindings and self.bindings[slot] is not component:
            raise CompileError(f"slot {slot!r} is already bound to "
                               f"{self.bindings[slot].name!r}")
        self.bindings[slot] = component
        return self

    def insert(self, pass_: Pass, *, before: str | None = None, after: str | None = None) -> "Compiler":
        """Add a pass before/after a named one (at the end when neither is given)."""
        names = [p.name for p in self.passes]
        if pass_.name in names:
            raise CompileError(f"a pass named {pass_.name!r} is already in the pipeline")
        anchor = before or after
        if anchor is None:
            self.passes.append(pass_)
            return self
        if anchor not in names:
            raise CompileError(f"no pass {anchor!r}; passes: {names}")
        self.passes.insert(names.index(anchor) + (1 if after else 0), pass_)
        return self

    def remove(self, name: str) -> "Compiler":
        names = [p.name for p in self.passes]
        if name not in names:
            raise CompileError(f"no pass {name!r}; passes: {names}")
        del self.passes[names.index(name)]
        return self

    def compile(self, module: Module | onnx.ModelProto) -> Compiled:
        """Build ``module`` with the bound components and run every pass; the returned
        artifact keeps those components as its ``bindings``.

        A Module that defines ``bootstrap(g)`` gets its bootstrap compiled the same way into
        partitions named ``<Module>__bootstrap[_<class>]#…``, merged into the artifact.
        """
        if not isinstance(module, Module):
            return Compiled(self._run_passes(module, module.graph.name), dict(self.bindings))
        compiled = self._run_passes(module.build(self.bindings), module.name)
        if module.has_bootstrap():
            name = bootstrap_name(module.name)
            boot = self._run_passes(trace_to_onnx(module.bootstrap, name, dict(self.bindings)),
                                    name)
            compiled = merge_partitions(compiled, boot, self._context(module.name))
        return Compiled(compiled, dict(self.bindings))

    def _context(self, name: str) -> CompileContext:
        return CompileContext(name, dict(self.bindings), self.per_hop_budget_ns, self.inline)

    def _run_passes(self, model: onnx.ModelProto, name: str) -> onnx.ModelProto:
        context = self._context(name)
        for pass_ in self.passes:
            model = pass_.run(model, context)
        return model


def _inline_option(inline: bool | Collection[str]) -> frozenset[str] | None:
    """``Compiler(inline=...)`` as the context's slot selection (None: every slot)."""
    if isinstance(inline, bool):
        return None
    if isinstance(inline, str) or not isinstance(inline, Collection) or \
            not all(isinstance(s, str) and s for s in inline):
        raise CompileError(f"inline must be True, False or a collection of slot names, got "
                           f"{inline!r}")
    return frozenset(inline)


def bootstrap_name(module: str) -> str:
    return f"{module}__bootstrap"


def merge_partitions(main: onnx.ModelProto, extra: onnx.ModelProto,
                     context: CompileContext) -> onnx.ModelProto:
    """``main`` with ``extra``'s partitions added and the passport stamped over both."""
    out = ann.copy_model(main)
    out.functions.extend(extra.functions)
    imported = {i.domain for i in out.opset_import}
    out.opset_import.extend(i for i in extra.opset_import if i.domain not in imported)
    return stamp_passport(out, context)
