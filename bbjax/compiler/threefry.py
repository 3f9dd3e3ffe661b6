"""The ``ai.bytesandbrains.random`` ops of the ``threefry2x32`` PRNG as standard ONNX ops.

``RandomBits``, ``RandomSplit``, ``RandomFoldIn`` and ``RandomSeed`` compute what
``jax.random.bits``, ``split``, ``fold_in`` and ``key`` compute with JAX's default
(partitionable) Threefry-2x32: each output word is the Threefry-2x32 hash (Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", SC 2011; 20 rounds) of the key and a counter,
the row-major index of the element, written here with uint32 ``Add``, ``BitShift`` and
``Bitwise*`` ops, so that a runtime without bbjax's ops (onnxruntime) draws the same bits.
Key arrays are raw key data ``uint32[..., 2]`` of static shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bbjax.compiler import annotations as ann
from bbjax.errors import CompileError
from bbjax.onnx import domains

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_UINT = {8: onnx.TensorProto.UINT8, 16: onnx.TensorProto.UINT16, 32: onnx.TensorProto.UINT32,
         64: onnx.TensorProto.UINT64}


class _Builder:
    """Nodes written under one name prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self._count = prefix, [], 0

    def _name(self) -> str:
        self._count += 1
        return f"{self.prefix}{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        name = out or self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def const(self, value: np.ndarray) -> str:
        name = self._name()
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        return name

    def u32(self, value: int) -> str:
        return self.const(np.uint32(value))


def _rotate_left(b: _Builder, v: str, r: int) -> str:
    left = b.op("BitShift", v, b.u32(r), direction="LEFT")
    return b.op("BitwiseOr", left, b.op("BitShift", v, b.u32(32 - r), direction="RIGHT"))


def threefry2x32(b: _Builder, k1: str, k2: str, x0: str, x1: str) -> tuple[str, str]:
    """The Threefry-2x32 hash of counters ``(x0, x1)`` under key ``(k1, k2)`` (broadcast)."""
    ks = [k1, k2, b.op("BitwiseXor", b.op("BitwiseXor", k1, k2), b.u32(_PARITY))]
    x0, x1 = b.op("Add", x0, ks[0]), b.op("Add", x1, ks[1])
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = b.op("Add", x0, x1)
            x1 = b.op("BitwiseXor", x0, _rotate_left(b, x1, r))
        x0 = b.op("Add", x0, ks[(group + 1) % 3])
        x1 = b.op("Add", b.op("Add", x1, ks[(group + 2) % 3]), b.u32(group + 1))
    return x0, x1


def _key_words(b: _Builder, key: str, batch: Sequence[int], extra: int) -> tuple[str, str]:
    """The two words of keys ``uint32[*batch, 2]``, shaped ``[*batch, 1 x extra]``."""
    shape = b.const(np.asarray([*batch, *([1] * extra)], np.int64))
    return tuple(b.op("Reshape", b.op("Gather", key, b.const(np.int64(i)), axis=-1), shape)
                 for i in (0, 1))


def _stack(b: _Builder, words: Sequence[str], out: str) -> str:
    axes = b.const(np.asarray([-1], np.int64))
    return b.op("Concat", *(b.op("Unsqueeze", w, axes) for w in words), out=out, axis=-1)


def _counters(b: _Builder, shape: Sequence[int]) -> tuple[str, str]:
    size = int(np.prod(shape, dtype=np.int64))
    if size >= 2**32:
        raise CompileError(f"random draw of shape {list(shape)}: over 2**32 elements")
    lo = np.arange(size, dtype=np.uint32).reshape(shape)
    return b.const(np.zeros_like(lo)), b.const(lo)


def _static_shape(types: Mapping[str, onnx.ValueInfoProto], name: str,
                  node: onnx.NodeProto) -> list[int]:
    value = types.get(name)
    dims = [] if value is None else list(value.type.tensor_type.shape.dim)
    if value is None or not all(d.HasField("dim_value") for d in dims):
        raise CompileError(f"{ann.label(node)}: input {name!r} needs a static shape")
    return [d.dim_value for d in dims]


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def decompose(node: onnx.NodeProto, types: Mapping[str, onnx.ValueInfoProto],
              prefix: str) -> list[onnx.NodeProto]:
    """Standard ONNX nodes computing what the ``ai.bytesandbrains.random`` ``node`` does;
    :class:`CompileError` for another PRNG implementation, a key of symbolic shape or an
    unknown op."""
    impl = _attribute(node, "impl", b"")
    impl = impl.decode() if isinstance(impl, bytes) else impl
    if impl != "threefry2x32":
        raise CompileError(f"{ann.label(node)}: PRNG implementation {impl!r}; only "
                           "threefry2x32 has a standard-ONNX form")
    b, out = _Builder(prefix), node.output[0]
    if node.op_type == "RandomSeed":
        batch = _static_shape(types, node.input[0], node)
        k2 = b.op("Cast", node.input[0], to=onnx.TensorProto.UINT32)
        _stack(b, [b.const(np.zeros(batch, np.uint32)), k2], out)
        return b.nodes
    batch = _static_shape(types, node.input[0], node)[:-1]
    if node.op_type == "RandomFoldIn":
        k1, k2 = _key_words(b, node.input[0], batch, 0)
        msgs = b.op("Cast", node.input[1], to=onnx.TensorProto.UINT32)
        msgs = b.op("Expand", msgs, b.const(np.asarray(batch, np.int64)))
        _stack(b, threefry2x32(b, k1, k2, b.const(np.zeros(batch, np.uint32)), msgs), out)
        return b.nodes
    shape = [int(d) for d in _attribute(node, "shape", [])]
    k1, k2 = _key_words(b, node.input[0], batch, len(shape))
    bits = threefry2x32(b, k1, k2, *_counters(b, shape))
    if node.op_type == "RandomSplit":
        _stack(b, bits, out)
        return b.nodes
    if node.op_type != "RandomBits":
        raise CompileError(f"{ann.label(node)}: no standard-ONNX form of this op")
    width = int(_attribute(node, "bit_width", 32))
    if width == 64:
        hi, lo = (b.op("Cast", w, to=_UINT[64]) for w in bits)
        hi = b.op("BitShift", hi, b.const(np.uint64(32)), direction="LEFT")
        b.op("BitwiseOr", hi, lo, out=out)
    elif width == 32:
        b.op("BitwiseXor", *bits, out=out)
    else:
        mixed = b.op("BitwiseAnd", b.op("BitwiseXor", *bits), b.u32(2**width - 1))
        b.op("Cast", mixed, out=out, to=_UINT[width])
    return b.nodes


def is_random(node: onnx.NodeProto) -> bool:
    """An ``ai.bytesandbrains.random`` op."""
    return node.domain == domains.RANDOM
