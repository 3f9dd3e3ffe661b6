"""The declared-fields codec: published LEB128/zigzag values, round trips of every kind,
checks against a context, and total, canonical decoding of any bytes."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.errors import SnapshotError
from bbjax.runtime.state_codec import (
    TENSOR,
    TEXT,
    Blob,
    Int,
    Map,
    Member,
    Optional,
    Record,
    Seq,
    Tagged,
    Writer,
    encoded_as,
    from_bytes,
    to_bytes,
)
from tests.runtime.strategies import arrays, mutations

MAGIC, VERSION = b"TOY!", 7


@dataclass(frozen=True)
class Pair:
    a: int
    b: str


@dataclass(frozen=True)
class Flag:
    on: int


@dataclass(frozen=True)
class Ctx:
    names: tuple[str, ...] = ("x", "y")
    max_items: int = 4
    max_blob: int = 16
    table_keys: tuple[str, ...] | None = None


@dataclass(frozen=True, eq=False)
class Toy:
    n: int = field(metadata=encoded_as(Int(-2**70, 2**70)))
    u: int = field(metadata=encoded_as(Int(0, 2**64 - 1)))
    name: str = field(metadata=encoded_as(Member(TEXT, lambda c: c.names, "the names")))
    blob: bytes = field(metadata=encoded_as(Blob(lambda c: (c.max_blob, "max_blob"))))
    array: Any = field(metadata=encoded_as(TENSOR))
    maybe: str | None = field(metadata=encoded_as(Optional(TEXT)))
    items: tuple = field(metadata=encoded_as(
        Seq(Int(0, 255), limit=lambda c: (c.max_items, "max_items"))))
    table: dict = field(metadata=encoded_as(Map(TEXT, Int(-5, 5), keys=lambda c: c.table_keys)))
    pair: Pair = field(metadata=encoded_as(Record(Pair, a=Int(0, 9), b=TEXT)))
    either: Any = field(metadata=encoded_as(Tagged(pair=Record(Pair, a=Int(0, 9), b=TEXT),
                                                   flag=Record(Flag, on=Int(0, 1)))))


def toy_bytes(toy: Toy) -> bytes:
    return to_bytes(toy, magic=MAGIC, version=VERSION, where="toy")


def read_toy(data: Any, ctx: Ctx = Ctx()) -> Toy:
    return from_bytes(Toy, data, ctx, magic=MAGIC, version=VERSION, where="toy")


def sample(**changes: Any) -> Toy:
    values = {"n": -3, "u": 2**64 - 1, "name": "x", "blob": b"\x00\xff",
              "array": np.arange(6.0).reshape(2, 3), "maybe": None, "items": (1, 255),
              "table": {"k": -5, "j": 5}, "pair": Pair(9, "é"), "either": Flag(1)}
    return Toy(**{**values, **changes})


def reseal(data: bytes) -> bytes:
    """``data`` with its trailing CRC32 recomputed (so edits reach the field decoder)."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4])) if len(data) >= 4 else data


def same(a: Toy, b: Toy) -> bool:
    """Field by field equal, arrays bit for bit (NaN payloads included)."""
    def key(toy: Toy, name: str) -> Any:
        value = getattr(toy, name)
        return (value.dtype, value.shape, value.tobytes()) if name == "array" else value
    return all(key(a, f.name) == key(b, f.name) for f in dataclasses.fields(Toy))


# -- the primitive encodings --------------------------------------------------------------


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (624485, "e58e26"),
    (2**64 - 1, "ffffffffffffffffff01"),
])
def test_unsigned_integers_are_leb128(value, encoded):
    out = Writer()
    out.uint(value)
    assert out.getvalue().hex() == encoded  # the LEB128 examples of DWARF and Wikipedia


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (2147483647, "feffffff0f"),
    (-2147483648, "ffffffff0f"),
])
def test_integers_are_zigzag_leb128(value, encoded):
    out = Writer()
    Int(-2**40, 2**40).write(out, value, "v")
    assert out.getvalue().hex() == encoded  # protobuf's sint32 encodings


