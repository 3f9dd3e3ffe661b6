"""The onnx client's numpy-only codec is bbjax's wire format byte for byte: the same bytes
from both encoders, each decoder reads the other's, and on any input both decoders give the
same value or raise the same error (class, field, offset and message)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.errors import EnvelopeError, TensorEncodeError
from bbjax.onnxclient import codec
from bbjax.runtime import envelope as bb_envelope
from bbjax.runtime import tensor_codec as bb_tensor
from tests.runtime.strategies import WIDE_LIMITS, arrays, envelopes, mutations

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = (bb_envelope.Limits(), WIDE_LIMITS, bb_envelope.Limits(200, 3, 40, 8, 2))


def _ours(limits: bb_envelope.Limits) -> codec.Limits:
    return codec.Limits(limits.max_envelope_bytes, limits.max_fills, limits.max_fill_bytes,
                        limits.max_id_bytes, limits.max_tensor_rank)


def _mine(envelope: bb_envelope.Envelope) -> codec.Envelope:
    return codec.Envelope(envelope.source,
                          tuple(codec.Fill(f.site, f.type_hash, f.payload) for f in envelope.fills),
                          envelope.correlation, envelope.deadline_ns)


def _outcome(decode, data: bytes, limits) -> tuple:
    """What a decoder makes of ``data``: ("ok", fields) or ("error", class, field, offset,
    message)."""
    try:
        value = decode(data, limits=limits)
    except EnvelopeError as exc:
        return ("error", type(exc), exc.field, exc.offset, str(exc))
    if isinstance(value, np.ndarray):
        return ("ok", value.dtype, value.shape, value.tobytes())
    return ("ok", value.source, tuple((f.site, f.type_hash, f.payload) for f in value.fills),
            value.correlation, value.deadline_ns)


@FUZZ
@given(envelopes())
def test_both_encoders_write_the_same_bytes_and_each_decoder_reads_the_other(envelope):
    theirs = bb_envelope.encode(envelope)
    assert codec.encode(_mine(envelope)) == theirs
    assert _outcome(codec.decode, theirs, codec.DEFAULT_LIMITS) == \
        _outcome(bb_envelope.decode, theirs, bb_envelope.DEFAULT_LIMITS)
    assert _outcome(codec.decode, theirs, codec.DEFAULT_LIMITS)[0] == "ok"


@FUZZ
@given(st.data())
def test_any_bytes_decode_alike_or_fail_alike(data):
    valid = bb_envelope.encode(data.draw(envelopes(max_fills=4)))
    raw = data.draw(st.one_of(mutations(valid), st.binary(max_size=80)))
    limits = data.draw(st.sampled_from(LIMITS))
    assert _outcome(codec.decode, raw, _ours(limits)) == \
        _outcome(bb_envelope.decode, raw, limits)


@FUZZ
@given(arrays())
def test_tensors_round_trip_both_ways_with_the_same_type_hash(array):
    theirs = bb_tensor.encode_tensor(array)
    assert codec.encode_tensor(array) == theirs
    assert codec.type_hash(array.dtype, array.shape) == bb_tensor.type_hash(array.dtype,
                                                                            array.shape)
    assert codec.tensor_type_name(array.dtype, array.shape) == \
        bb_tensor.tensor_type_name(array.dtype, array.shape)
    back = codec.decode_tensor(theirs)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()
    assert bb_tensor.decode_tensor(codec.encode_tensor(array)).tobytes() == array.tobytes()


@FUZZ
@given(st.data())
def test_any_tensor_bytes_decode_alike_or_fail_alike(data):
    valid = bb_tensor.encode_tensor(data.draw(arrays()))
    raw = data.draw(st.one_of(mutations(valid, resealed=False), st.binary(max_size=40)))
    limits = data.draw(st.sampled_from(LIMITS))
    assert _outcome(codec.decode_tensor, raw, _ours(limits)) == \
        _outcome(bb_tensor.decode_tensor, raw, limits)


def test_the_fnv_hash_matches_the_published_test_values():
    # FNV-1a 64 test vectors (Fowler, Noll, Vo: draft-eastlake-fnv, appendix)
    assert codec.fnv1a64(b"") == 0xCBF29CE484222325
    assert codec.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert codec.fnv1a64(b"foobar") == 0x85944171F73967E8


@pytest.mark.parametrize("bad", [np.array(["a"]), np.zeros(2, np.complex64)])
def test_unsupported_dtypes_are_refused_like_bbjax(bad):
    with pytest.raises(TensorEncodeError):
        bb_tensor.encode_tensor(bad)
    with pytest.raises(TensorEncodeError):
        codec.encode_tensor(bad)


def test_encoding_refuses_what_bbjax_refuses():
    bad = [codec.Envelope("", ()), codec.Envelope("1", (), correlation=-1),
           codec.Envelope("1", (codec.Fill("s", 0, "text"),)),
           codec.Envelope("1", tuple(codec.Fill("s", 0, b"") for _ in range(65)))]
    for envelope in bad:
        with pytest.raises(EnvelopeError) as ours:
            codec.encode(envelope)
        theirs = bb_envelope.Envelope(envelope.source, tuple(
            bb_envelope.Fill(f.site, f.type_hash, f.payload) for f in envelope.fills),
            envelope.correlation, envelope.deadline_ns)
        with pytest.raises(EnvelopeError) as reference:
            bb_envelope.encode(theirs)
        assert type(ours.value) is type(reference.value)
        assert str(ours.value) == str(reference.value)
