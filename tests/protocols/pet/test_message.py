"""PET messages: xaynet's serialization fixtures (xaynet-core testutils/messages.rs and the
payload tests), signatures, construction errors, and hypothesis fuzzing of the parser."""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.errors import InvalidArgument, PetCryptoError, PetDecodeError
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair
from bbjax.protocols.pet.message import (
    HEADER_LENGTH,
    Chunk,
    Message,
    Sum,
    Sum2,
    Tag,
    Update,
    open_message,
    parse_message,
    parse_payload,
    seal_message,
    verify_message_signature,
)
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect
from bbjax.protocols.pet.round_params import ROUND_PARAMETERS_LENGTH, RoundParameters

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- xaynet-core testutils/messages.rs ------------------------------------------------------

SIGNATURE, PARTICIPANT_PK, COORDINATOR_PK = b"\x1a" * 64, b"\xbb" * 32, b"\xcc" * 32
SUM_SIGNATURE, UPDATE_SIGNATURE, EPHM_PK = b"\x11" * 64, b"\x14" * 64, b"\x22" * 32
# Integer / I32 / B0 / M3: order 20_000_000_000_001, 6 bytes per number
CONFIG = MaskConfig("Integer", "I32", "B0", "M3")
CONFIG_BYTES = bytes([0x00, 0x02, 0x00, 0x03])


def mask_object():
    obj = MaskObject(MaskVect(CONFIG, (1, 2, 3, 4)), MaskUnit(CONFIG, 1))
    data = (CONFIG_BYTES + bytes([0, 0, 0, 4])
            + b"".join(bytes([v, 0, 0, 0, 0, 0]) for v in (1, 2, 3, 4))
            + CONFIG_BYTES + bytes([1, 0, 0, 0, 0, 0]))
    return obj, data


def local_seed_dict():
    data = bytes([0x00, 0x00, 0x00, 0xE4]) + b"\x55" * 32 + b"\x66" * 80 + b"\x77" * 32 + b"\x88" * 80
    return {b"\x55" * 32: b"\x66" * 80, b"\x77" * 32: b"\x88" * 80}, data


def sum_payload():
    return Sum(SUM_SIGNATURE, EPHM_PK), SUM_SIGNATURE + EPHM_PK


def update_payload():
    (obj, obj_bytes), (seeds, seed_bytes) = mask_object(), local_seed_dict()
    payload = Update(SUM_SIGNATURE, UPDATE_SIGNATURE, obj, seeds)
    return payload, SUM_SIGNATURE + UPDATE_SIGNATURE + obj_bytes + seed_bytes


def sum2_payload():
    obj, obj_bytes = mask_object()
    return Sum2(SUM_SIGNATURE, obj), SUM_SIGNATURE + obj_bytes


def message(make_payload):
    payload, payload_bytes = make_payload()
    data = (SIGNATURE + PARTICIPANT_PK + COORDINATOR_PK
            + (len(payload_bytes) + 136).to_bytes(4, "big") + bytes([payload.tag, 0, 0, 0])
            + payload_bytes)
    return Message(PARTICIPANT_PK, COORDINATOR_PK, payload, signature=SIGNATURE), data


PAYLOADS = [sum_payload, update_payload, sum2_payload]


def test_fixture_lengths():
    assert len(mask_object()[1]) == 42 and len(sum2_payload()[1]) == 106
    assert HEADER_LENGTH == 136 and len(message(sum_payload)[1]) == 136 + 96


@pytest.mark.parametrize("make_payload", PAYLOADS)
def test_payload_fixtures_encode_and_decode(make_payload):
    payload, data = make_payload()
    assert payload.to_bytes() == data
    assert parse_payload(payload.tag, data) == payload


@pytest.mark.parametrize("make_payload", PAYLOADS)
def test_message_fixtures_encode_and_decode(make_payload):
    msg, data = message(make_payload)
    assert msg.to_bytes() == data
    parsed = parse_message(data)
    assert parsed == msg and parsed.signature == SIGNATURE and parsed.tag == msg.payload.tag
    assert data[132] == int(msg.tag) and data[128:132] == len(data).to_bytes(4, "big")


