"""The participant state machine step by step: task selection, the View it reads, sending
chunk by chunk with retries, outdated rounds, save/restore, and what it refuses."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bbjax.errors import InvalidArgument, MaskingError, PetDecodeError, PetStateError
from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.coordinator import Coordinator
from bbjax.protocols.pet.crypto import (
    EncryptKeyPair,
    decrypt_seed,
    encrypt_seed,
    verify,
)
from bbjax.protocols.pet.masking import MaskSeed
from bbjax.protocols.pet.message import (
    Sum,
    Sum2,
    Update,
    open_message,
    parse_message,
    verify_message_signature,
)
from bbjax.protocols.pet.multipart import Reassembler
from bbjax.protocols.pet.participant import (
    Need,
    Participant,
    ParticipantPhase,
    Progress,
    View,
)
from bbjax.protocols.pet.settings import MIN_MESSAGE_SIZE, ParticipantSettings
from bbjax.protocols.pet.sortition import select_task, sum_signature, update_signature

from .roundkit import LENGTH, eligible, keygen, mask_of, settings

P = ParticipantPhase


@pytest.fixture(scope="module")
def coordinator():
    return Coordinator(settings(), 0.0, keygen=keygen(b"participant-tests"))


EPHM = EncryptKeyPair.from_seed(bytes([7]) * 32)


def _participant(keys, **kwargs):
    return Participant(ParticipantSettings(keys, **kwargs), keygen=lambda: EPHM), EPHM


def _open(coordinator, data):
    plain = open_message(data, coordinator.state.keys)
    assert verify_message_signature(plain)
    return parse_message(plain)


def _drain(participant, view, ok=True):
    """Step until the participant leaves its Sending phase; the chunks it posted."""
    sent = []
    for _ in range(1000):
        progress = participant.step(view)
        if participant.outbox is not None:
            sent.append(participant.outbox)
            participant.report_sent(ok)
        elif progress is not Progress.UPDATED or participant.phase not in (
                P.SENDING_SUM, P.SENDING_SUM2, P.SENDING_UPDATE):
            return sent
    raise AssertionError("never left the Sending phase")


def test_a_new_participant_waits_for_round_parameters_then_picks_its_task(coordinator):
    params = coordinator.round_params()
    for task in ("sum", "update", None):
        for keys in eligible(task, coordinator, 3, label=b"task"):
            p, _ = _participant(keys)
            assert p.phase is P.AWAITING and p.task is None
            assert p.step(View()) is Progress.STUCK
            assert p.step(View(round_params=params)) is Progress.UPDATED
            assert p.phase is P.NEW_ROUND
            assert p.step(View(round_params=params)) is Progress.UPDATED
            assert p.task == task == select_task(keys, params)
            if task is None:
                assert p.step(View(round_params=params)) is Progress.CONTINUE


def test_sum_then_sum2(coordinator):
    params = coordinator.round_params()
    (keys,) = eligible("sum", coordinator, 1)
    p, ephm = _participant(keys)
    view = View(round_params=params)
    p.step(view), p.step(view)
    assert p.phase is P.SUM
    assert p.step(view) is Progress.UPDATED and p.phase is P.SENDING_SUM
    assert p.outbox is None
    assert p.step(view) is Progress.UPDATED
    first = p.outbox
    assert first is not None
    assert p.step(view) is Progress.STUCK  # the chunk awaits its report
    p.report_sent(False)
    assert p.outbox is None
    assert p.step(view) is Progress.UPDATED and p.outbox == first  # retried
    p.report_sent(True)
    message = _open(coordinator, first)
    assert message.participant_pk == keys.public and message.coordinator_pk == params.pk
    assert message.payload == Sum(sum_signature(keys, params.seed), ephm.public)
    assert p.step(view) is Progress.UPDATED and p.phase is P.SUM2
    assert p.needs == {Need.ROUND_PARAMS, Need.SEEDS}
    assert p.step(view) is Progress.STUCK

    seeds = [MaskSeed(bytes([i]) * 32) for i in range(1, 4)]
    column = {bytes([i]) * 32: encrypt_seed(s, ephm.public) for i, s in enumerate(seeds)}
    assert p.step(dataclasses.replace(view, seeds=column)) is Progress.UPDATED
    (data,) = _drain(p, view)
    assert p.phase is P.AWAITING and p.task is None
    payload = _open(coordinator, data).payload
    assert payload == Sum2(sum_signature(keys, params.seed), mask_of(seeds, coordinator))


def test_update_masks_the_model_and_seals_its_seed_to_every_sum_participant(coordinator):
    params = coordinator.round_params()
    (keys,) = eligible("update", coordinator, 1)
    p, _ = _participant(keys, scalar=0.5)
    view = View(round_params=params)
    p.step(view), p.step(view)
    assert p.phase is P.UPDATE and p.needs == {Need.ROUND_PARAMS, Need.SUMS, Need.MODEL}
    ephms = [EncryptKeyPair.from_seed(bytes([i]) * 32) for i in range(10, 13)]
    sums = {bytes([i]) * 32: e.public for i, e in enumerate(ephms)}
    weights = np.random.default_rng(5).uniform(-1, 1, LENGTH).astype(np.float32)
    assert p.step(dataclasses.replace(view, sums=sums)) is Progress.STUCK  # no model yet
    assert p.step(dataclasses.replace(view, model=weights)) is Progress.STUCK  # no sums
    with pytest.raises(MaskingError):
        p.step(dataclasses.replace(view, sums=sums, model=weights[:-1]))
    assert p.step(dataclasses.replace(view, sums=sums, model=weights)) is Progress.UPDATED
    (data,) = _drain(p, view)
    update = _open(coordinator, data).payload
    assert isinstance(update, Update) and p.phase is P.AWAITING
    assert update.sum_signature == sum_signature(keys, params.seed)
    assert update.update_signature == update_signature(keys, params.seed)
    assert set(update.local_seed_dict) == set(sums)
    opened = {decrypt_seed(update.local_seed_dict[pk], e).as_bytes()
              for pk, e in zip(sums, ephms)}
    assert len(opened) == 1  # one mask seed, sealed to each sum participant
    seed = MaskSeed(opened.pop())
    aggregation = Aggregation(params.mask_config, LENGTH)
    aggregation.aggregate(update.masked_model)
    unmasked = aggregation.unmask(seed.derive_mask(LENGTH, params.mask_config))
    assert np.abs(unmasked - weights.astype(np.float64)).max() <= 2e-10


def test_large_messages_travel_in_chunks_that_reassemble(coordinator):
    params = coordinator.round_params()
    (keys,) = eligible("update", coordinator, 1, label=b"chunky")
    p, _ = _participant(keys, max_message_size=MIN_MESSAGE_SIZE + 30)
    view = View(round_params=params)
    p.step(view), p.step(view)
    sums = {bytes([i]) * 32: EncryptKeyPair.from_seed(bytes([i]) * 32).public for i in range(4)}
    p.step(dataclasses.replace(view, sums=sums, model=np.zeros(LENGTH, np.float32)))
    failures = iter([False, True] * 1000)
    sent = []
    while p.phase is P.SENDING_UPDATE:
        p.step(view)
        if p.outbox is not None:
            sent.append(p.outbox)
            p.report_sent(next(failures))
    assert all(len(c) <= MIN_MESSAGE_SIZE + 30 for c in sent)
    chunks = sent[1::2]  # every chunk failed once, then went through
    assert sent[0::2] == chunks and len(chunks) > 5
    reassembler = Reassembler(10**6, 10)
    whole = [reassembler.add(_open(coordinator, c)) for c in chunks]
    assert whole[:-1] == [None] * (len(chunks) - 1)
    assert isinstance(whole[-1].payload, Update)
    assert set(whole[-1].payload.local_seed_dict) == set(sums)


def test_new_round_parameters_restart_it_from_any_phase(coordinator):
    params = coordinator.round_params()
    newer = dataclasses.replace(params, seed=bytes(32))
    (keys,) = eligible("sum", coordinator, 1)
    for steps in range(1, 6):
        p, _ = _participant(keys)
        for _ in range(steps):
            p.step(View(round_params=params))
        assert p.step(View(round_params=newer)) is Progress.UPDATED
        assert p.phase is P.NEW_ROUND and p.outbox is None
        assert p.state.round_params == newer and p.state.chunks == ()


def test_it_gives_up_the_round_on_hostile_answers(coordinator):
    params = coordinator.round_params()
    (summer,) = eligible("sum", coordinator, 1)
    p, _ = _participant(summer)
    view = View(round_params=params)
    for _ in range(3):
        p.step(view)
    _drain(p, view)
    assert p.phase is P.SUM2
    p.step(dataclasses.replace(view, seeds={bytes(32): bytes(80)}))  # not sealed to it
    assert p.phase is P.AWAITING

    (updater,) = eligible("update", coordinator, 1)
    p, _ = _participant(updater)
    p.step(view), p.step(view)
    p.step(dataclasses.replace(view, sums={bytes(32): b"short"}, model=np.zeros(LENGTH)))
    assert p.phase is P.AWAITING
    low_order = dataclasses.replace(params, pk=bytes(32))  # no sealed box to it
    p, _ = _participant(updater)
    p.step(View(round_params=low_order)), p.step(View(round_params=low_order))
    p.step(View(round_params=low_order, sums={}, model=np.zeros(LENGTH)))
    assert p.phase is P.AWAITING and p.state.chunks == ()


def test_host_mistakes_raise():
    (keys,) = eligible("sum", Coordinator(settings(), 0.0), 1)
    p, _ = _participant(keys)
    with pytest.raises(InvalidArgument):
        p.step({"round_params": None})
    with pytest.raises(InvalidArgument):
        p.step(View(round_params=b"params"))
    with pytest.raises(PetStateError):
        p.report_sent(True)
    with pytest.raises(InvalidArgument):
        p.report_sent(1)
    with pytest.raises(InvalidArgument):
        Participant(keys)
    with pytest.raises(InvalidArgument):
        Participant(ParticipantSettings(keys), keygen=None)


def _walk(coordinator, keys, stops):
    """A participant stepped through a whole task, saved at every step."""
    params = coordinator.round_params()
    p, ephm = _participant(keys, scalar=0.25, max_message_size=MIN_MESSAGE_SIZE + 100)
    sums = {keys.public: ephm.public, bytes(32): EncryptKeyPair.from_seed(bytes(32)).public}
    seeds = {bytes(32): encrypt_seed(MaskSeed(bytes([3]) * 32), ephm.public)}
    view = View(round_params=params, sums=sums, seeds=seeds, model=np.ones(LENGTH))
    saves = []
    for _ in range(stops):
        saves.append((p.phase, p.save()))
        p.step(view)
        if p.outbox is not None:
            p.report_sent(True)
    return saves, view


@pytest.mark.parametrize("task", ["sum", "update"])
def test_save_restore_at_every_step_continues_the_same_way(coordinator, task):
    (keys,) = eligible(task, coordinator, 1, label=b"saves")
    saves, view = _walk(coordinator, keys, 40)
    phases = {phase for phase, _ in saves}
    assert P.AWAITING in phases and (P.SENDING_SUM2 if task == "sum" else
                                     P.SENDING_UPDATE) in phases
    for i, (phase, data) in enumerate(saves[:-1]):
        restored = Participant.restore(data, keygen=lambda: EPHM)
        assert restored.phase is phase and restored.save() == data
        assert restored.settings == Participant.restore(saves[0][1]).settings
        restored.step(view)
        if restored.outbox is not None:
            restored.report_sent(True)
        if phase not in (P.SUM, P.UPDATE, P.SUM2):  # those draw fresh randomness
            assert restored.save() == saves[i + 1][1]
        else:
            assert restored.phase is saves[i + 1][0]


def test_a_chunk_in_the_outbox_is_not_sent_when_saved(coordinator):
    (keys,) = eligible("sum", coordinator, 1, label=b"outbox")
    p, _ = _participant(keys)
    view = View(round_params=coordinator.round_params())
    for _ in range(4):
        p.step(view)
    chunk = p.outbox
    restored = Participant.restore(p.save())
    assert restored.outbox is None
    restored.step(view)
    assert restored.outbox == chunk


def test_restore_refuses_bad_bytes(coordinator):
    (keys,) = eligible("sum", coordinator, 1, label=b"bad")
    saves, _ = _walk(coordinator, keys, 6)
    data = saves[-1][1]
    assert b'"phase":"SendingSum"' in data or b'"phase":"Sum2"' in data
    for bad in (b"", b"{}", b"null", data[:-1], data.replace(b'"scalar":[1,4]', b'"scalar":[2,8]'),
                data.replace(b'"scalar":[1,4]', b'"scalar":[-1,4]'),
                data.replace(b'"max_message_size":294', b'"max_message_size":100'),
                data.replace(b'"format":"bbjax.pet.participant/1"', b'"format":"v2"'),
                data.replace(b'"ephm_secret":"', b'"ephm_secret":"ff'),
                data[:-1] + b',"more":0}'):
        with pytest.raises(PetDecodeError):
            Participant.restore(bad)
    awaiting = Participant(ParticipantSettings(keys)).save()
    with pytest.raises(PetDecodeError):
        Participant.restore(awaiting.replace(b'"Awaiting"', b'"Sum"'))


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.data())
def test_restore_of_damaged_bytes_is_total(coordinator, data):
    if "saves" not in _FUZZ:
        (keys,) = eligible("update", coordinator, 1, label=b"fuzz")
        _FUZZ["saves"] = [d for _, d in _walk(coordinator, keys, 8)[0]]
    raw = bytearray(data.draw(st.sampled_from(_FUZZ["saves"])))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        Participant.restore(bytes(raw))
    except PetDecodeError:
        pass


_FUZZ: dict = {}


def test_signatures_in_messages_verify(coordinator):
    (keys,) = eligible("sum", coordinator, 1, label=b"sig")
    p, _ = _participant(keys)
    view = View(round_params=coordinator.round_params())
    for _ in range(4):
        p.step(view)
    plain = open_message(p.outbox, coordinator.state.keys)
    assert verify(keys.public, plain[64:], plain[:64])
