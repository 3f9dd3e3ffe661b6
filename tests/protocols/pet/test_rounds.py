"""Whole PET rounds in memory (MemoryHost): exact weighted means, dropouts, hostile messages,
timeouts, restores mid-round, rounds in a row."""

import dataclasses

import numpy as np
import pytest

from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair
from bbjax.protocols.pet.coordinator import (
    Accepted,
    Buffered,
    Coordinator,
    Discarded,
    FailureReason,
    Phase,
    Reason,
    Rejected,
)
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair, seal
from bbjax.protocols.pet.host import MemoryHost, make_participants
from bbjax.protocols.pet.masking import Masker, MaskSeed
from bbjax.protocols.pet.message import Message, Tag, parse_message, seal_message
from bbjax.protocols.pet.multipart import encode_messages
from bbjax.protocols.pet.participant import Participant, ParticipantPhase
from bbjax.protocols.pet.sortition import select_task

from .roundkit import (
    LENGTH,
    eligible,
    keygen,
    seal_all,
    settings,
    sum2_payload,
    sum_payload,
    tolerance,
    update_payload,
    weighted_mean,
)

SCALARS = [1, 0.5, 0.25, 0.75, 1, 0.125, 1, 0.5, 0.875, 1, 0.25, 0.625]


def _network(n=12, *, label=b"net", seed=0, **overrides):
    coordinator = Coordinator(settings(**{"sum_prob": 0.3, "update_prob": 1.0, **overrides}),
                              0.0, keygen=keygen(label))
    scalars = {f"p{i}": SCALARS[i % len(SCALARS)] for i in range(n)}
    participants = make_participants(n, label=label, scalars=scalars)
    rng = np.random.default_rng(seed)
    models = {name: rng.uniform(-1, 1, LENGTH).astype(np.float32) for name in participants}
    return MemoryHost(coordinator, participants, models), models, scalars


def _tasks(host):
    params = host.coordinator.round_params()
    return {name: select_task(p.settings.keys, params) for name, p in host.participants.items()}


def _accepted(host, round_id, tag):
    return [d.sender for d in host.deliveries
            if d.round_id == round_id and d.outcome == Accepted(tag)]


def _check_mean(host, result, models, scalars):
    updaters = _accepted(host, result.round_id, Tag.UPDATE)
    want = weighted_mean([models[n] for n in updaters], [scalars[n] for n in updaters])
    tol = tolerance(host.coordinator, len(updaters), sum(scalars[n] for n in updaters), want)
    assert np.abs(result.global_model - want).max() <= tol
    return updaters


def test_a_round_of_twelve_closes_with_the_exact_weighted_mean():
    host, models, scalars = _network()
    tasks = _tasks(host)
    summers = sorted(n for n, t in tasks.items() if t == "sum")
    assert 1 <= len(summers) <= 9
    result = host.run_round()
    assert result.failure is None and result.round_id == 1
    assert [(t.source, t.target) for t in result.transitions] == [
        (Phase.IDLE, Phase.SUM), (Phase.SUM, Phase.UPDATE), (Phase.UPDATE, Phase.SUM2),
        (Phase.SUM2, Phase.UNMASK), (Phase.UNMASK, Phase.IDLE)]
    assert [t.now for t in result.transitions] == [0.0, 2.0, 4.0, 6.0, 6.0]
    updaters = _check_mean(host, result, models, scalars)
    assert sorted(updaters) == sorted(n for n, t in tasks.items() if t == "update")
    assert sorted(_accepted(host, 1, Tag.SUM)) == sorted(_accepted(host, 1, Tag.SUM2)) == summers
    assert host.coordinator.metrics.count("rejected") == 0
    assert host.coordinator.round_id == 2