def test_chunk_fixture():
    # xaynet-core message/payload/chunk.rs
    data = bytes([0xDD, 0xDD, 0xEE, 0xEE, 0x01, 0, 0, 0]) + b"\xff" * 10
    chunk = Chunk(0xDDDD, 0xEEEE, True, b"\xff" * 10)
    assert chunk.to_bytes() == data
    msg = Message(PARTICIPANT_PK, COORDINATOR_PK, chunk, is_multipart=True, tag=Tag.UPDATE,
                  signature=SIGNATURE)
    wire = msg.to_bytes()
    assert wire[132:136] == bytes([2, 1, 0, 0])  # tag Update, MULTIPART, reserved
    assert parse_message(wire) == msg


def test_parse_payload_refuses_a_bad_tag_or_non_bytes():
    with pytest.raises(InvalidArgument, match="tag must be a Tag, got 4"):
        parse_payload(4, sum_payload()[1])
    with pytest.raises(PetDecodeError, match="a payload must be bytes"):
        parse_payload(Tag.SUM, None)


def test_seed_dict_with_a_truncated_entry_is_refused():
    # update.rs decode_invalid_seed_dict: length 0xe3 cuts the last entry
    _, data = update_payload()
    bad = bytearray(data)
    bad[64 * 2 + 42 + 3] = 0xE3
    with pytest.raises(PetDecodeError, match="local seed dict length 227"):
        parse_payload(Tag.UPDATE, bytes(bad))
    # traits.rs LengthValueBuffer: a length below its own 4 bytes, a value cut short
    start = 64 * 2 + 42
    with pytest.raises(PetDecodeError, match="local seed dict length 3 is not"):
        parse_payload(Tag.UPDATE, data[:start] + bytes([0, 0, 0, 3]))
    with pytest.raises(PetDecodeError, match="local seed dict: needs 228 bytes"):
        parse_payload(Tag.UPDATE, data[:-1])
    with pytest.raises(PetDecodeError, match="local seed dict length: needs 4 bytes"):
        parse_payload(Tag.UPDATE, data[:start + 3])


def test_seed_dict_keeps_its_order_and_refuses_duplicates():
    obj, _ = mask_object()
    rng = random.Random(1)
    seeds = {rng.randbytes(32): rng.randbytes(80) for _ in range(6)}
    update = Update(SUM_SIGNATURE, UPDATE_SIGNATURE, obj, seeds)
    data = update.to_bytes()
    start = 128 + 42 + 4
    keys = [data[i:i + 32] for i in range(start, len(data), 112)]
    assert keys == list(seeds) != sorted(seeds)
    parsed = parse_payload(Tag.UPDATE, data)
    assert parsed == update and list(parsed.local_seed_dict) == keys
    duplicated = data[:start - 4] + struct.pack(">I", 4 + 224) + data[start:start + 112] * 2
    with pytest.raises(PetDecodeError, match="duplicated key"):
        parse_payload(Tag.UPDATE, duplicated)
    empty = Update(SUM_SIGNATURE, UPDATE_SIGNATURE, obj, {})
    assert empty.to_bytes().endswith(b"\x00\x00\x00\x04")
    assert parse_payload(Tag.UPDATE, empty.to_bytes()) == empty


def test_parser_is_strict_where_xaynet_is_loose():
    _, data = message(sum_payload)
    with pytest.raises(PetDecodeError, match="length field says 232, the buffer is 233"):
        parse_message(data + b"\x00")
    for index, value, reason in [(133, 0x02, "flags"), (134, 0x01, "reserved"),
                                 (132, 0x04, "unknown message tag 4"), (132, 0x00, "tag 0")]:
        bad = bytearray(data)
        bad[index] = value
        with pytest.raises(PetDecodeError, match=reason):
            parse_message(bytes(bad))
    # a Sum payload with a trailing byte (length field adjusted) is refused too
    longer = data[:128] + (len(data) + 1).to_bytes(4, "big") + data[132:] + b"\x00"
    with pytest.raises(PetDecodeError, match="Sum payload: 1 trailing bytes"):
        parse_message(longer)


