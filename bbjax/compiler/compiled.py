"""``Compiled``: the compiler's output, one ONNX model with a partition per peer class."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import helper

from bbjax.compiler.passport import verify_passport
from bbjax.compiler.program import Program
from bbjax.components import Component
from bbjax.errors import CompileError


@dataclass(frozen=True)
class Compiled:
    """A compiled artifact; ``model`` is a valid ONNX ModelProto with a passport.

    ``bindings`` are the components :meth:`bbjax.Compiler.compile` bound (slot ->
    component), which ``simulate`` and ``install`` use unless given others; they are not
    saved, so an artifact :func:`load`-ed from disk has none.
    """

    model: onnx.ModelProto
    bindings: Mapping[str, Component] | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def program(self) -> Program:
        """The artifact read once: :meth:`bbjax.compiler.program.Program.read`."""
        return Program.read(self.model, self.bindings)

    @property
    def partitions(self) -> list[str]:
        """Target names, ``<Module>_<class>#<hash>``."""
        return [f.name for f in self.model.functions]

    def find(self, target: str) -> onnx.FunctionProto:
        """The partition named ``target`` exactly or by its name before ``#``."""
        for function in self.model.functions:
            if target in (function.name, function.name.split("#", 1)[0]):
                return function
        raise CompileError(f"no partition {target!r}; available: {self.partitions}")

    def partition_model(self, target: str) -> onnx.ModelProto:
        """The partition as a standalone ONNX model (its function body as the main graph)."""
        function = self.find(target)
        types = {v.name: v for v in function.value_info}
        graph = helper.make_graph(list(function.node), function.name,
                                  [types[i] for i in function.input],
                                  [types[o] for o in function.output])
        model = helper.make_model(graph, opset_imports=list(function.opset_import),
                                  ir_version=self.model.ir_version)
        return model

    def save(self, path: str | Path) -> None:
        onnx.save(self.model, str(path))


def load(path: str | Path) -> Compiled:
    """Load a compiled artifact (without components) and verify its passport."""
    model = onnx.load(str(path))
    verify_passport(model)
    return Compiled(model)
