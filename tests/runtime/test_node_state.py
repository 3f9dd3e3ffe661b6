"""NodeState is a value: the pure transitions never change the state they are given, a Node
is exactly its transitions, and the state's bytes put back continue the node; bytes whose
content does not fit the installed node are a SnapshotError naming the state field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import numpy as np
import pytest

from bbjax.errors import InvalidArgument, SnapshotError
from bbjax.runtime import transitions
from bbjax.runtime.envelope import DEFAULT_LIMITS
from bbjax.runtime.events import Rejected
from bbjax.runtime.fifo import Queue
from bbjax.runtime.node_state import (
    Held,
    NodeContext,
    NodeState,
    state_from_bytes,
    state_to_bytes,
)
from bbjax.runtime.peer_health import PeerHealth
from bbjax.runtime.state_codec import (
    TENSOR,
    TEXT,
    Blob,
    Int,
    Map,
    Optional,
    Record,
    Seq,
    Tagged,
)
from tests.runtime.conftest import Case, results
from tests.runtime.state_bytes import forge, reseal
from tests.runtime.strategies import members


def _steps(case: Case, ctx: NodeContext, state: NodeState) -> list[tuple[str, Any]]:
    """Drive ``state`` through the mid-round sequence of ``mid_round_snapshots`` with the
    pure transitions: every (what, state bytes, results) on the way."""
    seen = []

    def record(what: str, new: NodeState, out: list | None = None) -> NodeState:
        seen.append((what, state_to_bytes(new), results(out or [])))
        return new

    state, _ = transitions.deliver(ctx, state, case.valid[0])
    state = record("deliver", state)
    state, out = transitions.poll(ctx, state, 0)
    state = record("poll", state, out)
    state = record("failure", transitions.report_send_failure(ctx, state, 1, 0))
    state = record("start", transitions.start(ctx, state))
    state, out = transitions.poll(ctx, state, 0)
    state = record("poll", state, out)
    for data in (case.valid[1], b"not an envelope", None):
        state, _ = transitions.deliver(ctx, state, data)
    state = record("deliver", state)
    state = record("close", transitions.close(ctx, state, "update"))
    state, out = transitions.poll(ctx, state, 10**9)
    record("poll", state, out)
    return seen


def test_a_node_is_exactly_its_pure_transitions(gather_case):
    node = gather_case.reset()
    pure = _steps(gather_case, node.ctx, gather_case.fresh)
    shell = []
    node.deliver(gather_case.valid[0])
    shell.append(("deliver", state_to_bytes(node.state), []))
    shell.append(("poll", None, results(node.poll(now=0.0))))
    node.report_send_failure(1, now=0.0)
    shell.append(("failure", state_to_bytes(node.state), []))
    node.start()
    shell.append(("start", state_to_bytes(node.state), []))
    shell.append(("poll", None, results(node.poll(now=0.0))))
    for data in (gather_case.valid[1], b"not an envelope", None):
        node.deliver(data)
    shell.append(("deliver", state_to_bytes(node.state), []))
    node.close("update")
    shell.append(("close", state_to_bytes(node.state), []))
    shell.append(("poll", None, results(node.poll(now=1.0))))
    final = state_to_bytes(node.state)
    gather_case.reset()
    for (what, data, out), (_, want_data, want_out) in zip(shell, pure):
        assert out == want_out, what
        assert data is None or data == want_data, what
    assert final == pure[-1][1]
    assert any(isinstance(o, tuple) for o in pure[-1][2])  # the closed round ran: outputs


def test_transitions_never_change_the_state_they_are_given(gather_case):
    ctx, fresh = gather_case.node.ctx, gather_case.fresh
    before = state_to_bytes(fresh)
    first = _steps(gather_case, ctx, fresh)
    assert state_to_bytes(fresh) == before
    assert _steps(gather_case, ctx, fresh) == first  # the same state replays the same way
    for index in range(len(first) - 1):  # each intermediate state is still what it was
        state = state_from_bytes(first[index][1], ctx)
        again = state_to_bytes(state)
        transitions.poll(ctx, state, 5)
        transitions.close(ctx, state, "update")
        transitions.report_send_success(ctx, state, 1)
        assert state_to_bytes(state) == again


def test_state_bytes_put_back_continue_exactly_like_the_node(gather_case):
    node = gather_case.reset()
    node.deliver(gather_case.valid[0])
    node.poll(now=0.0)
    node.report_send_failure(2, now=0.0)
    node.start()
    saved = state_to_bytes(node.state)
    restored = state_from_bytes(saved, node.ctx)
    assert state_to_bytes(restored) == saved
    chex.assert_trees_all_equal(restored.slots, node.state.slots)
    live, _ = transitions.deliver(node.ctx, node.state, gather_case.valid[1])
    back, _ = transitions.deliver(node.ctx, restored, gather_case.valid[1])
    (live, a), (back, b) = (transitions.poll(node.ctx, s, 10**8) for s in (live, back))
    assert results(a) == results(b) and len(a) > 2
    assert state_to_bytes(live) == state_to_bytes(back)
    gather_case.reset()


def test_sequences_given_to_a_nodestate_become_queues():
    state = NodeState(slots={}, pending={"p": [(np.zeros(2),)]}, gathered={},
                      inbound=[b"a"], held=[], started=["t"], events=[Rejected("malformed", "")])
    assert all(isinstance(q, Queue) for q in (state.inbound, state.held, state.started,
                                              state.events, state.pending["p"]))
    assert list(state.inbound) == [b"a"] and len(state.pending["p"]) == 1


def test_bad_host_input_to_a_transition_is_invalid_argument(gather_case):
    ctx, fresh = gather_case.node.ctx, gather_case.fresh
    with pytest.raises(InvalidArgument, match="now_ns must be an integer >= 0"):
        transitions.poll(ctx, fresh, -1)
    with pytest.raises(InvalidArgument, match="now_ns must be an integer >= 0"):
        transitions.report_send_failure(ctx, fresh, 1, 0.5)
    with pytest.raises(InvalidArgument, match="peer must be a peer id"):
        transitions.report_send_success(ctx, fresh, -1)
    with pytest.raises(InvalidArgument, match=r"gather port of this node \(\['update'\]\)"):
        transitions.close(ctx, fresh, "global")


# -- state bytes the installed node refuses -----------------------------------------------


@pytest.fixture(scope="module")
def saved(gather_case, snapshots) -> dict[str, NodeState]:
    """The NodeStates of the two mid-round snapshots, read with the installed context."""
    return {which: state_from_bytes(members(data)["state"], gather_case.node.ctx)
            for which, data in snapshots.items()}


def _ctx(case: Case, **config: Any) -> NodeContext:
    """The installed context with ``config`` changed (contexts are values too)."""
    ctx = case.node.ctx
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, **config))


def _leaves_changed(state: NodeState, slot: str, change: Callable) -> NodeState:
    leaves, treedef = jax.tree.flatten(state.slots[slot])
    leaves[0] = change(np.asarray(leaves[0]))
    return dataclasses.replace(state, slots={**state.slots,
                                             slot: jax.tree.unflatten(treedef, leaves)})


def _message_changed(state: NodeState, port: str, change: Callable) -> NodeState:
    message = list(next(iter(state.pending[port])))
    return dataclasses.replace(state, pending={**state.pending, port: Queue([change(message)])})


def _arrival(state: NodeState) -> tuple:
    return next(iter(state.gathered["update"].values()))


class _Pairs(list):
    """Key-value pairs a Map writes as they are, repeats included."""

    def items(self):
        return list(self)


_HELD_ANY_DEADLINE = Seq(Record(Held, peer=Int(0, 9), data=Blob(), ports=Seq(TEXT),
                                deadline_ns=Optional(Int(-9, 9)), expiry_ns=Optional(Int(-9, 9))))
_NARROW_HEALTH = Map(Int(0, 2**40), Int(0, 9))

# (which snapshot, how its state is changed into bytes, the context's config changes, match)
CASES: list[tuple[str, Callable[[NodeState], bytes], dict, str]] = [
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, slots={**s.slots, "extra": np.zeros(1)})), {}, r"state.slots: key 'extra' is not one"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(s, slots={})), {},
     r"state.slots: keys \[.*'model'.*\] of the installed node are missing"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, slots={**s.slots, "model": {"w": np.zeros(3)}})), {},
     r"state.slots\['model'\]: 1 arrays, the installed node holds \d+ there"),
    ("gathered", lambda s: state_to_bytes(_leaves_changed(s, "model",
                                                          lambda a: a.astype(np.float64))), {},
     r"state.slots\['model'\]\[0\]: float64\[.*\], the installed node holds float32"),
    ("gathered", lambda s: state_to_bytes(_leaves_changed(
        s, "model", lambda a: np.zeros((*a.shape, 2), a.dtype))), {},
     r"state.slots\['model'\]\[0\]: float32\[.*, 2\], the installed node holds float32"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, pending={**s.pending, "other": Queue()})), {}, r"state.pending: key 'other' is not"),
    ("pending", lambda s: state_to_bytes(_message_changed(
        s, "update", lambda m: [*m[:-1], np.ones(3, bool)])), {},
     r"state.pending\['update'\]\[0\]\[\d\]: bool\[3\], the installed node holds bool\[2\]"),
    ("pending", lambda s: state_to_bytes(_message_changed(s, "update", lambda m: m[:-1])), {},
     r"state.pending\['update'\]\[0\]: \d arrays, the installed node holds \d there"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, gathered={"update": {3: _arrival(s)}})), {},
     r"state.gathered\['update'\] key: 3 is not one of the gather's senders \[1, 2\]"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, gathered={"update": _Pairs([(1, _arrival(s)), (1, _arrival(s))])})), {},
     r"state.gathered\['update'\]: key 1 appears twice"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, gathered={"update": {1: (*_arrival(s)[:-1], np.zeros(7, np.float32))}})), {},
     r"state.gathered\['update'\]\[1\]\[\d\]: float32\[7\], the installed node holds"),
    ("gathered", state_to_bytes, {"max_inbound": 1},
     r"state.inbound: 2 items, over max_inbound = 1"),
    ("gathered", state_to_bytes, {"limits": dataclasses.replace(DEFAULT_LIMITS,
                                                                max_envelope_bytes=8)},
     r"state.inbound\[\d\]: \d+ bytes, over max_envelope_bytes = 8"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, held=[Held(1, b"x", ("update",), None)])), {},
     r"state.held\[0\].ports\[0\]: 'update' is not one of the ports the node sends"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, held=[Held(1, b"x", (), None)])), {},
     r"state.held\[0\].ports: 0 items, expected at least 1"),
    ("gathered", lambda s: forge(s, held=(_HELD_ANY_DEADLINE, [Held(1, b"x", ("global",), -5)])),
     {},
     r"state.held\[0\].deadline_ns: expected an integer in \[1, "),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(s, seen={1: None, 2: None})),
     {"dedup_window": 1}, r"state.seen: 2 digests, over dedup_window = 1"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(s, seen=[5, 5])), {},
     r"state.seen: a digest appears twice"),
    ("gathered", lambda s: forge(s, seen=(TENSOR, np.zeros(2, np.float32))), {},
     r"state.seen: float32\[2\], expected uint64 digests"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(s, started=["fedavg_server"])), {},
     r"state.started\[0\]: 'fedavg_server' is not one of the installed entry partitions"),
    ("gathered", lambda s: forge(s, sequence=(Int(0, 2**70), 2**64)), {},
     r"state.sequence: expected an integer in \[0, 18446744073709551615\], "
     r"got 18446744073709551616$"),
    ("gathered", lambda s: forge(s, health=(Record(PeerHealth, failures=_NARROW_HEALTH,
                                                   retry_at=_NARROW_HEALTH),
                                            PeerHealth({1: 0}, {}))),
     {}, r"state.health.failures\[1\]: expected an integer in \[1, 4294967295\], got 0"),
    ("gathered", lambda s: forge(s, health=(Record(PeerHealth, failures=_NARROW_HEALTH,
                                                   retry_at=_NARROW_HEALTH),
                                            PeerHealth({2**31: 1}, {}))),
     {}, r"state.health.failures key: expected an integer in \[0, 2147483647\]"),
    ("gathered", lambda s: state_to_bytes(dataclasses.replace(
        s, events=[Rejected("nonsense", "")])), {},
     r"state.events\[0\].rejected.kind: 'nonsense' is not one of the kinds"),
    ("gathered", lambda s: forge(s, events=(Seq(Tagged(shout=Record(Rejected, detail=TEXT))),
                                            [Rejected("malformed", "x")])), {},
     r"state.events\[0\]: variant 'shout', expected one of \['output', 'rejected'"),
    ("gathered", lambda s: forge(s, without=("events",)), {}, r"state: needs 1 bytes, 0 remain"),
    ("gathered", lambda s: forge(s, without=("slots",)), {},
     r"state: expected field 'slots' next, got 'pending'"),
    ("gathered", lambda s: reseal(state_to_bytes(s)[:-4] + b"\x00" + bytes(4)), {},
     r"state: 1 bytes after the last field"),
    ("gathered", lambda s: reseal(b"BBNS\x02\x00" + state_to_bytes(s)[6:]), {},
     r"state: format 2, this version reads 1"),
    ("gathered", lambda s: b"PK\x03\x04" + state_to_bytes(s)[4:], {},
     r"state: starts with b'PK\\x03\\x04', not b'BBNS'"),
    ("gathered", lambda s: state_to_bytes(s)[:-1], {}, r"state: stored CRC32"),
]


@pytest.mark.parametrize(("which", "make", "config", "match"), CASES,
                         ids=[f"{i}-{c[3][:30]}" for i, c in enumerate(CASES)])
def test_state_bytes_that_do_not_fit_the_installed_node_are_refused_naming_the_field(
        gather_case, saved, which, make, config, match):
    data = make(saved[which])
    with pytest.raises(SnapshotError, match=match):
        state_from_bytes(data, _ctx(gather_case, **config))


def test_the_unchanged_states_read_back_with_the_installed_context(gather_case, saved):
    for state in saved.values():
        data = state_to_bytes(state)
        assert state_to_bytes(state_from_bytes(data, gather_case.node.ctx)) == data
        assert len(state.inbound) == 2 and len(state.held) == 1 and len(state.events) == 1


@pytest.mark.parametrize(("change", "match"), [
    (lambda s: dataclasses.replace(s, sequence=2**64), r"state.sequence: cannot be saved"),
    (lambda s: _leaves_changed(s, "model", lambda a: a.astype(np.complex64)),
     r"state.slots\['model'\]\[0\]: cannot be saved: .*unsupported dtype complex64"),
    (lambda s: dataclasses.replace(s, events=["shout"]),
     r"state.events\[0\]: cannot be saved: expected one of"),
])
def test_a_state_the_format_cannot_hold_is_a_snapshot_error_when_saved(saved, change, match):
    with pytest.raises(SnapshotError, match=match):
        state_to_bytes(change(saved["gathered"]))
