"""Hypothesis strategies and byte surgery shared by the runtime tests."""

from __future__ import annotations

import struct
import zlib

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bbjax.runtime import Envelope, Fill, Limits

WIDE_LIMITS = Limits(2**32 - 1, 2**16 - 1, 2**32 - 1, 2**16 - 1, 255)  # the format's maxima

U64 = st.integers(0, 2**64 - 1)
# At most 64 code points of at most 4 UTF-8 bytes each: always within max_id_bytes = 256.
IDS = st.text(min_size=1, max_size=64)
FILLS = st.builds(Fill, IDS, U64, st.binary(max_size=64))


def envelopes(max_fills: int = 8) -> st.SearchStrategy[Envelope]:
    """Arbitrary valid envelopes with up to ``max_fills`` fills."""
    return st.builds(Envelope, IDS, st.lists(FILLS, max_size=max_fills).map(tuple), U64, U64)


DTYPES = [
    np.dtype(name)
    for name in ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
    + ["float16", "float32", "float64"]
] + [np.dtype(ml_dtypes.bfloat16)]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of every supported dtype and of shapes including 0-d and empty; the elements
    are arbitrary bit patterns (NaN payloads, infinities), bools are 0 or 1."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "b":
        return draw(hnp.arrays(dtype, shape))
    count = int(np.prod(shape))
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    return np.frombuffer(raw, dtype).reshape(shape).copy()


def reseal(data: bytes | bytearray) -> bytes:
    """``data`` minus its last 4 bytes, with the header's length and the CRC32 recomputed, so
    that a mutated encoding gets past the header and checksum checks into the field parser.
    Inputs shorter than the header come back unchanged."""
    if len(data) < 14:
        return bytes(data)
    body = bytearray(data[:-4])
    struct.pack_into("<I", body, 6, len(body) + 4)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


_INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


@st.composite
def mutations(draw: st.DrawFn, valid: bytes, resealed: bool = True) -> bytes:
    """``valid`` after 1-4 random edits (bit flips, truncations, insertions, deletions,
    overwrites of 1/2/4/8 bytes with boundary values); if ``resealed``, half of the time
    passed through :func:`reseal`."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        # Three edits in four land past the 10-byte header: an edit in it fails fast.
        first = 0 if draw(st.integers(0, 3)) == 0 else min(10, len(data))
        at = draw(st.integers(first, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "overwrite":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(_INTERESTING) | st.integers(0, 2 ** (8 * width) - 1))
            data[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
    return reseal(data) if resealed and draw(st.booleans()) else bytes(data)