def test_parse_message_names_what_is_wrong():
    with pytest.raises(PetDecodeError, match="must be bytes"):
        parse_message("not bytes")
    with pytest.raises(PetDecodeError, match="message header: needs 136 bytes"):
        parse_message(bytes(100))
    _, data = message(update_payload)
    with pytest.raises(PetDecodeError, match="Update masked model"):
        parse_message(data[:128] + (136 + 130).to_bytes(4, "big") + data[132:136 + 130])
    chunk_header = data[:128] + (136 + 7).to_bytes(4, "big") + bytes([2, 1, 0, 0]) + bytes(7)
    with pytest.raises(PetDecodeError, match="Chunk header"):
        parse_message(chunk_header)
    with pytest.raises(PetDecodeError, match="Chunk reserved"):
        parse_message(chunk_header[:128] + (136 + 8).to_bytes(4, "big")
                      + chunk_header[132:136] + bytes([0, 0, 0, 0, 0, 0, 0, 9]))


def _keys(i=0):
    return SigningKeyPair.from_seed(bytes([i]) * 32)


def test_signed_messages_verify_and_any_change_breaks_them():
    keys, coordinator = _keys(1), EncryptKeyPair.from_seed(bytes(32))
    rng = random.Random(2)
    for make_payload in PAYLOADS:
        payload, _ = make_payload()
        data = Message(keys.public, coordinator.public, payload).to_bytes(keys)
        assert verify_message_signature(data)
        assert parse_message(data).signature == data[:64]
        for i in rng.sample(range(len(data)), 12):
            bad = bytearray(data)
            bad[i] ^= 1 << rng.randrange(8)
            if i in range(128, 132):  # the length field: not a message any more
                with pytest.raises(PetDecodeError):
                    verify_message_signature(bytes(bad))
            else:
                assert not verify_message_signature(bytes(bad))
    with pytest.raises(PetDecodeError, match="message header"):
        verify_message_signature(b"short")


def test_to_bytes_signs_only_for_its_participant():
    keys, payload = _keys(1), sum_payload()[0]
    msg = Message(keys.public, COORDINATOR_PK, payload)
    with pytest.raises(InvalidArgument, match="needs signing_keys"):
        msg.to_bytes()
    with pytest.raises(PetCryptoError, match="not the keys of the message's participant_pk"):
        msg.to_bytes(_keys(2))
    data = msg.to_bytes(keys)
    # a signature the message already carries is used as is
    assert Message(keys.public, COORDINATOR_PK, payload, signature=data[:64]).to_bytes() == data


def test_constructors_refuse_bad_fields():
    obj, _ = mask_object()
    with pytest.raises(PetCryptoError, match="sum_signature must be 64 bytes, got 63"):
        Sum(SUM_SIGNATURE[:63], EPHM_PK)
    with pytest.raises(PetCryptoError, match="ephm_pk must be 32 bytes"):
        Sum(SUM_SIGNATURE, None)
    with pytest.raises(PetCryptoError, match="local_seed_dict value must be 80 bytes, got 79"):
        Update(SUM_SIGNATURE, UPDATE_SIGNATURE, obj, {EPHM_PK: bytes(79)})
    with pytest.raises(InvalidArgument, match="masked_model must be a MaskObject"):
        Update(SUM_SIGNATURE, UPDATE_SIGNATURE, b"model", {})
    with pytest.raises(InvalidArgument, match="model_mask must be a MaskObject"):
        Sum2(SUM_SIGNATURE, None)
    with pytest.raises(InvalidArgument, match="Chunk.id must be an integer in"):
        Chunk(65536, 0, False, b"")
    with pytest.raises(InvalidArgument, match="Chunk.last must be a bool"):
        Chunk(0, 0, 1, b"")
    chunk = Chunk(0, 0, True, b"x")
    with pytest.raises(InvalidArgument, match="needs the tag"):
        Message(PARTICIPANT_PK, COORDINATOR_PK, chunk, is_multipart=True)
    with pytest.raises(InvalidArgument, match="is_multipart must be True exactly"):
        Message(PARTICIPANT_PK, COORDINATOR_PK, chunk, tag=Tag.SUM)
    with pytest.raises(InvalidArgument, match="is_multipart must be True exactly"):
        Message(PARTICIPANT_PK, COORDINATOR_PK, sum_payload()[0], is_multipart=True)
    with pytest.raises(InvalidArgument, match="does not match a Sum payload"):
        Message(PARTICIPANT_PK, COORDINATOR_PK, sum_payload()[0], tag=Tag.SUM2)
    with pytest.raises(InvalidArgument, match="tag must be a Tag"):
        Message(PARTICIPANT_PK, COORDINATOR_PK, chunk, is_multipart=True, tag=7)
    with pytest.raises(PetCryptoError, match="coordinator_pk must be 32 bytes"):
        Message(PARTICIPANT_PK, COORDINATOR_PK * 2, sum_payload()[0])


