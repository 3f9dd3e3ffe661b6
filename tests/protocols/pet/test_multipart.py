"""Multipart messages: xaynet's MessageEncoder and MultipartHandler tests, the reassembler's
bounds and refusals, and encode -> parse -> reassemble round trips."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.errors import ConfigError, InvalidArgument, MultipartError, PetDecodeError
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair
from bbjax.protocols.pet.message import (
    Chunk,
    Message,
    Sum,
    Sum2,
    Tag,
    Update,
    parse_message,
    parse_payload,
    seal_message,
    verify_message_signature,
)
from bbjax.protocols.pet.multipart import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MIN_MESSAGE_SIZE,
    Reassembler,
    encode_messages,
)
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect

CONFIG = MaskConfig("Integer", "I32", "B0", "M3")  # 6 bytes per number
OVERHEAD = 136 + 48  # header and sealed box: max_message_size = max_payload_size + OVERHEAD


# -- xaynet-core testutils/multipart.rs ------------------------------------------------------

def local_seed_dict(length):
    assert (length - 4) % 112 == 0
    out = {}
    for i in range((length - 4) // 112):
        word = i.to_bytes(8, "big")
        out[(word * 4)[:32]] = (word * 10)[:80]
    return out


def mask_object(length):
    assert (length - 18) % 6 == 0
    n = (length - 18) // 6
    return MaskObject(MaskVect(CONFIG, tuple(range(n))), MaskUnit(CONFIG, 0))


def update(dict_len, mask_len):
    payload = Update(b"\x11" * 64, b"\x14" * 64, mask_object(mask_len), local_seed_dict(dict_len))
    assert len(payload.to_bytes()) == dict_len + mask_len + 128
    return payload


def participant_keys():
    return SigningKeyPair.from_seed(bytes(32))


def coordinator_keys():
    return EncryptKeyPair.from_seed(bytes(32))


def small_update():
    payload = update(80 + 32 + 4, 6 + 18)  # one seed dict entry, one weight: 268 bytes
    assert len(payload.to_bytes()) == 268
    return payload


# -- xaynet-sdk message_encoder/encoder.rs ---------------------------------------------------

def test_no_chunk():
    payload = small_update()
    [data] = encode_messages(payload, participant_keys(), coordinator_keys().public, 272 + OVERHEAD)
    parsed = parse_message(data)
    assert not parsed.is_multipart and parsed.payload == payload
    assert verify_message_signature(data)


def test_two_chunks():
    payload = small_update()
    first, second = encode_messages(payload, participant_keys(), coordinator_keys().public,
                                    200 + OVERHEAD)
    assert len(first) == 200 + 136
    chunk1 = parse_message(first).payload
    assert parse_message(first).is_multipart and parse_message(first).tag == Tag.UPDATE
    assert (chunk1.id, chunk1.last, len(chunk1.data)) == (0, False, 192)
    assert len(second) == 84 + 136
    chunk2 = parse_message(second).payload
    assert (chunk2.id, chunk2.last, len(chunk2.data)) == (1, True, 76)
    assert chunk1.message_id == chunk2.message_id
    assert parse_payload(Tag.UPDATE, chunk1.data + chunk2.data) == payload
    assert verify_message_signature(first) and verify_message_signature(second)


def test_a_payload_exactly_filling_the_room_is_not_chunked():
    payload = small_update()
    assert len(encode_messages(payload, participant_keys(), bytes(32), 268 + OVERHEAD)) == 1
    assert len(encode_messages(payload, participant_keys(), bytes(32), 267 + OVERHEAD)) == 2
    assert len(encode_messages(payload, participant_keys(), bytes(32), None)) == 1


def test_encoded_messages_fit_max_message_size_once_sealed():
    rng = random.Random(3)
    keys, coordinator = SigningKeyPair.generate(), EncryptKeyPair.generate()
    payload = update(4 + 112 * 5, 18 + 6 * 300)
    assert len(encode_messages(payload, keys, coordinator.public, DEFAULT_MAX_MESSAGE_SIZE)) == 1
    for size in [194, 200, 777, 1999]:
        messages = encode_messages(payload, keys, coordinator.public, size,
                                   message_id=rng.randrange(65536))
        sealed = [seal_message(m, coordinator.public) for m in messages]
        assert all(len(s) <= size for s in sealed)
        assert all(len(s) == size for s in sealed[:-1])  # every chunk but the last is full
        data = b"".join(parse_message(m).payload.data for m in messages)
        assert parse_payload(Tag.UPDATE, data) == payload


def test_encoder_refuses_what_xaynet_refuses():
    keys, payload = participant_keys(), small_update()
    assert MIN_MESSAGE_SIZE == 185 and DEFAULT_MAX_MESSAGE_SIZE == 3912
    # xaynet's settings accept 185..193 but its encoder then refuses (and its SDK panics)
    for size in (0, 184, 185, 193):
        with pytest.raises(ConfigError, match="max_message_size must be at least 194") as info:
            encode_messages(payload, keys, bytes(32), size)
        assert info.value.field == "max_message_size"
    assert len(encode_messages(payload, keys, bytes(32), 194)) == 134  # 2 bytes per chunk
    with pytest.raises(ConfigError, match="an integer or None"):
        encode_messages(payload, keys, bytes(32), 1000.0)
    with pytest.raises(InvalidArgument, match="only Sum, Update and Sum2"):
        encode_messages(Chunk(0, 0, True, b""), keys, bytes(32), None)
    with pytest.raises(InvalidArgument, match="keys must be a SigningKeyPair"):
        encode_messages(payload, keys.seed, bytes(32), None)
    huge = update(4, 18 + 6 * 22000)  # 132 150 bytes: 66 075 chunks of 2 bytes
    with pytest.raises(InvalidArgument, match="66075 chunks"):
        encode_messages(huge, keys, bytes(32), 194)


# -- xaynet-server services/messages/multipart/service.rs ------------------------------------

def sum_bytes():
    data = bytes(i % 32 for i in range(96))
    return data, Sum(data[:64], data[64:])


def chunks(data, message_id=1234):
    bounds = [0, 1, 3, 6, 10, 96]
    return [Chunk(i, message_id, i == 4, data[a:b])
            for i, (a, b) in enumerate(itertools.pairwise(bounds))]


def as_message(chunk, pk=bytes(32), coordinator_pk=bytes(32), tag=Tag.SUM):
    return Message(pk, coordinator_pk, chunk, is_multipart=True, tag=tag)


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [2, 0, 4, 1, 3]])
def test_message_builder_in_and_out_of_order(order):
    data, expected = sum_bytes()
    parts = chunks(data)
    reassembler = Reassembler(max_bytes=10_000, max_messages=4)
    for n, i in enumerate(order[:-1]):
        assert reassembler.add(as_message(parts[i])) is None
        assert reassembler.pending == 1
        assert reassembler.buffered_bytes == sum(8 + len(parts[j].data) for j in order[:n + 1])
    whole = reassembler.add(as_message(parts[order[-1]]))
    assert whole == Message(bytes(32), bytes(32), expected)
    assert whole.signature is None and not whole.is_multipart
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0


def test_message_handler_keeps_participants_apart():
    data, expected = sum_bytes()
    parts = chunks(data)
    pk1, pk2 = b"\x11" * 32, b"\x22" * 32
    reassembler = Reassembler(max_bytes=10_000, max_messages=4)
    for i in [2, 4, 0, 3]:
        assert reassembler.add(as_message(parts[i], pk1)) is None
        assert reassembler.add(as_message(parts[i], pk2)) is None
    assert reassembler.pending == 2
    assert reassembler.add(as_message(parts[1], pk1)) == Message(pk1, bytes(32), expected)
    assert reassembler.add(as_message(parts[1], pk2)) == Message(pk2, bytes(32), expected)
    assert reassembler.pending == 0


def test_non_multipart_messages_pass_through():
    msg = Message(bytes(32), bytes(32), sum_bytes()[1])
    assert Reassembler(0, 0).add(msg) is msg
    with pytest.raises(InvalidArgument, match="takes a Message"):
        Reassembler(0, 0).add(b"bytes")
    with pytest.raises(InvalidArgument, match="max_bytes must be a non-negative integer"):
        Reassembler(-1, 1)


# -- bounds and refusals --------------------------------------------------------------------

def test_limits_refuse_without_changing_anything():
    data, _ = sum_bytes()
    parts = chunks(data)
    reassembler = Reassembler(max_bytes=8 + 1 + 8 + 2, max_messages=1)
    reassembler.add(as_message(parts[0]))
    with pytest.raises(MultipartError, match="1 multipart messages already pending") as info:
        reassembler.add(as_message(parts[0], pk=b"\x01" * 32))
    assert info.value.reason == "messages_limit"
    reassembler.add(as_message(parts[1]))
    before = reassembler.to_bytes()
    with pytest.raises(MultipartError, match="19 of 19 bytes") as info:
        reassembler.add(as_message(parts[2]))
    assert info.value.reason == "bytes_limit" and isinstance(info.value, PetDecodeError)
    assert reassembler.to_bytes() == before and reassembler.pending == 1


def _half_built(parts, ids):
    reassembler = Reassembler(max_bytes=10_000, max_messages=4)
    for i in ids:
        reassembler.add(as_message(parts[i]))
    return reassembler


def test_inconsistent_chunks_drop_their_message():
    data, _ = sum_bytes()
    parts = chunks(data)
    other_data = Chunk(1, 1234, False, b"\xff\xff")
    early_last = Chunk(3, 1234, True, parts[3].data)
    late = Chunk(9, 1234, False, b"x")
    cases = [
        ([0, 1], as_message(other_data), "chunk 1 sent twice, differently"),
        ([0, 1], as_message(Chunk(1, 1234, True, parts[1].data)), "chunk 1 sent twice"),
        ([0, 4], as_message(late), "chunk 9 after last chunk 4"),
        ([0, 4], as_message(early_last), "chunk 3 after last chunk 4"),
        ([0, 2], as_message(Chunk(1, 1234, True, parts[1].data)), "last chunk 1 below chunk 2"),
        ([0], as_message(parts[1], tag=Tag.SUM2), "another tag or coordinator key"),
        ([0], as_message(parts[1], coordinator_pk=b"\x05" * 32), "another tag or coordinator key"),
    ]
    for ids, msg, reason in cases:
        reassembler = _half_built(parts, ids)
        reassembler.add(as_message(Chunk(0, 77, False, b"kept")))  # another message stays
        with pytest.raises(MultipartError, match=reason) as info:
            reassembler.add(msg)
        assert info.value.reason == "inconsistent"
        assert reassembler.pending == 1 and reassembler.buffered_bytes == 8 + 4


def test_a_repeated_identical_chunk_is_harmless():
    data, expected = sum_bytes()
    parts = chunks(data)
    reassembler = _half_built(parts, [0, 4, 0, 4, 1, 2])
    assert reassembler.buffered_bytes == sum(8 + len(parts[i].data) for i in [0, 4, 1, 2])
    assert reassembler.add(as_message(parts[3])).payload == expected


def test_a_whole_message_that_does_not_parse_is_dropped():
    reassembler = Reassembler(max_bytes=10_000, max_messages=4)
    reassembler.add(as_message(Chunk(0, 5, False, bytes(64))))
    with pytest.raises(PetDecodeError, match="multipart message 5: Sum payload"):
        reassembler.add(as_message(Chunk(1, 5, True, bytes(31))))
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0


def test_state_bytes_round_trip():
    data, expected = sum_bytes()
    parts = chunks(data)
    reassembler = _half_built(parts, [4, 1])
    reassembler.add(as_message(Chunk(0, 9, False, b"abc"), pk=b"\x03" * 32, tag=Tag.UPDATE))
    restored = Reassembler.from_bytes(reassembler.to_bytes())
    assert restored.to_bytes() == reassembler.to_bytes()
    assert (restored.pending, restored.buffered_bytes) == (2, reassembler.buffered_bytes)
    assert (restored.max_bytes, restored.max_messages) == (10_000, 4)
    for i in [0, 2]:
        assert restored.add(as_message(parts[i])) is None
    assert restored.add(as_message(parts[3])).payload == expected
    restored.clear()
    assert restored.pending == 0 and restored.to_bytes() == Reassembler(10_000, 4).to_bytes()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_state_bytes_parse_or_raise(data):
    try:
        Reassembler.from_bytes(data)
    except PetDecodeError:
        pass


def test_truncated_state_bytes_are_refused():
    state = _half_built(chunks(sum_bytes()[0]), [0, 3]).to_bytes()
    for cut in range(len(state)):
        with pytest.raises(PetDecodeError, match="reassembler state"):
            Reassembler.from_bytes(state[:cut])
    with pytest.raises(PetDecodeError, match="trailing bytes"):
        Reassembler.from_bytes(state + b"\x00")


# -- round trips ------------------------------------------------------------------------------

@st.composite
def payloads(draw):
    n = draw(st.integers(0, 60))
    obj = MaskObject(MaskVect(CONFIG, tuple(draw(st.lists(st.integers(0, CONFIG.order - 1),
                                                          min_size=n, max_size=n)))),
                     MaskUnit(CONFIG, draw(st.integers(0, CONFIG.order - 1))))
    sig = draw(st.binary(min_size=64, max_size=64))
    kind = draw(st.sampled_from(["sum", "update", "sum2"]))
    if kind == "sum":
        return Sum(sig, draw(st.binary(min_size=32, max_size=32)))
    if kind == "sum2":
        return Sum2(sig, obj)
    seeds = draw(st.dictionaries(st.binary(min_size=32, max_size=32),
                                 st.binary(min_size=80, max_size=80), max_size=4))
    return Update(sig, sig[::-1], obj, seeds)


KEYS = SigningKeyPair.from_seed(b"\x07" * 32)


@settings(max_examples=60, deadline=None)
@given(payloads(), st.integers(194, 700), st.randoms(use_true_random=False))
def test_encode_parse_reassemble_round_trip(payload, size, rng):
    coordinator_pk = b"\x09" * 32
    wire = encode_messages(payload, KEYS, coordinator_pk, size)
    rng.shuffle(wire)
    reassembler = Reassembler(max_bytes=100_000, max_messages=1)
    results = []
    for data in wire:
        assert verify_message_signature(data)
        results.append(reassembler.add(parse_message(data)))
    assert all(r is None for r in results[:-1])
    assert results[-1].payload == payload and results[-1].participant_pk == KEYS.public
    assert results[-1].coordinator_pk == coordinator_pk and reassembler.pending == 0
