"""bbjax's registered overrides of jax2onnx conversion plugins.

jax2onnx converts a jaxpr equation with the plugin registered for its primitive. bbjax
registers its own plugin for some primitives, through jax2onnx's ``register_primitive``
(never by editing the installed package):

- ``dot_general``: jax2onnx 0.17.1 lowers a 2-D left operand contracted on axis 0
  (``xᵀ·g``, in every backward pass) to a ``Gemm`` without ``transA``, which is wrong; the
  override sends those contractions to the ``Einsum`` lowering.
- ``bbjax_random_*``: the raw-key PRNG primitives become ops of the
  ``ai.bytesandbrains.random`` domain.
- ``bitcast_convert_type``: jax2onnx emits ONNX ``BitCast`` (opset 26) whatever the target
  opset, which fails ``onnx.checker`` below 26; below 26 the override emits
  ``ai.bytesandbrains.lax::BitcastConvert`` instead.
- ``erf_inv``: jax2onnx approximates it with ONNX arithmetic, which differs from XLA's in
  the last bits and so breaks bit-exact ``jax.random.normal``; the override emits
  ``ai.bytesandbrains.lax::ErfInv``.

jax2onnx loads its plugins by importing every module of its plugin tree. Its ``equinox``
plugins build example models when imported (~10 s of XLA compiles per process, before the
first export), and its ``examples`` and ``dm_pix`` trees add nothing bbjax exports, so
:func:`install` loads the ``jax`` and ``flax`` trees only (:data:`PLUGIN_TREES`) and marks
the plugins loaded, so jax2onnx does not import the rest.

:func:`install` applies them; :func:`disabled` removes one for a block (tests use it to show
what goes wrong without it). ``OVERRIDES`` lists them by name.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import onnx_ir as ir
from jax2onnx.plugins import plugin_system
from jax2onnx.plugins._ir_shapes import _stamp_type_and_shape
from jax2onnx.plugins.jax.lax.dot_general import DotGeneralPlugin
from jax2onnx.plugins.plugin_system import PLUGIN_REGISTRY, PrimitiveLeafPlugin

from bbjax.onnx import domains
from bbjax.onnx import random_primitives as rp

BITCAST_OPSET = onnx.defs.get_schema("BitCast").since_version


class TransposedLhsDotGeneral(DotGeneralPlugin):
    """``dot_general`` whose 2-D lhs contracted on axis 0 goes to Einsum, not a wrong Gemm."""

    def _try_lower_matmul(self, ctx, lhs_var, rhs_var, out_var, lhs_val, rhs_val, out_spec,
                          lhs_shape, rhs_shape, out_shape, lhs_contract, rhs_contract,
                          lhs_batch, rhs_batch) -> bool:
        if not lhs_batch and len(lhs_shape) == 2 and tuple(lhs_contract) != (1,):
            return False
        return super()._try_lower_matmul(
            ctx, lhs_var, rhs_var, out_var, lhs_val, rhs_val, out_spec, lhs_shape, rhs_shape,
            out_shape, lhs_contract, rhs_contract, lhs_batch, rhs_batch)


_IR_UINT = {np.dtype(np.uint8): ir.DataType.UINT8, np.dtype(np.uint16): ir.DataType.UINT16,
            np.dtype(np.uint32): ir.DataType.UINT32, np.dtype(np.uint64): ir.DataType.UINT64}


class RandomPrimitivePlugin(PrimitiveLeafPlugin):
    """A raw-key PRNG primitive as one node of the ``ai.bytesandbrains.random`` domain."""

    op_type = ""

    def lower(self, ctx: Any, eqn: Any) -> None:
        inputs = [ctx.get_value_for_var(v, name_hint=ctx.fresh_name("rng_in")) for v in eqn.invars]
        attributes = {k: (list(v) if isinstance(v, tuple) else v) for k, v in eqn.params.items()}
        out_var = eqn.outvars[0]
        value = ctx.builder.__getattr__(self.op_type)(
            *inputs, _domain=domains.RANDOM, _outputs=[ctx.fresh_name(self.op_type)],
            **attributes)
        value.type = ir.TensorType(_IR_UINT[np.dtype(out_var.aval.dtype)])
        _stamp_type_and_shape(value, tuple(out_var.aval.shape))
        ctx.bind_value_for_var(out_var, value)


def _emit_lax_op(ctx: Any, eqn: Any, op_type: str, **attributes: Any) -> None:
    """Lower a one-output primitive to ``ai.bytesandbrains.lax::op_type``."""
    out_var = eqn.outvars[0]
    inputs = [ctx.get_value_for_var(v, name_hint=ctx.fresh_name("lax_in")) for v in eqn.invars]
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(out_var.aval.dtype))
    value = ctx.builder.__getattr__(op_type)(*inputs, _domain=domains.LAX,
                                             _outputs=[ctx.fresh_name(op_type)], **attributes)
    value.type = ir.TensorType(ir.DataType(elem))
    _stamp_type_and_shape(value, tuple(out_var.aval.shape))
    ctx.bind_value_for_var(out_var, value)


class BitcastConvertPlugin(PrimitiveLeafPlugin):
    """``bitcast_convert_type`` as ONNX BitCast from opset 26, else a bbjax ``lax`` op."""

    def __init__(self, original: Any):
        self.original = original

    def lower(self, ctx: Any, eqn: Any) -> None:
        if int(ctx.builder.opset) >= BITCAST_OPSET:
            return self.original.lower(ctx, eqn)
        to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(eqn.outvars[0].aval.dtype))
        _emit_lax_op(ctx, eqn, "BitcastConvert", to=int(to))


class ErfInvPlugin(PrimitiveLeafPlugin):
    """``erf_inv`` as ``ai.bytesandbrains.lax::ErfInv``, lowered back to ``lax.erf_inv``."""

    def lower(self, ctx: Any, eqn: Any) -> None:
        _emit_lax_op(ctx, eqn, "ErfInv")


def _adopt(plugin: PrimitiveLeafPlugin, original: Any) -> PrimitiveLeafPlugin:
    plugin.primitive = original.primitive
    plugin.metadata = original.metadata
    return plugin


def _random_plugin(primitive, op_type: str, original: Any = None) -> RandomPrimitivePlugin:
    cls = type(f"{op_type}Plugin", (RandomPrimitivePlugin,), {"op_type": op_type})
    plugin = cls()
    plugin.primitive = primitive.name
    plugin.metadata = {"jaxpr_primitive": primitive.name}
    return plugin


_FACTORIES = {
    "dot_general": lambda original: _adopt(TransposedLhsDotGeneral(), original),
    "bitcast_convert_type": lambda original: _adopt(BitcastConvertPlugin(original), original),
    "erf_inv": lambda original: _adopt(ErfInvPlugin(), original),
    **{p.name: (lambda original, p=p, t=t: _random_plugin(p, t)) for p, t in rp.ONNX_OP_TYPES.items()},
}
OVERRIDES: tuple[str, ...] = tuple(_FACTORIES)


def register(primitive_name: str, factory: Any) -> None:
    """Register a bbjax plugin for a primitive of bbjax's own (``factory(original)``)."""
    if primitive_name in _FACTORIES and primitive_name not in _EXTENSIONS:
        raise KeyError(f"{primitive_name!r} is already a bbjax override")
    _FACTORIES[primitive_name] = factory
    _EXTENSIONS.add(primitive_name)


