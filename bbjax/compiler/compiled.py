"""``Compiled``: the compiler's output, one ONNX model with a partition per peer class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from bbjax.errors import CompileError
from bbjax.compiler.passport import verify_passport


@dataclass(frozen=True)
class Compiled:
    """A compiled artifact; ``model`` is a valid ONNX ModelProto with a passport."""

    model: onnx.ModelProto

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
    """Load a compiled artifact and verify its passport."""
    model = onnx.load(str(path))
    verify_passport(model)
    return Compiled(model)
