"""Hypothesis strategies and byte surgery shared by the runtime tests."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bbjax.errors import TensorDecodeError
from bbjax.runtime import (
    Envelope,
    Fill,
    Limits,
    decode_tensor,
    encode_tensor,
    type_hash,
)

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


# -- lying envelopes ----------------------------------------------------------------------

BAD_SOURCES = ["²", "١", "01", "-1", "+1", " 1", "1 ", "0x1", "1.0", "abc", "2147483648",
               "99999999999"]  # not a canonical ASCII peer id in [0, 2**31 - 1]
BAD_INDICES = ["01", "00", "²", "١", "", "x", "-0", "+1", "1.0", " 1", "999999"]


def retyped(array: np.ndarray, dtype: np.dtype | None = None,
            shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Zeros of ``array``'s dtype and shape unless given."""
    return np.zeros(array.shape if shape is None else shape,
                    array.dtype if dtype is None else dtype)


def fill_of(site: str, array: np.ndarray, hashed: np.ndarray | None = None) -> Fill:
    """A fill carrying ``array`` with the type hash of ``hashed`` (default: ``array``'s)."""
    hashed = array if hashed is None else hashed
    return Fill(site, type_hash(hashed.dtype, hashed.shape), encode_tensor(array))


@st.composite
def lying_fills(draw: st.DrawFn, fills: tuple[Fill, ...]) -> tuple[tuple[Fill, ...], set[str]]:
    """``fills`` (one valid message of at least two arrays) after one value lie on each of
    some fills and at most one structural lie, at least one lie in all; and the Rejected
    kinds a node may answer with (a single check decides, so one of the lies' kinds)."""
    port = fills[0].site.rpartition("/")[0]
    out, kinds = list(fills), set()
    lied = draw(st.sets(st.integers(0, len(fills) - 1)))
    structural = draw(st.sampled_from([None, "drop", "extra", "repeat"]))
    if not lied and structural is None:
        structural = "repeat"
    for i in sorted(lied):
        fill = out[i]
        array = decode_tensor(fill.payload)
        lie = draw(st.sampled_from(["shape", "dtype", "hash", "retyped", "payload", "index",
                                    "port"]))
        if lie == "shape":
            shape = draw(SHAPES)
            shape = (*shape, 2) if shape == array.shape else shape
            out[i] = Fill(fill.site, fill.type_hash, encode_tensor(retyped(array, shape=shape)))
            kinds.add("shape_mismatch")
        elif lie == "dtype":
            dtype = draw(st.sampled_from([d for d in DTYPES if d != array.dtype]))
            out[i] = Fill(fill.site, fill.type_hash, encode_tensor(retyped(array, dtype)))
            kinds.add("type_mismatch")
        elif lie == "hash":
            out[i] = Fill(fill.site, draw(U64.filter(lambda h, f=fill: h != f.type_hash)),
                          fill.payload)
            kinds.add("type_mismatch")
        elif lie == "retyped":  # hash and payload agree, on another type
            other = draw(arrays())
            if (other.dtype, other.shape) == (array.dtype, array.shape):
                other = retyped(other, shape=(*other.shape, 2))
            out[i] = fill_of(fill.site, other)
            kinds.add("type_mismatch")
        elif lie == "payload":  # bytes that are not a tensor of the port's type
            payload = draw(st.binary(max_size=80).filter(lambda b, a=array: not _is_tensor_like(b, a)))
            out[i] = Fill(fill.site, fill.type_hash, payload)
            kinds |= {"malformed", "type_mismatch", "shape_mismatch"}
        elif lie == "index":
            out[i] = Fill(f"{port}/{draw(st.sampled_from(BAD_INDICES))}", fill.type_hash,
                          fill.payload)
            kinds.add("malformed")
        else:
            site = draw(st.sampled_from(["nowhere/0", port, f"{port}x/0", f"x/{port}/0"]))
            out[i] = Fill(site, fill.type_hash, fill.payload)
            kinds.add("unexpected_port")
    if structural == "drop":
        del out[draw(st.integers(0, len(out) - 1))]
        kinds.add("count_mismatch")
    elif structural == "extra":
        out.append(Fill(f"{port}/{len(fills)}", fills[0].type_hash, fills[0].payload))
        kinds.add("count_mismatch")
    elif structural == "repeat":
        out.append(out[draw(st.integers(0, len(out) - 1))])
        kinds.add("duplicate_fill")
    if draw(st.booleans()):
        out = draw(st.permutations(out))
    return tuple(out), kinds


def _is_tensor_like(payload: bytes, array: np.ndarray) -> bool:
    """Whether ``payload`` decodes to a tensor of ``array``'s dtype and shape."""
    try:
        decoded = decode_tensor(payload)
    except TensorDecodeError:
        return False
    return (decoded.dtype, decoded.shape) == (array.dtype, array.shape)


# -- snapshot archives --------------------------------------------------------------------


def members(data: bytes) -> dict[str, bytes]:
    """The members of a zip archive, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(contents: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> bytes:
    """A valid zip archive of ``contents`` (CRCs and sizes computed afresh)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compress) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return buffer.getvalue()