def test_sealed_messages_open_only_with_the_round_key():
    keys, coordinator, other = _keys(3), EncryptKeyPair.generate(), EncryptKeyPair.generate()
    data = Message(keys.public, coordinator.public, sum_payload()[0]).to_bytes(keys)
    sealed = seal_message(data, coordinator.public)
    assert len(sealed) == len(data) + 48 and open_message(sealed, coordinator) == data
    with pytest.raises(PetCryptoError):
        open_message(sealed, other)


# -- fuzzing --------------------------------------------------------------------------------

CONFIGS = [MaskConfig(g, d, b, m) for g, d, b, m in [
    ("Prime", "F32", "B0", "M3"), ("Integer", "I32", "B0", "M3"), ("Power2", "F64", "Bmax", "M12"),
    ("Prime", "I64", "B6", "M6"),
]]


@st.composite
def mask_objects(draw):
    vect_config, unit_config = draw(st.sampled_from(CONFIGS)), draw(st.sampled_from(CONFIGS))
    n = draw(st.integers(0, 6))
    data = tuple(draw(st.integers(0, vect_config.order - 1)) for _ in range(n))
    unit = draw(st.integers(0, unit_config.order - 1))
    return MaskObject(MaskVect(vect_config, data), MaskUnit(unit_config, unit))


sigs = st.binary(min_size=64, max_size=64)
keys32 = st.binary(min_size=32, max_size=32)
payloads = st.one_of(
    st.builds(Sum, sigs, keys32),
    st.builds(Update, sigs, sigs, mask_objects(),
              st.dictionaries(keys32, st.binary(min_size=80, max_size=80), max_size=3)),
    st.builds(Sum2, sigs, mask_objects()),
)


@st.composite
def messages(draw):
    payload = draw(payloads)
    if draw(st.booleans()):
        chunk = Chunk(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), draw(st.booleans()),
                      draw(st.binary(max_size=40)))
        return Message(draw(keys32), draw(keys32), chunk, is_multipart=True, tag=payload.tag,
                       signature=draw(sigs))
    return Message(draw(keys32), draw(keys32), payload, signature=draw(sigs))


def _parses_or_refuses(data):
    try:
        msg = parse_message(data)
    except PetDecodeError:
        return None
    assert msg.to_bytes() == data  # whatever parses is canonical
    return msg


@FUZZ
@given(messages())
def test_random_messages_round_trip(msg):
    data = msg.to_bytes()
    assert parse_message(data) == msg


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_parse_or_raise_pet_decode_error(data):
    _parses_or_refuses(data)


@FUZZ
@given(st.sampled_from([0, 1, 2, 3]), st.integers(0, 3), st.binary(max_size=300))
def test_random_payloads_behind_a_valid_header_parse_or_raise(tag, flags, body):
    header = bytes(64) + PARTICIPANT_PK + COORDINATOR_PK + struct.pack(">IBB2x", 136 + len(body),
                                                                      tag, flags)
    _parses_or_refuses(header + body)


@FUZZ
@given(messages(), st.data())
def test_truncations_and_mutations_parse_or_raise(msg, data):
    wire = msg.to_bytes()
    cut = data.draw(st.integers(0, len(wire) - 1))
    assert _parses_or_refuses(wire[:cut]) is None
    index = data.draw(st.integers(0, len(wire) - 1))
    mutated = bytearray(wire)
    mutated[index] ^= data.draw(st.integers(1, 255))
    _parses_or_refuses(bytes(mutated))
    # the same with the length field repaired, so the payload parser sees the damage
    shorter = wire[:cut]
    if cut >= HEADER_LENGTH:
        _parses_or_refuses(shorter[:128] + cut.to_bytes(4, "big") + shorter[132:])


