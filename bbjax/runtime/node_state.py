"""A Node as two values: its :class:`NodeContext` (what install fixed: peer, config, ports,
jitted steps) and its :class:`NodeState` (everything it changes as it runs).

Each NodeState field declares its kind (:mod:`bbjax.runtime.state_codec`) where it is
defined; :func:`state_to_bytes` and :func:`state_from_bytes` derive the byte form from those
declarations, and reading checks every value against the NodeContext of the installed node.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

import jax
import jax.numpy as jnp
import numpy as np

from bbjax._checks import check_count
from bbjax.errors import BbjaxError, InvalidArgument, SnapshotError
from bbjax.runtime import state_codec as codec
from bbjax.runtime.envelope import DEFAULT_LIMITS, Limits
from bbjax.runtime.events import (
    AppOutput,
    Event,
    PeerDown,
    Rejected,
    RejectKind,
    Unsendable,
)
from bbjax.runtime.fifo import Queue
from bbjax.runtime.peer_health import PeerHealth
from bbjax.runtime.state_codec import (
    TENSOR,
    TEXT,
    Arrays,
    Blob,
    Int,
    Kind,
    Map,
    Member,
    Optional,
    Reader,
    Record,
    Seq,
    Tagged,
    Writer,
    encoded_as,
)
from bbjax.runtime.tensor_codec import type_hash

if TYPE_CHECKING:
    from bbjax.compiler.step import PartitionStep

MAX_PEER_ID = 2**31 - 1  # peer ids are int32 graph inputs (``peers.<class>``)
STATE_MAGIC = b"BBNS"
STATE_FORMAT = 1
_MAX_I64 = 2**63 - 1


def parse_peer_id(text: str) -> int | None:
    """The peer id ``text`` spells (canonical ASCII decimal in [0, MAX_PEER_ID]), or None."""
    value = parse_decimal(text, len(str(MAX_PEER_ID)))
    return value if value is not None and value <= MAX_PEER_ID else None


def parse_decimal(text: str, max_digits: int) -> int | None:
    """``int(text)`` if ``text`` is 1 to ``max_digits`` ASCII digits without a leading zero."""
    if (0 < len(text) <= max_digits and text.isascii() and text.isdigit()
            and (text == "0" or text[0] != "0")):
        return int(text)
    return None


def check_peer_id(name: str, value: Any) -> int:
    """``value`` as a peer id; :class:`InvalidArgument` unless an integer in
    [0, MAX_PEER_ID]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value <= MAX_PEER_ID:
        raise InvalidArgument(f"{name} must be a peer id, an integer in [0, {MAX_PEER_ID}], "
                              f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class NodeConfig:
    """A node's view of the world: peer ids per class (distinct, in [0, MAX_PEER_ID]),
    inputs, caps (each an integer >= 1). Raises :class:`InvalidArgument` otherwise."""

    peers: Mapping[str, Sequence[int]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    max_inbound: int = 1024       # envelopes accepted by deliver and not yet polled
    max_pending: int = 1024       # decoded messages per port not yet consumed
    dedup_window: int = 8192      # digests of recently accepted envelopes

    def __post_init__(self) -> None:
        if not isinstance(self.limits, Limits):
            raise InvalidArgument(f"NodeConfig.limits must be a Limits, "
                                  f"got {type(self.limits).__name__}")
        for name in ("max_inbound", "max_pending", "dedup_window"):
            check_count(f"NodeConfig.{name}", getattr(self, name))
        peers: dict[str, tuple[int, ...]] = {}
        for cls, ids in dict(self.peers).items():
            if not isinstance(cls, str):
                raise InvalidArgument(f"NodeConfig.peers keys must be class names, got {cls!r}")
            try:
                entries = list(ids)
            except TypeError:
                raise InvalidArgument(f"NodeConfig.peers[{cls!r}] must be a sequence of peer "
                                      f"ids, got {ids!r}") from None
            peers[cls] = tuple(check_peer_id(f"NodeConfig.peers[{cls!r}] entry", p)
                               for p in entries)
            if len(set(peers[cls])) != len(peers[cls]):
                raise InvalidArgument(f"NodeConfig.peers[{cls!r}] repeats a peer id: "
                                      f"{list(peers[cls])}")
        object.__setattr__(self, "peers", peers)


@dataclass(frozen=True)
class PortSpec:
    """The arrays one message on a receive port carries; on a gather port, one sender's
    (the round is stacked over ``stacked_over``, the sender class)."""

    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]
    hashes: tuple[int, ...]
    stacked_over: str | None = None

    def queued(self, senders: int) -> list[tuple[np.dtype, tuple[int, ...]]]:
        """(dtype, shape) of each array of a queued message: for a gather, the arrays
        stacked over ``senders`` and the bool arrival mask."""
        if self.stacked_over is None:
            return list(zip(self.dtypes, self.shapes))
        return [*((d, (senders, *s)) for d, s in zip(self.dtypes, self.shapes)),
                (np.dtype(bool), (senders,))]


def port_spec(values: Sequence[Any], stacked_over: str | None = None) -> PortSpec:
    """The arrays one message of a receive port carries (for a gather: one sender's), from
    the receive's :class:`bbjax.compiler.program.TensorType` values of fixed shapes."""
    dtypes = [np.dtype(jax.dtypes.canonicalize_dtype(v.dtype)) for v in values]
    shapes = [tuple(v.shape) for v in values]
    return PortSpec(tuple(dtypes), tuple(shapes),
                    tuple(type_hash(d, s) for d, s in zip(dtypes, shapes)), stacked_over)


@dataclass(frozen=True)
class Held:
    """An outbound envelope not yet shipped. It times out ``deadline_ns`` after it was first
    offered to the host (``expiry_ns``, set then); with no deadline (None), never."""

    peer: int
    data: bytes
    ports: tuple[str, ...]
    deadline_ns: int | None
    expiry_ns: int | None = None


class SlotTemplate(Kind):
    """The structure, dtypes and shapes of one slot's state (reads a state of exactly
    these; a leaf installed as a jax array is read back as one)."""

    def __init__(self, state: Any):
        leaves, self.treedef = jax.tree.flatten(state)
        self.types = tuple(_type_of(leaf) for leaf in leaves)
        self.on_device = tuple(isinstance(leaf, jax.Array) for leaf in leaves)

    def write(self, out: Writer, value: Any, where: str) -> None:
        LEAVES.write(out, value, where)

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        arrays = Arrays(self.types).read(inp, ctx, where)
        return jax.tree.unflatten(self.treedef, [jnp.asarray(a) if device else a
                                                 for a, device in zip(arrays, self.on_device)])


def _type_of(leaf: Any) -> tuple[np.dtype, tuple[int, ...]]:
    if isinstance(leaf, jax.Array | np.ndarray):
        return np.dtype(leaf.dtype), tuple(leaf.shape)
    array = np.asarray(leaf)
    return array.dtype, array.shape


class _Leaves(Kind):
    """A pytree written as its leaves, read back as a tuple of them (a
    :class:`SlotTemplate` reads the pytree itself)."""

    def write(self, out: Writer, value: Any, where: str) -> None:
        Seq(TENSOR).write(out, jax.tree.leaves(value), where)

    def read(self, inp: Reader, ctx: Any, where: str) -> tuple[np.ndarray, ...]:
        return Seq(TENSOR).read(inp, ctx, where)


LEAVES = _Leaves()


@dataclass(frozen=True, eq=False)
class NodeContext:
    """What a Node's transitions read and never change: its peer id, config, port specs,
    partition steps (``steps``, then ``bootstraps``), each slot's :class:`SlotTemplate`,
    the graph inputs and a jitted runner per target. Made by :meth:`of`."""

    peer: int
    config: NodeConfig
    port_specs: Mapping[str, PortSpec]
    steps: tuple[PartitionStep, ...]
    bootstraps: tuple[PartitionStep, ...]
    slots: Mapping[str, SlotTemplate]
    inputs: Mapping[str, Any]
    runners: Mapping[str, Callable]

    @classmethod
    def of(cls, peer: int, steps: Sequence[PartitionStep], states: Mapping[str, Any],
           config: NodeConfig, port_specs: Mapping[str, PortSpec]) -> NodeContext:
        """The context of a node for ``peer`` running ``steps`` on slot ``states``."""
        inputs = {f"peers.{c}": np.asarray(ids, np.int32) for c, ids in config.peers.items()}
        inputs.update(config.inputs)
        return cls(check_peer_id("peer", peer), config, dict(port_specs), tuple(steps), (),
                   {s: SlotTemplate(v) for s, v in states.items()}, inputs,
                   {s.target: jax.jit(s.__call__) for s in steps})

    def with_bootstrap(self, step: PartitionStep) -> NodeContext:
        """This context with bootstrap partition ``step`` (which may only send)."""
        if step.receives:
            raise BbjaxError(f"bootstrap partition {step.target!r} receives messages; "
                             "bootstraps may only send")
        return dataclasses.replace(self, bootstraps=(*self.bootstraps, step),
                                   runners={step.target: jax.jit(step.__call__), **self.runners})

    def step(self, target: str) -> PartitionStep:
        """The installed or bootstrap partition ``target``."""
        return self._by_target[target]

    @functools.cached_property
    def _by_target(self) -> dict[str, PartitionStep]:
        return {s.target: s for s in (*self.bootstraps, *self.steps)}

    @functools.cached_property
    def entries(self) -> list[str]:
        """The targets that receive nothing (what :func:`start` schedules)."""
        return [s.target for s in self.steps if not s.receives]

    @functools.cached_property
    def sends(self) -> frozenset[str]:
        """The ports the node's partitions send on."""
        return frozenset(p for s in (*self.steps, *self.bootstraps) for p in s.sends)

    @functools.cached_property
    def gather_ports(self) -> list[str]:
        return [p for p, spec in self.port_specs.items() if spec.stacked_over]

    def senders(self, port: str) -> tuple[int, ...]:
        """The peers gather ``port`` collects from, in stacking order."""
        return self.config.peers[self.port_specs[port].stacked_over]

    def queued(self, port: str) -> list[tuple[np.dtype, tuple[int, ...]]]:
        """(dtype, shape) of each array of a message queued on ``port``."""
        spec = self.port_specs[port]
        return spec.queued(len(self.senders(port)) if spec.stacked_over else 0)


# -- the kinds of the NodeState fields ----------------------------------------------------

_PEER = Int(0, MAX_PEER_ID)
_TIME = Int(-_MAX_I64 - 1, 2 * _MAX_I64 + 1)  # ns on the host clock, offsets added
_MESSAGES = Seq(Seq(TENSOR), into=Queue)


def _arrivals(ctx: NodeContext, port: str) -> Kind:
    """Gather ``port``'s arrivals: sender -> that sender's arrays of the port's types."""
    spec = ctx.port_specs[port]
    arrays = Arrays(tuple(zip(spec.dtypes, spec.shapes)))
    return Map(Member(_PEER, lambda c: c.senders(port), "the gather's senders"), Seq(TENSOR),
               value_of=lambda c, sender: arrays)


class _Digests(Kind):
    """An insertion-ordered set of u64 digests (a dict to None), as one uint64 array."""

    def write(self, out: Writer, value: Any, where: str) -> None:
        TENSOR.write(out, np.fromiter(value, np.uint64, len(value)), where)

    def read(self, inp: Reader, ctx: NodeContext, where: str) -> dict[int, None]:
        array = TENSOR.read(inp, ctx, where)
        if array.dtype != np.uint64 or array.ndim != 1:
            raise SnapshotError(f"{where}: {array.dtype}{list(array.shape)}, expected "
                                "uint64 digests")
        window = ctx.config.dedup_window
        if len(array) > window:
            raise SnapshotError(f"{where}: {len(array)} digests, over dedup_window = {window}")
        seen = dict.fromkeys(array.tolist())
        if len(seen) != len(array):
            raise SnapshotError(f"{where}: a digest appears twice")
        return seen


_SLOTS = Map(TEXT, LEAVES, keys=lambda c: c.slots, value_of=lambda c, slot: c.slots[slot])
_PENDING = Map(TEXT, _MESSAGES, keys=lambda c: c.port_specs,
               value_of=lambda c, port: Seq(Arrays(tuple(c.queued(port))), into=Queue))
_GATHERED = Map(TEXT, Map(_PEER, Seq(TENSOR)), keys=lambda c: c.gather_ports,
                value_of=_arrivals)
_INBOUND = Seq(Blob(lambda c: (c.config.limits.max_envelope_bytes, "max_envelope_bytes")),
               into=Queue, limit=lambda c: (c.config.max_inbound, "max_inbound"))
_HELD = Seq(Record(Held, peer=_PEER, data=Blob(),
                   ports=Seq(Member(TEXT, lambda c: c.sends, "the ports the node sends"),
                             min_size=1),
                   deadline_ns=Optional(Int(1, _MAX_I64)), expiry_ns=Optional(_TIME)),
            into=Queue)
_STARTED = Seq(Member(TEXT, lambda c: c.entries, "the installed entry partitions"),
               into=Queue)
_HEALTH = Record(PeerHealth, failures=Map(_PEER, Int(1, 2**32 - 1)), retry_at=Map(_PEER, _TIME))
_OPTIONAL_TEXT = Optional(TEXT)
_EVENTS = Seq(Tagged(
    output=Record(AppOutput, target=TEXT, name=TEXT, value=TENSOR),
    rejected=Record(Rejected, kind=Member(TEXT, lambda c: get_args(RejectKind), "the kinds"),
                    detail=TEXT, source=_OPTIONAL_TEXT, port=_OPTIONAL_TEXT),
    peer_down=Record(PeerDown, peer=_PEER),
    unsendable=Record(Unsendable, peer=_PEER, ports=Seq(TEXT), detail=TEXT),
), into=Queue)


@dataclass(frozen=True, eq=False)
class NodeState:
    """Everything a Node changes as it runs, as one value: transitions return a new
    NodeState sharing what they did not change and never change one in place (treat its
    dicts as read-only too). Sequences given as lists become :class:`Queue` values.
    Two states are compared by their :func:`state_to_bytes` (``==`` is identity)."""

    # slot -> its component's state
    slots: Mapping[str, Any] = field(metadata=encoded_as(_SLOTS))
    # receive port -> its messages, oldest first
    pending: Mapping[str, Queue[tuple]] = field(metadata=encoded_as(_PENDING))
    # gather port -> sender -> its arrays of the current round
    gathered: Mapping[str, Mapping[int, tuple]] = field(metadata=encoded_as(_GATHERED))
    # delivered envelope bytes, not yet polled
    inbound: Queue[bytes] = field(metadata=encoded_as(_INBOUND), default_factory=Queue)
    # outbound envelopes, not yet shipped
    held: Queue[Held] = field(metadata=encoded_as(_HELD), default_factory=Queue)
    # digests of the accepted envelopes (the dedup window), oldest first
    seen: Mapping[int, None] = field(metadata=encoded_as(_Digests()), default_factory=dict)
    # entry targets to run at the next poll
    started: Queue[str] = field(metadata=encoded_as(_STARTED), default_factory=Queue)
    # the correlation of the last send
    sequence: int = field(metadata=encoded_as(Int(0, 2**64 - 1)), default=0)
    # backoff and failures of the peers sent to
    health: PeerHealth = field(metadata=encoded_as(_HEALTH), default_factory=PeerHealth)
    # what the next poll returns first
    events: Queue[Event] = field(metadata=encoded_as(_EVENTS), default_factory=Queue)

    def __post_init__(self) -> None:
        for name in ("inbound", "held", "started", "events"):
            if not isinstance(getattr(self, name), Queue):
                object.__setattr__(self, name, Queue(getattr(self, name)))
        if not all(isinstance(q, Queue) for q in self.pending.values()):
            object.__setattr__(self, "pending", {p: q if isinstance(q, Queue) else Queue(q)
                                                 for p, q in self.pending.items()})


def initial_state(ctx: NodeContext, slots: Mapping[str, Any]) -> NodeState:
    """A node's state at install: ``slots`` and nothing queued."""
    return NodeState(slots=dict(slots), pending={p: Queue() for p in ctx.port_specs},
                     gathered={p: {} for p in ctx.gather_ports})


def state_to_bytes(state: NodeState) -> bytes:
    """The bytes of ``state`` (format ``STATE_FORMAT``; the same state gives the same
    bytes); :class:`SnapshotError` naming the field for a value the format cannot hold (an
    array of an unsupported dtype or over 4 GiB)."""
    return codec.to_bytes(state, magic=STATE_MAGIC, version=STATE_FORMAT, where="state")


def state_from_bytes(data: bytes, ctx: NodeContext) -> NodeState:
    """The state whose :func:`state_to_bytes` are ``data``, each field checked against the
    node of ``ctx`` (slots, ports, senders, caps); :class:`SnapshotError` for any other
    bytes, naming the field at fault."""
    return codec.from_bytes(NodeState, data, ctx, magic=STATE_MAGIC, version=STATE_FORMAT,
                            where="state")