def test_dropouts_after_update_and_missing_sum2_still_unmask_the_updates_that_arrived():
    host, models, scalars = _network(15, label=b"drops", sum2_count=(1, 50))
    tasks = _tasks(host)
    summers = sorted(n for n, t in tasks.items() if t == "sum")
    updaters = sorted(n for n, t in tasks.items() if t == "update")
    assert len(summers) >= 2 and len(updaters) >= 9
    gone_after_update = updaters[: len(updaters) // 3]
    never_updated = updaters[-1:]
    for name in gone_after_update:
        host.drop_when(name, ParticipantPhase.AWAITING)
    host.drop_when(never_updated[0], ParticipantPhase.UPDATE)
    for name in summers[1:]:
        host.drop_when(name, ParticipantPhase.SUM2)  # sent Sum, never sends Sum2
    result = host.run_round()
    assert result.failure is None
    arrived = _check_mean(host, result, models, scalars)
    assert sorted(arrived) == sorted(set(updaters) - set(never_updated))
    assert _accepted(host, 1, Tag.SUM2) == summers[:1]
    assert host.dropped == set(gone_after_update) | set(never_updated) | set(summers[1:])


def test_a_sum_participant_sending_a_wrong_mask_is_outvoted():
    host, models, scalars = _network(12, label=b"liar", sum2_count=(3, 50))
    summers = sorted(n for n, t in _tasks(host).items() if t == "sum")
    assert len(summers) >= 3
    liar = host.participants[summers[0]]
    forged = []

    def intercept(name, data):
        if name == summers[0] and liar.phase is ParticipantPhase.SENDING_SUM2:
            c = host.coordinator
            wrong = MaskSeed.generate().derive_mask(LENGTH, c.round_params().mask_config)
            forged.extend(seal_all(sum2_payload(liar.settings.keys, c, wrong),
                                   liar.settings.keys, c))
            return forged[-1]
        return data

    host.intercept = intercept
    result = host.run_round()
    assert result.failure is None and len(forged) == 1
    assert summers[0] in _accepted(host, 1, Tag.SUM2)  # its vote was counted, and lost
    _check_mean(host, result, models, scalars)


def test_too_few_sum_participants_time_out_into_the_next_round():
    host, _, _ = _network(8, label=b"few", sum_count=(6, 50), sum2_count=(1, 50))
    assert sum(t == "sum" for t in _tasks(host).values()) < 6
    result = host.run_round()
    assert result.global_model is None
    assert (result.failure.source, result.failure.failure) == (Phase.SUM,
                                                               FailureReason.PHASE_TIMEOUT)
    assert result.failure.now == 20.0  # time.max of the Sum phase
    assert host.coordinator.round_id == 2 and host.coordinator.phase is Phase.SUM


def test_too_few_updates_time_out_and_the_round_after_closes():
    host, models, scalars = _network(12, label=b"late")
    updaters = sorted(n for n, t in _tasks(host).items() if t == "update")
    for name in updaters[2:]:
        host.drop_when(name, ParticipantPhase.UPDATE)
    result = host.run_round()
    assert (result.failure.source, result.failure.failure) == (Phase.UPDATE,
                                                               FailureReason.PHASE_TIMEOUT)
    for name in updaters[2:]:
        host.rejoin(name)
    result = host.run_round()
    assert result.round_id == 2 and result.failure is None
    _check_mean(host, result, models, scalars)


def test_a_coordinator_restored_mid_round_closes_the_same_round():
    results = []
    for restore in (False, True):
        host, models, scalars = _network(12, label=b"restore")
        late = max(n for n, t in _tasks(host).items() if t == "sum")
        lost = []

        def intercept(name, data, host=host, late=late, lost=lost):
            sending = host.participants[name].phase is ParticipantPhase.SENDING_SUM2
            if name == late and sending and not lost:
                lost.append(data)
                return None  # lost once: the participant posts it again next tick
            return data

        host.intercept = intercept
        while not lost:
            host.tick()
        assert host.coordinator.phase is Phase.SUM2 and late not in _accepted(host, 1, Tag.SUM2)
        if restore:
            data = host.coordinator.state_bytes()
            host.coordinator = Coordinator.restore(data, host.coordinator.settings,
                                                   keygen=keygen(b"restore"))
            assert host.coordinator.state_bytes() == data
            for name, p in host.participants.items():
                host.participants[name] = Participant.restore(p.save())
        result = host.run_round()
        assert result.failure is None and late in _accepted(host, 1, Tag.SUM2)
        _check_mean(host, result, models, scalars)
        results.append(result.global_model)
    assert np.array_equal(*results)


def test_rounds_in_a_row_each_feed_the_next():
    host, _, scalars = _network(12, label=b"rows")
    rng = np.random.default_rng(7)
    offsets = {n: rng.uniform(-0.2, 0.2, LENGTH).astype(np.float32) for n in host.participants}
    base = {"model": np.zeros(LENGTH)}

    def local_model(name):  # the latest global model, moved a little by each participant
        return np.clip(base["model"] + offsets[name], -1, 1).astype(np.float32)

    host.models = local_model
    for round_id in (1, 2, 3):
        result = host.run_round()
        assert result.round_id == round_id and result.failure is None
        updaters = _accepted(host, round_id, Tag.UPDATE)
        want = weighted_mean([local_model(n) for n in updaters], [scalars[n] for n in updaters])
        tol = tolerance(host.coordinator, len(updaters), sum(scalars[n] for n in updaters),
                        want)
        assert np.abs(result.global_model - want).max() <= tol
        base["model"] = result.global_model


# -- hostile messages --------------------------------------------------------------------

def _in_phase(phase, label=b"hostile"):
    """A host whose coordinator sits in ``phase`` with the honest messages of the phases
    before it (and the honest Updates, in Update) already in."""
    host, _, _ = _network(12, label=label, time=(30.0, 300.0))
    while host.coordinator.phase is not phase:
        host.tick()
    for _ in range(3):
        host.tick()
    assert host.coordinator.phase is phase
    return _synced(host)


def _synced(host):
    """The host, its coordinator's clock at the host's (so state bytes compare)."""
    host.coordinator.tick(host.now)
    return host


def _sealed(message_bytes, host):
    return seal_message(message_bytes, host.coordinator.round_params().pk)


def _honest_update(host, name=None, **kwargs):
    c = host.coordinator
    keys = (eligible("update", c, 1, label=b"fresh")[0] if name is None
            else host.participants[name].settings.keys)
    payload, _ = update_payload(keys, c, np.zeros(LENGTH, np.float32), **kwargs)
    return keys, payload


def _hostile_update(kind, host):
    c = host.coordinator
    keys, payload = _honest_update(host)
    pk = c.round_params().pk
    if kind == "garbage":
        return b"\x00" * 300, Rejected(Reason.UNDECRYPTABLE)
    if kind == "sealed garbage":
        return seal(pk, b"\x07" * 200), Rejected(Reason.MALFORMED)  # tag 7: none
    if kind == "sealed to another key":
        other = EncryptKeyPair.from_seed(bytes(32)).public
        return seal_all(payload, keys, c, pk=other)[0], Rejected(Reason.UNDECRYPTABLE)
    (plain,) = encode_messages(payload, keys, pk, None)
    if kind == "bad signature":
        return _sealed(bytes([plain[0] ^ 1]) + plain[1:], host), Rejected(Reason.BAD_SIGNATURE)
    if kind == "wrong coordinator key":
        other = EncryptKeyPair.from_seed(bytes(32)).public
        (forged,) = encode_messages(payload, keys, other, None)
        return _sealed(forged, host), Rejected(Reason.WRONG_COORDINATOR_KEY)
    if kind == "wrong phase":
        s_keys = eligible("sum", c, 1, label=b"late-sum")[0]
        return seal_all(sum_payload(s_keys, c)[0], s_keys, c)[0], Discarded(Reason.WRONG_PHASE)
    if kind == "not update eligible":
        s_keys = eligible("sum", c, 1, label=b"sum-as-update")[0]
        forged, _ = update_payload(s_keys, c, np.zeros(LENGTH, np.float32))
        return seal_all(forged, s_keys, c)[0], Rejected(Reason.NOT_UPDATE_ELIGIBLE)
    if kind == "duplicate participant":
        updater = next(n for n in _accepted(host, c.round_id, Tag.UPDATE))
        _, again = _honest_update(host, updater)
        return (seal_all(again, host.participants[updater].settings.keys, c)[0],
                Rejected(Reason.DUPLICATE_PARTICIPANT))
    if kind == "wrong mask length":
        config = c.round_params().mask_config
        short = Masker(config).mask(1, np.zeros(LENGTH - 1))[1]
        forged = dataclasses.replace(payload, masked_model=short)
        return seal_all(forged, keys, c)[0], Rejected(Reason.MASK_MISMATCH)
    if kind == "wrong mask config":
        config = MaskConfigPair.from_config(MaskConfig("Power2", "F32", "B0", "M3"))
        other = Masker(config).mask(1, np.zeros(LENGTH))[1]
        forged = dataclasses.replace(payload, masked_model=other)
        return seal_all(forged, keys, c)[0], Rejected(Reason.MASK_MISMATCH)
    if kind == "seed dict missing a sum participant":
        seeds = dict(payload.local_seed_dict)
        seeds.pop(next(iter(seeds)))
        forged = dataclasses.replace(payload, local_seed_dict=seeds)
        return seal_all(forged, keys, c)[0], Rejected(Reason.SEED_DICT_MISMATCH)
    if kind == "seed dict with a stranger":
        seeds = dict(payload.local_seed_dict)
        seeds[bytes(32)] = next(iter(seeds.values()))
        forged = dataclasses.replace(payload, local_seed_dict=seeds)
        return seal_all(forged, keys, c)[0], Rejected(Reason.SEED_DICT_MISMATCH)
    raise AssertionError(kind)


UPDATE_HOSTILES = ["garbage", "sealed garbage", "sealed to another key", "bad signature",
                   "wrong coordinator key", "wrong phase", "not update eligible",
                   "duplicate participant", "wrong mask length", "wrong mask config",
                   "seed dict missing a sum participant", "seed dict with a stranger"]


@pytest.fixture(scope="module")
def update_host():
    return _in_phase(Phase.UPDATE)


@pytest.mark.parametrize("kind", UPDATE_HOSTILES)
def test_a_hostile_update_phase_message_is_refused_counted_and_changes_nothing(update_host,
                                                                              kind):
    host = update_host
    data, expected = _hostile_update(kind, host)
    before = host.coordinator.state_bytes()
    metrics = host.coordinator.metrics
    counted = metrics.count(type(expected).__name__.lower(), reason=expected.reason,
                            phase=Phase.UPDATE)
    outcome = host.inject(data)
    assert (type(outcome), outcome.reason) == (type(expected), expected.reason)
    assert host.coordinator.state_bytes() == before
    assert metrics.count(type(expected).__name__.lower(), reason=expected.reason,
                         phase=Phase.UPDATE) == counted + 1


def test_a_replayed_message_is_a_duplicate(update_host):
    host = update_host
    keys, payload = _honest_update(host)
    (data,) = seal_all(payload, keys, host.coordinator)
    assert host.inject(data) == Accepted(Tag.UPDATE)
    before = host.coordinator.state_bytes()
    assert host.inject(data) == Rejected(Reason.DUPLICATE_PARTICIPANT)
    assert host.coordinator.state_bytes() == before


@pytest.mark.parametrize("kind", ["truncated", "inconsistent", "other tag"])
def test_a_broken_multipart_message_leaves_the_state_as_before_its_first_chunk(update_host,
                                                                              kind):
    host = update_host
    c = host.coordinator
    keys = eligible("update", c, 1, label=b"multi-" + kind.encode())[0]
    payload, _ = update_payload(keys, c, np.zeros(LENGTH, np.float32))
    pk = c.round_params().pk
    chunks = encode_messages(payload, keys, pk, 400, message_id=7)
    assert len(chunks) >= 3
    before = c.state_bytes()
    for chunk in chunks[:-1]:
        assert host.inject(seal_message(chunk, pk)) == Buffered(Tag.UPDATE)
    if kind == "truncated":  # the last chunk cut short: the whole payload does not parse
        real = parse_message(chunks[-1])
        cut = dataclasses.replace(real.payload, data=real.payload.data[:-5])
        last = Message(keys.public, pk, cut, is_multipart=True, tag=Tag.UPDATE).to_bytes(keys)
        expected = Reason.MALFORMED
    elif kind == "inconsistent":  # chunk 0 again, with other data
        other = dataclasses.replace(payload, sum_signature=bytes(64))
        last = encode_messages(other, keys, pk, 400, message_id=7)[0]
        expected = Reason.MULTIPART_INCONSISTENT
    else:
        sum2 = sum2_payload(keys, c, payload.masked_model)
        last = encode_messages(sum2, keys, pk, 300, message_id=7)[1]
        expected = Reason.WRONG_PHASE
    outcome = host.inject(seal_message(last, pk))
    assert outcome.reason is expected
    if kind == "other tag":  # discarded before reassembly: the buffered chunks wait on
        assert isinstance(outcome, Discarded)
        assert host.inject(seal_message(chunks[-1], pk)) == Accepted(Tag.UPDATE)
        return
    assert isinstance(outcome, Rejected)
    assert c.state_bytes() == before


def test_hostile_sum_and_sum2_messages():
    host = _in_phase(Phase.SUM, label=b"hostile-sum")
    c = host.coordinator
    (outsider,) = eligible("update", c, 1, label=b"not-a-summer")
    before = c.state_bytes()
    forged, _ = sum_payload(outsider, c)
    assert host.inject(seal_all(forged, outsider, c)[0]) == Rejected(Reason.NOT_SUM_ELIGIBLE)
    summers = _accepted(host, 1, Tag.SUM)
    summer = host.participants[summers[0]].settings.keys
    again, _ = sum_payload(summer, c)
    assert host.inject(seal_all(again, summer, c)[0]) == Rejected(Reason.DUPLICATE_PARTICIPANT)
    _, payload = _honest_update(host, sums={})
    assert host.inject(seal_all(payload, outsider, c)[0]).reason is Reason.WRONG_PHASE
    assert c.state_bytes() == before

    for name in summers:
        assert host.participants[name].phase is ParticipantPhase.SUM2  # waits for seeds
        host.drop(name)  # no honest Sum2 arrives
    while c.phase is not Phase.SUM2:
        host.tick()
    _synced(host)
    before = c.state_bytes()
    (stranger,) = eligible("sum", c, 1, label=b"stranger")
    mask = MaskSeed.generate().derive_mask(LENGTH, c.round_params().mask_config)
    assert host.inject(seal_all(sum2_payload(stranger, c, mask), stranger, c)[0]) == Rejected(
        Reason.UNKNOWN_SUM_PARTICIPANT)
    short = MaskSeed.generate().derive_mask(LENGTH + 1, c.round_params().mask_config)
    assert host.inject(seal_all(sum2_payload(summer, c, short), summer, c)[0]).reason is (
        Reason.MASK_MISMATCH)
    assert host.inject(seal_all(sum2_payload(outsider, c, mask), outsider, c)[0]).reason is (
        Reason.NOT_SUM_ELIGIBLE)
    assert c.state_bytes() == before
    assert c.metrics.count("rejected", phase=Phase.SUM2) == 3
    assert host.inject(seal_all(sum2_payload(summer, c, mask), summer, c)[0]) == Accepted(
        Tag.SUM2)


def test_an_unknown_signing_key_cannot_pass_for_a_participant():
    host = _in_phase(Phase.UPDATE, label=b"impostor")
    c = host.coordinator
    name = _accepted(host, 1, Tag.UPDATE)[0]
    victim = host.participants[name].settings.keys
    impostor = SigningKeyPair.from_seed(bytes([9]) * 32)
    payload, _ = update_payload(victim, c, np.zeros(LENGTH, np.float32))
    (plain,) = encode_messages(payload, impostor, c.round_params().pk, None)
    forged = plain[:64] + victim.public + plain[96:]  # claims the victim's identity
    before = c.state_bytes()
    assert host.inject(_sealed(forged, host)) == Rejected(Reason.BAD_SIGNATURE)
    assert c.state_bytes() == before
