"""jax2onnx plugins turning the DSL primitives into ``ai.bytesandbrains`` ONNX nodes.

A slot call becomes ``ai.bytesandbrains.role.<role>::<method>`` with node metadata
``ai.bytesandbrains.slot`` (the slot name), ``…n_triggers`` (trailing trigger-only inputs),
``…in_tree`` (the pytree structure of the data inputs, JSON) and, for PeerSelectors,
``…peer_class``. A send becomes ``ai.bytesandbrains.wire::Send``
(inputs: the values, then the peer set) with ``…port`` and ``…dest_class``; a gather
``ai.bytesandbrains.wire::Gather`` (inputs: the values, the destination peers, the senders;
outputs: the stacked values and the arrival mask) with ``…source_class`` too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from jax2onnx.plugins._ir_shapes import _stamp_type_and_shape
from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin

from bbjax.dsl.primitives import gather_p, send_p, slot_call_p
from bbjax.onnx import domains, jax2onnx_overrides
from bbjax.onnx.treedef import treedef_to_json


def _emit(ctx: Any, eqn: Any, domain: str, op_type: str, metadata: dict[str, str]) -> None:
    inputs = [ctx.get_value_for_var(v, name_hint=ctx.fresh_name("bb_in")) for v in eqn.invars]
    names = [ctx.fresh_name(f"{op_type}_out") for _ in eqn.outvars]
    outs = ctx.builder.__getattr__(op_type)(*inputs, _domain=domain, _outputs=names)
    outs = [outs] if len(names) == 1 else list(outs)
    for value, var in zip(outs, eqn.outvars):
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(var.aval.dtype))
        value.type = ir.TensorType(ir.DataType(elem))
        _stamp_type_and_shape(value, tuple(var.aval.shape))
        ctx.bind_value_for_var(var, value)
    node = outs[0].producer()
    for key, text in metadata.items():
        node.metadata_props[domains.KEY_PREFIX + key] = text


class SlotCallPlugin(PrimitiveLeafPlugin):
    def lower(self, ctx: Any, eqn: Any) -> None:
        p = eqn.params
        metadata = {"slot": p["slot"], "n_triggers": str(p["n_triggers"]),
                    "in_tree": treedef_to_json(p["in_tree"])}
        if p["peer_class"]:
            metadata["peer_class"] = p["peer_class"]
        _emit(ctx, eqn, domains.role_domain(p["role"]), p["method"], metadata)


class SendPlugin(PrimitiveLeafPlugin):
    def lower(self, ctx: Any, eqn: Any) -> None:
        p = eqn.params
        _emit(ctx, eqn, domains.WIRE, "Send", {"port": p["port"], "dest_class": p["dest_class"]})


class GatherPlugin(PrimitiveLeafPlugin):
    def lower(self, ctx: Any, eqn: Any) -> None:
        p = eqn.params
        _emit(ctx, eqn, domains.WIRE, "Gather", {"port": p["port"], "dest_class": p["dest_class"],
                                                 "source_class": p["source_class"]})


def _plugin(cls: type, primitive: Any):
    def factory(original: Any) -> PrimitiveLeafPlugin:
        plugin = cls()
        plugin.primitive = primitive.name
        plugin.metadata = {"jaxpr_primitive": primitive.name}
        return plugin
    return factory


jax2onnx_overrides.register(slot_call_p.name, _plugin(SlotCallPlugin, slot_call_p))
jax2onnx_overrides.register(send_p.name, _plugin(SendPlugin, send_p))
jax2onnx_overrides.register(gather_p.name, _plugin(GatherPlugin, gather_p))