def test_the_layout_is_magic_format_fields_and_crc():
    data = toy_bytes(sample())
    assert data[:6] == MAGIC + struct.pack("<H", VERSION)
    assert data[6:8] == b"\x01n" and data[8] == 5  # the name "n", then zigzag(-3)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


# -- round trips ----------------------------------------------------------------------------

PAIRS = st.builds(Pair, st.integers(0, 9), st.text(max_size=6))
TOYS = st.builds(
    Toy, n=st.integers(-2**70, 2**70), u=st.integers(0, 2**64 - 1), name=st.sampled_from("xy"),
    blob=st.binary(max_size=16), array=arrays(), maybe=st.none() | st.text(max_size=5),
    items=st.lists(st.integers(0, 255), max_size=4).map(tuple),
    table=st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=4),
    pair=PAIRS, either=PAIRS | st.builds(Flag, st.integers(0, 1)))


@settings(max_examples=200, deadline=None)
@given(TOYS)
def test_every_value_reads_back_as_itself(toy):
    assert same(read_toy(toy_bytes(toy)), toy)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data(), TOYS)
def test_any_mutated_bytes_read_as_a_value_with_exactly_those_bytes_or_fail(data, toy):
    edited = data.draw(mutations(toy_bytes(toy), resealed=False))
    if data.draw(st.booleans()):
        edited = reseal(edited)
    try:
        value = read_toy(edited)
    except SnapshotError:
        return
    assert toy_bytes(value) == edited  # canonical: nothing else decodes to a value


@FUZZ
@given(st.binary(max_size=80))
def test_any_bytes_are_a_value_or_a_snapshot_error(raw):
    for data in (raw, reseal(MAGIC + struct.pack("<H", VERSION) + raw + bytes(4))):
        try:
            assert toy_bytes(read_toy(data)) == data
        except SnapshotError:
            pass


# -- what the reader refuses ----------------------------------------------------------------


def _refused(data: Any, match: str, ctx: Ctx = Ctx()) -> None:
    with pytest.raises(SnapshotError, match=match):
        read_toy(data, ctx)


def test_the_header_checksum_and_trailing_bytes_are_checked():
    data = toy_bytes(sample())
    _refused("text", "expected bytes, got str")
    _refused(data[:9], "shorter than the 10-byte header")
    _refused(b"NOPE" + data[4:], r"starts with b'NOPE', not b'TOY!'")
    _refused(reseal(data[:4] + struct.pack("<H", 6) + data[6:]), "format 6, this version reads 7")
    _refused(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "stored CRC32")
    _refused(reseal(data[:-4] + b"\x00" + data[-4:]), "1 bytes after the last field")
    released = memoryview(bytearray(data))
    released.release()
    _refused(released, "unreadable buffer")


def _field(name: str, data: bytes) -> int:
    """The offset of field ``name``'s value in toy bytes ``data``."""
    at = data.index(bytes([len(name)]) + name.encode(), 6)
    return at + 1 + len(name)


def _edit(data: bytes, name: str, new: bytes, old_size: int) -> bytes:
    at = _field(name, data)
    return reseal(data[:at] + new + data[at + old_size:])


def test_integers_must_be_minimal_and_in_range():
    data = toy_bytes(sample(u=5))  # zigzag: 10, one byte
    _refused(_edit(data, "u", b"\x8a\x00", 1), "u: an integer with a redundant last byte")
    _refused(_edit(data, "u", b"\xff" * 19, 1), "longer than 19 bytes")
    _refused(_edit(data, "u", b"\x01", 1), r"toy.u: expected an integer in \[0, .*got -1")
    _refused(_edit(data, "u", b"\x80" * 9 + b"\x04", 1), r"toy.u: .*got 18446744073709551616")
    small = toy_bytes(sample(pair=Pair(9, "")))
    at = _field("pair", small)
    _refused(reseal(small[:at] + b"\x14" + small[at + 1:]), r"toy.pair.a: .*\[0, 9\], got 10")


