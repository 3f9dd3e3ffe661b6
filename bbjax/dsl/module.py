"""``Module``: a federated program written as one body over peer classes."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import onnx

from bbjax.components import Component
from bbjax.dsl import onnx_plugins  # noqa: F401  (registers the DSL's export plugins)
from bbjax.errors import ModuleError
from bbjax.dsl.graph import Graph
from bbjax.onnx import domains
from bbjax.onnx.export import export

PEER_CLASS_KEY = domains.KEY_PREFIX + "peer_class."  # + graph input name -> its peer class
SELF = "self"


class Module:
    """Subclass and write ``body(g)``; optionally ``bootstrap(g)`` (run once at install).

    The body records graph inputs (``g.input``, ``g.peers``), slot calls
    (``g.slot("model").forward(x)``), sends (``g.send(port, value, to=peers)``), sub-module
    calls (``g.call``) and outputs (``g.output``), with any ``jnp`` code between them.
    """

    name: str = "module"

    def body(self, g: Graph) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define body(g)")

    def bootstrap(self, g: Graph) -> None:
        """Optional: what a node runs once when installed (default: nothing)."""

    def has_bootstrap(self) -> bool:
        return type(self).bootstrap is not Module.bootstrap

    def build(self, bindings: Mapping[str, Component] | None = None) -> onnx.ModelProto:
        """Trace the body into an ONNX ModelProto (slot output shapes come from ``bindings``)."""
        return trace_to_onnx(self.body, self.name, dict(bindings or {}))


def trace_to_onnx(body, name: str, bindings: dict[str, Component]) -> onnx.ModelProto:
    """Trace ``body(g)`` twice — once to find its inputs, once for real — and export it."""
    key = jax.random.key(0)
    states = {slot: jax.eval_shape(component.init, key) for slot, component in bindings.items()}
    discovery = Graph(bindings, states, None)
    jax.eval_shape(lambda: body(discovery))
    if not discovery.final_outputs():
        raise ModuleError(f"module {name!r} records no outputs and calls no slots")
    names = list(discovery.declared)
    specs = [discovery.declared[n] for n in names]
    output_names = []
    for out, value in sorted(discovery.final_outputs().items()):  # export sorts dict keys
        leaves = jax.tree.leaves(value)
        output_names += [out] if len(leaves) == 1 else [f"{out}.{i}" for i in range(len(leaves))]

    def traced(*args: Any) -> dict[str, Any]:
        g = Graph(bindings, states, dict(zip(names, args)))
        body(g)
        return g.final_outputs()

    model = export(traced, *specs, name=name, input_names=names,
                   output_names=output_names or None)
    for input_name, peer_class in discovery.peer_classes.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            PEER_CLASS_KEY + input_name: peer_class})
    return model

