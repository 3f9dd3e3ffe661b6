"""Compression codecs for updates on the wire: b-bit quantization (uniform and
stochastic), top-k sparsification with error feedback, and random Hadamard rotation.

Every codec is a :class:`Codec` ``(init, encode, decode)`` whose ``encode`` returns the
payload and its exact size in bytes (the wire side, used by nodes); :func:`compress` is a
codec on the ``bbjax.algorithms`` contract (encode then decode each client's update); see
``docs/privacy_and_compression.md``.
"""

from bbjax.compression.codec import Codec, payload_bytes

from bbjax.errors import CompressionError
from bbjax.compression.hadamard import RotatedPayload, fwht, hadamard_rotation
from bbjax.compression.quantization import (
    QuantizedArray,
    pack_bits,
    stochastic_quantization,
    uniform_quantization,
    unpack_bits,
)
from bbjax.compression.roundtrip import compress
from bbjax.compression.topk import SparseTree, top_k

__all__ = [
    "Codec",
    "CompressionError",
    "QuantizedArray",
    "RotatedPayload",
    "SparseTree",
    "compress",
    "fwht",
    "hadamard_rotation",
    "pack_bits",
    "payload_bytes",
    "stochastic_quantization",
    "top_k",
    "uniform_quantization",
    "unpack_bits",
]