def test_text_must_be_utf8_and_the_sets_of_the_context():
    data = toy_bytes(sample(pair=Pair(1, "ab")))
    at = _field("pair", data) + 1  # after a: the text's length, then its bytes
    _refused(reseal(data[:at + 1] + b"\xff" + data[at + 2:]), "toy.pair.b: not UTF-8")
    _refused(toy_bytes(sample(name="y")), r"toy.name: 'y' is not one of the names \['x'\]",
             Ctx(names=("x",)))


def test_sizes_counts_and_keys_are_checked_against_the_context():
    _refused(toy_bytes(sample(blob=b"12345")), "toy.blob: 5 bytes, over max_blob = 4",
             Ctx(max_blob=4))
    _refused(toy_bytes(sample(items=(1, 2, 3))), "toy.items: 3 items, over max_items = 2",
             Ctx(max_items=2))
    _refused(toy_bytes(sample(table={"a": 1})), r"toy.table: key 'a' is not one of",
             Ctx(table_keys=("b",)))
    _refused(toy_bytes(sample(table={"b": 1})), r"toy.table: keys \['c'\] .* missing",
             Ctx(table_keys=("b", "c")))


class _Pairs(list):
    """Key-value pairs that a Map writes as they are, repeats included."""

    def items(self):
        return list(self)


def test_a_repeated_key_a_bad_flag_or_variant_and_a_short_count_are_refused():
    _refused(toy_bytes(sample(table=_Pairs([("k", 1), ("k", 2)]))), "key 'k' appears twice")
    data = toy_bytes(sample(maybe="hi"))
    _refused(_edit(data, "maybe", b"\x02", 1), "toy.maybe: presence byte 2")
    data = toy_bytes(sample(either=Flag(0)))
    _refused(_edit(data, "either", b"\x04flat", 5), "toy.either: variant 'flat'")
    data = toy_bytes(sample(items=()))
    _refused(_edit(data, "items", b"\x7f", 1), "toy.items: 127 items declared")


def test_a_tensor_is_checked_like_the_wire_format():
    data = toy_bytes(sample(array=np.zeros(2, np.int8)))
    at = _field("array", data)
    _refused(reseal(data[:at + 1] + b"\x63" + data[at + 2:]), "toy.array: .*unknown dtype code 99")


def test_fields_come_in_declaration_order_under_their_names():
    @dataclass(frozen=True)
    class Swapped:
        u: int = field(metadata=encoded_as(Int(0, 2**64 - 1)))
        n: int = field(metadata=encoded_as(Int(-2**70, 2**70)))

    data = to_bytes(Swapped(1, 2), magic=MAGIC, version=VERSION, where="toy")
    _refused(data, "toy: expected field 'n' next, got 'u'")


# -- what the writer refuses ----------------------------------------------------------------


@pytest.mark.parametrize(("changes", "match"), [
    ({"u": -1}, r"toy.u: cannot be saved: expected an integer in \[0"),
    ({"u": True}, "toy.u: cannot be saved"),
    ({"name": b"x"}, "toy.name: cannot be saved: expected a string"),
    ({"name": "\ud800"}, "toy.name: cannot be saved"),
    ({"blob": "x"}, "toy.blob: cannot be saved: expected bytes"),
    ({"array": np.zeros(2, np.complex64)}, "toy.array: cannot be saved: .*unsupported dtype"),
    ({"pair": Flag(1)}, "toy.pair: cannot be saved: expected a Pair, got Flag"),
    ({"either": 3}, r"toy.either: cannot be saved: expected one of \['pair', 'flag'\]"),
    ({"items": (1, 256)}, r"toy.items\[1\]: cannot be saved"),
])
def test_a_value_a_kind_cannot_hold_is_a_snapshot_error_naming_the_field(changes, match):
    with pytest.raises(SnapshotError, match=match):
        toy_bytes(sample(**changes))


def test_every_field_must_declare_a_kind():
    @dataclass(frozen=True)
    class Loose:
        n: int = field(metadata=encoded_as(Int(0, 1)))
        free: int = 0

    with pytest.raises(TypeError, match=r"\['free'\] declare no Kind"):
        to_bytes(Loose(0), magic=MAGIC, version=VERSION, where="loose")
