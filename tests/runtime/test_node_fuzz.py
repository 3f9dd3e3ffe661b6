"""Whatever bytes arrive, a Node's deliver and poll never raise, every lie is one Rejected
event, and the round's valid messages still give exactly the result they give alone."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bbjax.runtime import Envelope, decode, encode
from bbjax.runtime.node import Rejected
from tests.runtime.strategies import BAD_SOURCES, WIDE_LIMITS, lying_fills, mutations

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIES = settings(FUZZ, max_examples=400)


def _rejected(steps: list) -> list[Rejected]:
    return [s for s in steps if isinstance(s, Rejected)]


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_bytes_never_crash_a_node(client_case, blobs):
    node = client_case.reset()
    for blob in blobs:
        node.deliver(blob)
    steps = node.poll(now=0.0)
    assert all(isinstance(s, Rejected) for s in steps)
    assert len(steps) == len(blobs)


@FUZZ
@given(st.data(), st.sampled_from(["client_case", "gather_case"]))
def test_mutated_envelopes_never_crash_and_the_round_still_runs(cases, data, name):
    case = cases[name]
    node = case.reset()
    mutated = data.draw(mutations(case.valid[0]))
    node.deliver(mutated)
    for valid in case.valid:
        node.deliver(valid)
    steps = node.poll(now=0.0)
    if mutated in case.valid:      # a mutation that restored the bytes: a duplicate
        assert [r.kind for r in _rejected(steps)] == ["duplicate"]
    elif not _rejected(steps):     # a valid envelope after all (e.g. another correlation)
        return
    else:
        assert len(_rejected(steps)) == 1
    case.check_round(steps)


@LIES
@given(st.data(), st.sampled_from(["client_case", "gather_case"]))
def test_lying_fills_are_rejected_and_the_round_still_runs(cases, data, name):
    case = cases[name]
    fills, kinds = data.draw(lying_fills(decode(case.valid[0]).fills))
    own, stranger = str(case.node.peer), "7"
    liars = [own, *BAD_SOURCES] + ([stranger] if name == "gather_case" else [])
    source = data.draw(st.sampled_from(liars)) if data.draw(st.integers(0, 3)) == 0 \
        else case.senders[0]
    if source == stranger:  # the sender is checked once the fills are grouped by port
        kinds = {"unexpected_sender"} | kinds & {"unexpected_port", "malformed",
                                                 "count_mismatch", "duplicate_fill"}
    elif source != case.senders[0]:  # the source is checked first
        kinds = {"from_self"} if source == own else {"malformed"}
    node = case.reset()
    node.deliver(encode(Envelope(source, fills, data.draw(st.integers(0, 2**64 - 1)),
                                 data.draw(st.integers(0, 2**64 - 1))), limits=WIDE_LIMITS))
    for valid in case.valid:
        node.deliver(valid)
    steps = node.poll(now=0.0)
    rejected = _rejected(steps)
    assert len(rejected) == 1 and rejected[0].kind in kinds, (rejected, kinds)
    assert rejected[0].source == source
    event(f"{name}: {rejected[0].kind}")
    case.check_round(steps)