@pytest.mark.parametrize("make_payload", PAYLOADS)
def test_every_single_byte_mutation_and_truncation_of_the_fixtures(make_payload):
    _, wire = message(make_payload)
    for index in range(len(wire)):
        for flip in (0x01, 0x80, 0xFF):
            mutated = bytearray(wire)
            mutated[index] ^= flip
            _parses_or_refuses(bytes(mutated))
    for cut in range(HEADER_LENGTH, len(wire)):
        repaired = wire[:128] + cut.to_bytes(4, "big") + wire[132:cut]
        assert _parses_or_refuses(repaired) is None


def test_fuzz_helper_can_fail():
    valid = message(sum_payload)[1]
    assert _parses_or_refuses(valid) == message(sum_payload)[0]
    assert _parses_or_refuses(valid[:-1]) is None


def test_mask_config_pair_fixture_is_the_pair_of_one_config():
    assert MaskConfigPair.from_config(CONFIG) == mask_object()[0].config


# -- round parameters ------------------------------------------------------------------------

def _round_params(**changes):
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
    fields = {"pk": bytes(range(32)), "sum": 0.5, "update": 0.9, "seed": bytes(range(32, 64)),
              "mask_config": pair, "model_length": 4}
    return RoundParameters(**(fields | changes))


def test_round_parameters_layout():
    params = _round_params(mask_config=MaskConfigPair(CONFIG, MaskConfig("Power2", "F64", "B2", "M6")))
    data = params.to_bytes()
    assert len(data) == ROUND_PARAMETERS_LENGTH == 92
    assert data[:32] == params.pk and data[48:80] == params.seed
    assert struct.unpack("<dd", data[32:48]) == (0.5, 0.9)
    assert data[80:84] == CONFIG_BYTES and data[84:88] == bytes([2, 1, 2, 6])
    assert data[88:] == bytes([0, 0, 0, 4])
    assert RoundParameters.from_bytes(data) == params


@FUZZ
@given(st.binary(min_size=32, max_size=32), st.floats(allow_nan=False, allow_infinity=False),
       st.floats(allow_nan=False, allow_infinity=False), st.binary(min_size=32, max_size=32),
       st.sampled_from(CONFIGS), st.sampled_from(CONFIGS), st.integers(0, 2**32 - 1))
def test_round_parameters_round_trip(pk, sum_prob, update_prob, seed, vect, unit, length):
    params = RoundParameters(pk, sum_prob, update_prob, seed, MaskConfigPair(vect, unit), length)
    assert RoundParameters.from_bytes(params.to_bytes()) == params


@FUZZ
@given(st.binary(min_size=92, max_size=92))
def test_round_parameters_parse_or_raise(data):
    try:
        params = RoundParameters.from_bytes(data)
    except PetDecodeError:
        return
    assert params.to_bytes() == data


def test_round_parameters_refuse_bad_values():
    data = _round_params().to_bytes()
    with pytest.raises(PetDecodeError, match="are 92 bytes, got 91"):
        RoundParameters.from_bytes(data[:-1])
    with pytest.raises(PetDecodeError, match="must be bytes"):
        RoundParameters.from_bytes(None)
    with pytest.raises(PetDecodeError, match="non-finite probabilities"):
        RoundParameters.from_bytes(data[:32] + struct.pack("<d", float("nan")) + data[40:])
    with pytest.raises(PetDecodeError, match="unit config"):
        RoundParameters.from_bytes(data[:84] + bytes([9, 9, 9, 9]) + data[88:])
    with pytest.raises(PetCryptoError, match="pk must be 32 bytes"):
        _round_params(pk=bytes(31))
    with pytest.raises(InvalidArgument, match="RoundParameters.update must be a finite float"):
        _round_params(update=float("inf"))
    with pytest.raises(InvalidArgument, match="RoundParameters.sum must be a finite float"):
        _round_params(sum=True)
    with pytest.raises(InvalidArgument, match="model_length must be an integer in"):
        _round_params(model_length=2**32)
    with pytest.raises(InvalidArgument, match="mask_config must be a MaskConfigPair"):
        _round_params(mask_config=CONFIG)
