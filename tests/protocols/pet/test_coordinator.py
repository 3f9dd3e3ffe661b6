"""The coordinator state machine driven message by message: phases and their count/time
rules, first-write-wins dictionaries, the mask vote, what it serves, its state bytes."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bbjax.errors import InvalidArgument, PetDecodeError, PetStateError
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
from bbjax.protocols.pet.coordinator.machine import majority_mask
from bbjax.protocols.pet.crypto import next_round_seed
from bbjax.protocols.pet.message import Tag, seal_message
from bbjax.protocols.pet.multipart import encode_messages

from .roundkit import (
    LENGTH,
    eligible,
    keygen,
    mask_of,
    seal_all,
    settings,
    sum2_payload,
    sum_payload,
    tolerance,
    update_payload,
    weighted_mean,
)


def _one(coordinator, payload, keys, now):
    (data,) = seal_all(payload, keys, coordinator)
    return coordinator.handle(data, now)


def test_creation_runs_idle_and_the_seed_chain():
    keys = keygen(b"chain")
    expected = [keys() for _ in range(3)]
    c = Coordinator(settings(), 0.0, keygen=keygen(b"chain"))
    assert (c.phase, c.round_id) == (Phase.SUM, 1)
    params = c.round_params()
    assert params.pk == expected[0].public
    seed1 = next_round_seed(expected[0].secret, bytes(32), 0.4, 0.9)
    assert params.seed == seed1
    assert (params.sum, params.update, params.model_length) == (0.4, 0.9, LENGTH)
    assert [(t.source, t.target, t.round_id) for t in c.take_transitions()] == [
        (Phase.IDLE, Phase.SUM, 1)]
    c.tick(20.0)  # no sum message: the Sum phase times out
    assert (c.phase, c.round_id) == (Phase.SUM, 2)
    assert c.round_params().pk == expected[1].public
    assert c.round_params().seed == next_round_seed(expected[1].secret, seed1, 0.4, 0.9)
    assert [(t.source, t.target, t.round_id, t.failure) for t in c.take_transitions()] == [
        (Phase.SUM, Phase.FAILURE, 1, FailureReason.PHASE_TIMEOUT),
        (Phase.FAILURE, Phase.IDLE, 1, None),
        (Phase.IDLE, Phase.SUM, 2, None)]


def test_a_phase_lasts_time_min_then_ends_as_soon_as_it_has_count_min():
    c = Coordinator(settings(sum_count=(2, 3), sum2_count=(1, 3), time=(5.0, 10.0)), 0.0,
                    keygen=keygen())
    a, b, d, e = eligible("sum", c, 4)
    assert isinstance(_one(c, sum_payload(a, c)[0], a, 1.0), Accepted)
    c.tick(5.0)
    assert c.phase is Phase.SUM  # time.min passed, but one message of two
    assert isinstance(_one(c, sum_payload(b, c)[0], b, 6.0), Accepted)
    assert c.phase is Phase.UPDATE  # the second message ends it at once
    assert c.state.phase_start == 6.0

    c2 = Coordinator(settings(sum_count=(2, 3), sum2_count=(1, 3), time=(5.0, 10.0)), 0.0,
                     keygen=keygen())
    for k in (a, b, d):
        assert isinstance(_one(c2, sum_payload(k, c2)[0], k, 1.0), Accepted)
    outcome = _one(c2, sum_payload(e, c2)[0], e, 2.0)
    assert outcome == Discarded(Reason.PHASE_FULL, outcome.detail)
    assert c2.phase is Phase.SUM  # full, but time.min not over
    c2.tick(4.999)
    assert c2.phase is Phase.SUM
    c2.tick(5.0)
    assert c2.phase is Phase.UPDATE and set(c2.sums()) == {a.public, b.public, d.public}


def test_first_write_wins_and_what_is_served_when():
    c = Coordinator(settings(), 0.0, keygen=keygen())
    (a,) = eligible("sum", c, 1)
    first, ephm1 = sum_payload(a, c)
    assert c.sums() is None and c.seeds_for(a.public) is None
    assert isinstance(_one(c, first, a, 0.0), Accepted)
    before = c.state_bytes()
    assert _one(c, sum_payload(a, c)[0], a, 0.5) == Rejected(Reason.DUPLICATE_PARTICIPANT)
    assert c.state_bytes().replace(b'"now":0.5', b'"now":0.0') == before
    c.tick(2.0)
    assert c.phase is Phase.UPDATE and c.sums() == {a.public: ephm1.public}
    assert c.seeds_for(a.public) is None  # seeds are served in Sum2
    ups = eligible("update", c, 3)
    weights = np.random.default_rng(1).uniform(-1, 1, (3, LENGTH)).astype(np.float32)
    seeds = []
    for k, w in zip(ups, weights):
        payload, seed = update_payload(k, c, w)
        seeds.append(seed)
        assert isinstance(_one(c, payload, k, 2.5), Accepted)
    again, _ = update_payload(ups[0], c, weights[1])
    assert _one(c, again, ups[0], 2.5) == Rejected(Reason.DUPLICATE_PARTICIPANT)
    c.tick(4.0)
    assert c.phase is Phase.SUM2
    column = c.seeds_for(a.public)
    assert set(column) == {k.public for k in ups}
    assert c.seeds_for(ups[0].public) is None and c.seeds_for("pk") is None
    assert isinstance(_one(c, sum2_payload(a, c, mask_of(seeds, c)), a, 4.0), Accepted)
    c.tick(6.0)
    assert c.round_id == 2 and c.sums() is None
    mean = weighted_mean(weights, [1, 1, 1])
    assert np.abs(c.global_model() - mean).max() <= tolerance(c, 3, 3, mean)
    assert [t.target for t in c.take_transitions()][-3:] == [Phase.UNMASK, Phase.IDLE,
                                                             Phase.SUM]


def _to_sum2(c, n_sum, weights, scalars=None):
    summers = eligible("sum", c, n_sum)
    for k in summers:
        assert isinstance(_one(c, sum_payload(k, c)[0], k, 0.0), Accepted)
    c.tick(2.0)
    ups = eligible("update", c, len(weights))
    seeds = []
    for i, (k, w) in enumerate(zip(ups, weights)):
        payload, seed = update_payload(k, c, w, 1 if scalars is None else scalars[i])
        seeds.append(seed)
        assert isinstance(_one(c, payload, k, 2.0), Accepted)
    c.tick(4.0)
    assert c.phase is Phase.SUM2
    return summers, seeds


def test_a_wrong_mask_is_outvoted_and_a_tie_fails_the_round():
    weights = np.random.default_rng(2).uniform(-1, 1, (4, LENGTH)).astype(np.float32)
    c = Coordinator(settings(sum2_count=(3, 50)), 0.0, keygen=keygen())
    summers, seeds = _to_sum2(c, 3, weights)
    wrong = mask_of(seeds[:3], c)  # the mask of another set of updates
    right = mask_of(seeds, c)
    for k, mask in zip(summers, (right, wrong, right)):
        assert isinstance(_one(c, sum2_payload(k, c, mask), k, 4.0), Accepted)
    c.tick(6.0)
    assert c.round_id == 2
    mean = weighted_mean(weights, [1] * 4)
    assert np.abs(c.global_model() - mean).max() <= tolerance(c, 4, 4, mean)

    c = Coordinator(settings(sum2_count=(2, 50)), 0.0, keygen=keygen())
    summers, seeds = _to_sum2(c, 2, weights)
    for k, mask in zip(summers, (mask_of(seeds, c), mask_of(seeds[1:], c))):
        assert isinstance(_one(c, sum2_payload(k, c, mask), k, 4.0), Accepted)
    c.tick(6.0)
    assert c.round_id == 2 and c.global_model() is None
    failure = [t for t in c.take_transitions() if t.failure]
    assert [(t.source, t.failure) for t in failure] == [(Phase.UNMASK,
                                                        FailureReason.AMBIGUOUS_MASKS)]


def test_majority_mask_needs_a_unique_top():
    assert majority_mask({}) is FailureReason.NO_MASK
    assert majority_mask({b"a": 2, b"b": 2, b"c": 1}) is FailureReason.AMBIGUOUS_MASKS
    assert majority_mask({b"a": 1, b"b": 3, b"c": 2}) == b"b"
    assert majority_mask({b"a": 1}) == b"a"


def test_a_mask_that_does_not_unmask_fails_the_round():
    weights = np.random.default_rng(3).uniform(-1, 1, (3, LENGTH)).astype(np.float32)
    c = Coordinator(settings(), 0.0, keygen=keygen())
    (k,), seeds = _to_sum2(c, 1, weights, scalars=[0, 0, 0])  # scalar sum 0: no mean
    assert isinstance(_one(c, sum2_payload(k, c, mask_of(seeds, c)), k, 4.0), Accepted)
    c.tick(6.0)
    assert [t.failure for t in c.take_transitions() if t.failure] == [
        FailureReason.UNMASKING_FAILED]
    assert c.round_id == 2


@pytest.mark.parametrize("phase_ends, failing_phase", [(0, Phase.SUM), (1, Phase.UPDATE),
                                                       (2, Phase.SUM2)])
def test_each_phase_times_out_into_a_new_round(phase_ends, failing_phase):
    c = Coordinator(settings(time=(2.0, 7.0)), 0.0, keygen=keygen())
    if phase_ends >= 1:
        (s,) = eligible("sum", c, 1)
        _one(c, sum_payload(s, c)[0], s, 0.0)
        c.tick(2.0)
    if phase_ends >= 2:
        for k in eligible("update", c, 3):
            _one(c, update_payload(k, c, np.zeros(LENGTH, np.float32))[0], k, 2.0)
        c.tick(4.0)
    assert c.phase is failing_phase
    start = c.state.phase_start
    c.take_transitions()
    c.tick(start + 6.999)
    assert c.phase is failing_phase and c.round_id == 1
    c.tick(start + 7.0)
    assert (c.phase, c.round_id) == (Phase.SUM, 2)
    assert c.sums() is None and c.state.seed_dict == {} and c.state.aggregation is None
    assert [(t.source, t.failure) for t in c.take_transitions() if t.failure] == [
        (failing_phase, FailureReason.PHASE_TIMEOUT)]


def test_time_is_an_input_and_host_errors_raise():
    c = Coordinator(settings(), 10.0, keygen=keygen())
    for bad in (float("nan"), float("inf"), "1", True, None):
        with pytest.raises(InvalidArgument):
            c.tick(bad)
    with pytest.raises(PetStateError):
        c.tick(9.0)
    with pytest.raises(InvalidArgument):
        c.handle("not bytes", 10.0)
    with pytest.raises(InvalidArgument):
        Coordinator(settings(), 0.0, keygen=lambda: b"key")
    with pytest.raises(InvalidArgument):
        Coordinator({"sum": {}}, 0.0)


def test_shutdown_discards_everything_after():
    c = Coordinator(settings(), 0.0, keygen=keygen())
    (k,) = eligible("sum", c, 1)
    c.shutdown(1.0)
    assert c.phase is Phase.SHUTDOWN
    assert _one(c, sum_payload(k, c)[0], k, 2.0) == Discarded(Reason.SHUT_DOWN)
    c.tick(1e6)
    assert c.phase is Phase.SHUTDOWN and c.round_id == 1
    restored = Coordinator.restore(c.state_bytes(), settings())
    assert restored.phase is Phase.SHUTDOWN


def test_metrics_count_outcomes_per_round_phase_and_reason():
    c = Coordinator(settings(), 0.0, keygen=keygen())
    (a,) = eligible("sum", c, 1)
    (u,) = eligible("update", c, 1)
    _one(c, sum_payload(a, c)[0], a, 0.0)
    _one(c, sum_payload(a, c)[0], a, 0.0)
    _one(c, sum_payload(u, c)[0], u, 0.0)
    c.handle(b"garbage", 0.0)
    m = c.metrics
    assert m.count("accepted") == 1 and m.count("rejected") == 3
    assert m.count("rejected", reason=Reason.DUPLICATE_PARTICIPANT, phase=Phase.SUM) == 1
    assert m.count("rejected", reason=Reason.NOT_SUM_ELIGIBLE, round_id=1) == 1
    assert m.count("rejected", reason=Reason.UNDECRYPTABLE) == 1
    assert m.count("rejected", phase=Phase.UPDATE) == 0 and m.count("accepted", round_id=2) == 0
    assert m.as_dict()[(1, "Sum", "accepted", None)] == 1


def test_state_bytes_restore_mid_round_and_continue_identically():
    weights = np.random.default_rng(4).uniform(-1, 1, (3, LENGTH)).astype(np.float32)
    c = Coordinator(settings(), 0.0, keygen=keygen())
    summers, seeds = _to_sum2(c, 2, weights)
    data = c.state_bytes()
    twin = Coordinator.restore(data, settings(), keygen=keygen(b"other"))
    assert twin.state_bytes() == data
    assert twin.phase is Phase.SUM2 and twin.seeds_for(summers[0].public) == c.seeds_for(
        summers[0].public)
    for coord in (c, twin):
        for k in summers:
            _one(coord, sum2_payload(k, coord, mask_of(seeds, coord)), k, 4.0)
        coord.tick(6.0)
    assert np.array_equal(c.global_model(), twin.global_model())
    assert c.round_id == twin.round_id == 2


def test_restore_refuses_other_settings_and_bad_bytes():
    c = Coordinator(settings(), 0.0, keygen=keygen())
    data = c.state_bytes()
    with pytest.raises(PetStateError):
        Coordinator.restore(data, settings(sum_prob=0.3))
    for bad in (b"", b"{}", b"[1]", b"\xff", data[:-1], data.replace(b'"Sum"', b'"Idle"'),
                data.replace(b'"round_id":1', b'"round_id":0'),
                data.replace(b'"aggregate":null', b'"aggregate":{"nb_models":0,"object":null}'),
                data.replace(b'"now":0.0', b'"now":-1.0'),
                data.replace(b'"now":0.0', b'"now":NaN'),
                data.replace(b'"seed":"', b'"seed":"00'),
                data.replace(b'"format":"bbjax.pet.coordinator/1"', b'"format":"x"'),
                data[:-1] + b',"extra":1}'):
        with pytest.raises(PetDecodeError):
            Coordinator.restore(bad, settings())
    with pytest.raises(PetDecodeError):
        Coordinator.restore("text", settings())


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_restore_of_damaged_state_bytes_is_total(data):
    weights = np.zeros((3, LENGTH), np.float32)
    c = _FUZZ.get("c")
    if c is None:
        c = Coordinator(settings(), 0.0, keygen=keygen())
        _to_sum2(c, 1, weights)
        _FUZZ["c"] = c
    raw = bytearray(c.state_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        restored = Coordinator.restore(bytes(raw), settings())
    except PetDecodeError:
        return
    except PetStateError:  # the settings digest was hit
        return
    assert restored.phase is Phase.SUM2


_FUZZ: dict = {}


def _in_update(**overrides):
    c = Coordinator(settings(**overrides), 0.0, keygen=keygen(b"update"))
    for k in eligible("sum", c, 2, label=b"u-sum"):
        _one(c, sum_payload(k, c)[0], k, 0.0)
    c.tick(2.0)
    assert c.phase is Phase.UPDATE
    return c


def test_multipart_buffers_are_bounded_per_phase():
    c = _in_update(update_count=(3, 3))
    pk = c.round_params().pk
    firsts = []
    for k in eligible("update", c, 4, label=b"chunks"):
        payload, _ = update_payload(k, c, np.zeros(LENGTH, np.float32))
        chunks = encode_messages(payload, k, pk, 300)
        firsts.append((seal_message(chunks[0], pk), chunks))
    for data, _ in firsts[:3]:
        assert c.handle(data, 2.0) == Buffered(Tag.UPDATE)
    before = c.state_bytes()
    outcome = c.handle(firsts[3][0], 2.0)
    assert outcome == Discarded(Reason.MULTIPART_FULL, outcome.detail)
    assert c.state_bytes() == before
    assert c.metrics.count("buffered", phase=Phase.UPDATE) == 3
    for chunk in firsts[0][1][1:]:  # a pending message still completes
        outcome = c.handle(seal_message(chunk, pk), 2.0)
    assert outcome == Accepted(Tag.UPDATE)


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_messages_are_refused_and_change_nothing(data):
    if "update" not in _FUZZ:
        c = _in_update()
        (k,) = eligible("update", c, 1, label=b"fuzz-update")
        payload, _ = update_payload(k, c, np.zeros(LENGTH, np.float32))
        (plain,) = encode_messages(payload, k, c.round_params().pk, None)
        _FUZZ["update"] = (c, plain)
    c, plain = _FUZZ["update"]
    raw = bytearray(plain)
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        cut = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:cut] + data.draw(st.binary(max_size=20))
    assume(bytes(raw) != plain)
    before = c.state_bytes()
    outcome = c.handle(seal_message(bytes(raw), c.round_params().pk), 2.0)
    assert isinstance(outcome, (Rejected, Discarded)), outcome
    assert c.state_bytes() == before