_EXTENSIONS: set[str] = set()

_originals: dict[str, Any] = {}
_disabled: set[str] = set()


PLUGIN_TREES = ("jax", "flax")


def _import_plugins() -> None:
    """Import jax2onnx's plugin modules of :data:`PLUGIN_TREES` (they register themselves)."""
    if plugin_system._already_imported_plugins:
        return
    root = Path(plugin_system.__file__).parent
    for tree in PLUGIN_TREES:
        for path in sorted((root / tree).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            importlib.import_module(".".join(("jax2onnx.plugins", *parts)))
    plugin_system._already_imported_plugins = True


def install() -> None:
    """Load jax2onnx's plugins and put bbjax's overrides in place (idempotent)."""
    _import_plugins()
    for name, factory in _FACTORIES.items():
        if name in _disabled:
            continue
        current = PLUGIN_REGISTRY.get(name)
        if getattr(current, "_bbjax_override", False):
            continue
        original = _originals.setdefault(name, current)
        plugin = factory(original)
        plugin._bbjax_override = True
        PLUGIN_REGISTRY[name] = plugin


@contextlib.contextmanager
def disabled(name: str) -> Iterator[None]:
    """Run a block with jax2onnx's own plugin for ``name`` instead of bbjax's override."""
    if name not in _FACTORIES:
        raise KeyError(f"no bbjax override named {name!r}; overrides: {OVERRIDES}")
    install()
    _disabled.add(name)
    original = _originals.get(name)
    if original is None:
        PLUGIN_REGISTRY.pop(name, None)
    else:
        PLUGIN_REGISTRY[name] = original
    try:
        yield
    finally:
        _disabled.discard(name)
        install()
