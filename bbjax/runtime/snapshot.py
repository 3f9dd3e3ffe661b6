"""Node snapshots: a Node's artifact, targets, config and :class:`NodeState` as one zip
archive of stored members with fixed timestamps, so one node always gives the same bytes.

Members: ``meta.json`` (UTF-8 JSON: ``format``, ``peer``, ``targets``, ``config`` and
``state``, each :class:`NodeState` field's scalars and counts), ``model.onnx`` (the compiled
artifact), arrays in the tensor wire format (``docs/envelope.md``) — ``input/<k>``,
``slots/<slot>/<i>``, ``pending/<port>/<k>/<i>``, ``gathered/<port>/<peer>/<i>``,
``events/<k>`` and ``seen`` — and envelope bytes as they are, ``inbound/<k>`` and
``held/<k>``. :func:`load` re-installs the artifact and checks every member and meta field
against the installed node (each state leaf's structure, dtype and shape, each message
against its port) before keeping anything; whatever does not fit raises
:class:`~bbjax.errors.SnapshotError` naming the member or field.
"""

from __future__ import annotations

import dataclasses
import io
import json
import lzma
import reprlib
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any, get_args

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from bbjax.compiler import Compiled
from bbjax.errors import BbjaxError, SnapshotError, TensorDecodeError, TensorEncodeError
from bbjax.runtime.envelope import Limits
from bbjax.runtime.node import (
    MAX_PEER_ID,
    AppOutput,
    Held,
    Node,
    NodeConfig,
    NodeState,
    PeerDown,
    Rejected,
    RejectKind,
    parse_peer_id,
)
from bbjax.runtime.peer_health import PeerHealth
from bbjax.runtime.tensor_codec import decode_tensor, encode_tensor

FORMAT = 2
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: members carry no real time
# every tensor the format can carry (up to 4 GiB, rank 255)
_TENSORS = Limits(max_fill_bytes=2**32 - 1, max_tensor_rank=255)
# what zipfile raises on a corrupted archive: bad structure, an unsupported method or
# flag, a failed CRC or an inconsistent size
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               ValueError, OSError, EOFError, struct.error, zlib.error, lzma.LZMAError)
_MAX_I64 = 2**63 - 1


def dump(node: Node) -> bytes:
    """The snapshot bytes of ``node``."""
    members: dict[str, bytes] = {}

    def tensor(name: str, value: Any) -> None:
        try:
            members[name] = encode_tensor(np.asarray(value), limits=_TENSORS)
        except TensorEncodeError as exc:
            raise SnapshotError(f"{name}: cannot be saved: {exc}") from exc

    config, state = node.config, node.state
    for k, value in enumerate(config.inputs.values()):
        tensor(f"input/{k}", value)
    for slot, value in state.slots.items():
        for i, leaf in enumerate(jax.tree.leaves(value)):
            tensor(f"slots/{slot}/{i}", leaf)
    for port, queue in state.pending.items():
        for k, message in enumerate(queue):
            for i, leaf in enumerate(message):
                tensor(f"pending/{port}/{k}/{i}", leaf)
    for port, by_sender in state.gathered.items():
        for sender, leaves in by_sender.items():
            for i, leaf in enumerate(leaves):
                tensor(f"gathered/{port}/{sender}/{i}", leaf)
    for k, data in enumerate(state.inbound):
        members[f"inbound/{k}"] = data
    for k, held in enumerate(state.held):
        members[f"held/{k}"] = held.data
    tensor("seen", np.array(list(state.seen), np.uint64))
    events = []
    for k, event in enumerate(state.events):
        if isinstance(event, AppOutput):
            tensor(f"events/{k}", event.value)
            events.append({"output": {"target": event.target, "name": event.name}})
        elif isinstance(event, PeerDown):
            events.append({"peer_down": {"peer": event.peer}})
        else:  # a Rejected
            events.append({"rejected": dataclasses.asdict(event)})
    meta = {
        "format": FORMAT, "peer": node.peer, "targets": [s.target for s in node.steps],
        "config": {
            "peers": {c: list(ids) for c, ids in config.peers.items()},
            "inputs": list(config.inputs), "limits": dataclasses.asdict(config.limits),
            "max_inbound": config.max_inbound, "max_pending": config.max_pending,
            "dedup_window": config.dedup_window},
        "state": {
            "slots": {s: len(jax.tree.leaves(v)) for s, v in state.slots.items()},
            "pending": {p: len(q) for p, q in state.pending.items()},
            "gathered": {p: sorted(g) for p, g in state.gathered.items()},
            "inbound": len(state.inbound),
            "held": [{"peer": h.peer, "ports": list(h.ports), "deadline_ns": h.deadline_ns,
                      "expiry_ns": h.expiry_ns} for h in state.held],
            "seen": len(state.seen), "started": list(state.started),
            "sequence": state.sequence,
            "health": {"failures": {str(p): n for p, n in sorted(state.health.failures.items())},
                       "retry_at": {str(p): t for p, t in sorted(state.health.retry_at.items())}},
            "events": events},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        head = [("meta.json", json.dumps(meta, sort_keys=True).encode()),
                ("model.onnx", node.compiled.model.SerializeToString())]
        for name, data in head + sorted(members.items()):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.create_system = 3
            archive.writestr(info, data)
    return buffer.getvalue()


def load(data: bytes, bindings: Mapping[str, Any]) -> Node:
    """The node whose snapshot ``data`` is, installed with ``bindings``; raises
    :class:`SnapshotError` for anything else."""
    from bbjax.runtime.install import install
    archive = _Archive(data)
    meta = _meta(_json(archive.blob("meta.json")), "meta")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(archive.blob("model.onnx"))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise SnapshotError(f"model.onnx: not an ONNX model: {exc}") from exc
    _check_strings(model, "model.onnx")
    given = meta["config"]
    inputs = {name: archive.tensor(f"input/{k}") for k, name in enumerate(given["inputs"])}
    if len(inputs) != len(given["inputs"]):
        raise SnapshotError(f"meta.config.inputs repeats a name: {_show(given['inputs'])}")
    try:
        config = NodeConfig(peers=given["peers"], inputs=inputs,
                            limits=Limits(**given["limits"]), max_inbound=given["max_inbound"],
                            max_pending=given["max_pending"],
                            dedup_window=given["dedup_window"])
    except BbjaxError as exc:
        raise SnapshotError(f"meta.config: {exc}") from exc
    try:
        node = install(meta["peer"], Compiled(model), meta["targets"], bindings, config)
    except BbjaxError as exc:
        raise SnapshotError(f"the snapshot's artifact does not install with these bindings: "
                            f"{type(exc).__name__}: {exc}") from exc
    fields = meta["state"]
    state = NodeState(
        slots=_slots(archive, fields["slots"], node.state.slots),
        pending=_pending(archive, fields["pending"], node),
        gathered=_gathered(archive, fields["gathered"], node),
        inbound=_inbound(archive, fields["inbound"], config),
        held=_held(archive, fields["held"], node),
        seen=_seen(archive, fields["seen"], config),
        started=_started(fields["started"], node),
        sequence=fields["sequence"],
        health=_health(fields["health"]),
        events=_events(archive, fields["events"]))
    archive.check_all_read()
    node.state = state
    return node


# -- NodeState fields ---------------------------------------------------------------------


def _slots(archive: _Archive, counts: dict[str, int], fresh: dict[str, Any]) -> dict[str, Any]:
    """Each slot's state, leaf by leaf the installed component's structure, dtypes, shapes."""
    if sorted(counts) != sorted(fresh):
        raise SnapshotError(f"meta.state.slots: the snapshot has slots {sorted(counts)}, the "
                            f"installed partitions {sorted(fresh)}")
    slots = {}
    for slot, value in fresh.items():
        leaves, treedef = jax.tree.flatten(value)
        if counts[slot] != len(leaves):
            raise SnapshotError(f"meta.state.slots[{slot!r}]: {counts[slot]} state arrays, the "
                                f"bound component has {len(leaves)}")
        restored = []
        for i, leaf in enumerate(leaves):
            array = archive.tensor(f"slots/{slot}/{i}", *_type_of(leaf))
            restored.append(jnp.asarray(array) if isinstance(leaf, jax.Array) else array)
        slots[slot] = jax.tree.unflatten(treedef, restored)
    return slots


def _pending(archive: _Archive, counts: dict[str, int], node: Node) -> dict[str, list]:
    if sorted(counts) != sorted(node.state.pending):
        raise SnapshotError(f"meta.state.pending: the snapshot has ports {sorted(counts)}, the "
                            f"installed partitions receive {sorted(node.state.pending)}")
    pending = {}
    for port in node.state.pending:
        spec = node.port_specs[port]
        senders = len(node.config.peers[spec.stacked_over]) if spec.stacked_over else 0
        types = spec.queued(senders)
        pending[port] = [[archive.tensor(f"pending/{port}/{k}/{i}", *t)
                          for i, t in enumerate(types)] for k in range(counts[port])]
    return pending


def _gathered(archive: _Archive, arrived: dict[str, list[int]],
              node: Node) -> dict[str, dict[int, list]]:
    if sorted(arrived) != sorted(node.state.gathered):
        raise SnapshotError(f"meta.state.gathered: the snapshot has ports {sorted(arrived)}, "
                            f"the installed gathers are {sorted(node.state.gathered)}")
    gathered = {}
    for port in node.state.gathered:
        spec = node.port_specs[port]
        senders = node.config.peers[spec.stacked_over]
        if len(set(arrived[port])) != len(arrived[port]) or not set(arrived[port]) <= set(senders):
            raise SnapshotError(f"meta.state.gathered[{port!r}]: {_show(arrived[port])} are not "
                                f"distinct senders of class {spec.stacked_over!r} {list(senders)}")
        gathered[port] = {sender: [archive.tensor(f"gathered/{port}/{sender}/{i}", *t)
                                   for i, t in enumerate(zip(spec.dtypes, spec.shapes))]
                          for sender in arrived[port]}
    return gathered


def _inbound(archive: _Archive, count: int, config: NodeConfig) -> list[bytes]:
    if count > config.max_inbound:
        raise SnapshotError(f"meta.state.inbound: {count} envelopes, over max_inbound = "
                            f"{config.max_inbound}")
    inbound = [archive.blob(f"inbound/{k}") for k in range(count)]
    cap = config.limits.max_envelope_bytes
    for k, data in enumerate(inbound):
        if len(data) > cap:
            raise SnapshotError(f"inbound/{k}: {len(data)} bytes, over max_envelope_bytes = {cap}")
    return inbound


def _held(archive: _Archive, entries: list[dict], node: Node) -> list[Held]:
    sends = {p for step in node.steps for p in step.sends}
    held = []
    for k, entry in enumerate(entries):
        if not entry["ports"] or not set(entry["ports"]) <= sends:
            raise SnapshotError(f"meta.state.held[{k}].ports: {_show(entry['ports'])} are not "
                                f"ports the installed partitions send ({sorted(sends)})")
        held.append(Held(entry["peer"], archive.blob(f"held/{k}"), tuple(entry["ports"]),
                         entry["deadline_ns"], entry["expiry_ns"]))
    return held


def _seen(archive: _Archive, count: int, config: NodeConfig) -> dict[int, None]:
    if count > config.dedup_window:
        raise SnapshotError(f"meta.state.seen: {count} digests, over dedup_window = "
                            f"{config.dedup_window}")
    digests = archive.tensor("seen", np.dtype(np.uint64), (count,)).tolist()
    seen = dict.fromkeys(digests)
    if len(seen) != count:
        raise SnapshotError("seen: a digest appears twice")
    return seen


def _started(targets: list[str], node: Node) -> list[str]:
    entries = [s.target for s in node.steps if not s.receives]
    unknown = [t for t in targets if t not in entries]
    if unknown:
        raise SnapshotError(f"meta.state.started: {_show(unknown)} are not installed entry "
                            f"partitions ({entries})")
    return targets


def _health(given: dict[str, dict[str, int]]) -> PeerHealth:
    tables = []
    for name in ("failures", "retry_at"):
        table = {}
        for key, value in given[name].items():
            peer = parse_peer_id(key)
            if peer is None:
                raise SnapshotError(f"meta.state.health.{name}: key {_show(key)} is not a peer id")
            table[peer] = value
        tables.append(table)
    return PeerHealth(*tables)


def _events(archive: _Archive, entries: list[dict]) -> list[Any]:
    events: list[Any] = []
    for k, entry in enumerate(entries):
        (tag, fields), = entry.items()
        if tag == "output":
            events.append(AppOutput(fields["target"], fields["name"],
                                    archive.tensor(f"events/{k}")))
        elif tag == "peer_down":
            events.append(PeerDown(fields["peer"]))
        else:
            events.append(Rejected(**fields))
    return events


def _type_of(leaf: Any) -> tuple[np.dtype, tuple[int, ...]]:
    if isinstance(leaf, jax.Array | np.ndarray):
        return np.dtype(leaf.dtype), tuple(leaf.shape)
    array = np.asarray(leaf)
    return array.dtype, array.shape


# -- the archive --------------------------------------------------------------------------


class _Archive:
    """The members of a zip archive, each read whole (CRC checked) and read at most once."""

    def __init__(self, data: bytes):
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SnapshotError(f"a snapshot is bytes, got {type(data).__name__}")
        try:
            data = bytes(data)  # a released memoryview raises ValueError
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                infos = archive.infolist()
                self._check_infos(infos, len(data))
                self.members = {info.filename: archive.read(info) for info in infos}
        except _ZIP_ERRORS as exc:
            raise SnapshotError(f"not a snapshot archive: {type(exc).__name__}: {exc}") from exc
        self.unread = set(self.members)

    @staticmethod
    def _check_infos(infos: list[zipfile.ZipInfo], size: int) -> None:
        """Sizes before allocating: stored, unencrypted members within the input."""
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise SnapshotError("the archive names a member twice")
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 \
                    or info.file_size != info.compress_size:
                raise SnapshotError(f"member {info.filename!r} is compressed or encrypted")
            total += info.file_size
        if total > size:
            raise SnapshotError(f"the members declare {total} bytes, the archive has {size}")

    def blob(self, name: str) -> bytes:
        if name not in self.unread:
            raise SnapshotError(f"member {name!r} is missing")
        self.unread.discard(name)
        return self.members[name]

    def tensor(self, name: str, dtype: np.dtype | None = None,
               shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Member ``name`` as an array, of ``dtype`` and ``shape`` when given."""
        try:
            array = decode_tensor(self.blob(name), limits=_TENSORS)
        except TensorDecodeError as exc:
            raise SnapshotError(f"{name}: {exc}") from exc
        if dtype is not None and (array.dtype, array.shape) != (dtype, shape):
            raise SnapshotError(f"{name}: {array.dtype}{list(array.shape)}, the installed node "
                                f"holds {dtype}{list(shape)} there")
        return array

    def check_all_read(self) -> None:
        if self.unread:
            raise SnapshotError(f"members {sorted(self.unread)[:8]} belong to nothing the "
                                "installed node holds")


def _check_strings(message: Message, where: str) -> None:
    """Every string field of ``message`` holds UTF-8 text (ONNX's protobuf schema is proto2,
    whose parser hands invalid UTF-8 back as bytes)."""
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else [value]
        inner = f"{where}.{descriptor.name}"
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if not all(isinstance(v, str) for v in values):
                raise SnapshotError(f"{inner}: a string field is not UTF-8 text")
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            for v in values:
                _check_strings(v, inner)


def _json(raw: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise SnapshotError(f"meta.json: an object repeats a key: {_show([k for k, _ in items])}")
        return dict(items)

    def constant(name: str) -> Any:
        raise SnapshotError(f"meta.json: {name} is not a JSON value")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SnapshotError(f"meta.json: not JSON: {exc}") from exc


# -- the meta schema ----------------------------------------------------------------------

_Check = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    return reprlib.repr(value)


def _int(low: int, high: int) -> _Check:
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SnapshotError(f"{where}: expected an integer in [{low}, {high}], "
                                f"got {_show(value)}")
        return value
    return check


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: expected a string, got {_show(value)}")
    return value


def _one_of(*allowed: str) -> _Check:
    def check(value: Any, where: str) -> str:
        if value not in allowed:
            raise SnapshotError(f"{where}: expected one of {list(allowed)}, got {_show(value)}")
        return value
    return check


def _optional(inner: _Check) -> _Check:
    return lambda value, where: None if value is None else inner(value, where)


def _list(item: _Check) -> _Check:
    def check(value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise SnapshotError(f"{where}: expected a list, got {_show(value)}")
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return check


def _map(item: _Check) -> _Check:
    """A JSON object with any keys."""
    def check(value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object, got {_show(value)}")
        return {k: item(v, f"{where}[{k!r}]") for k, v in value.items()}
    return check


def _record(**fields: _Check) -> _Check:
    """A JSON object with exactly these keys."""
    def check(value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object, got {_show(value)}")
        if set(value) != set(fields):
            missing, extra = sorted(set(fields) - set(value)), sorted(set(value) - set(fields))
            raise SnapshotError(f"{where}: missing fields {missing}, unknown fields {extra}")
        return {k: c(value[k], f"{where}.{k}") for k, c in fields.items()}
    return check


def _tagged(**variants: _Check) -> _Check:
    """A JSON object with one key, a variant's name, holding that variant."""
    def check(value: Any, where: str) -> dict:
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in variants:
            raise SnapshotError(f"{where}: expected one of {{{', '.join(variants)}: ...}}, got "
                                f"{_show(value)}")
        (tag, inner), = value.items()
        return {tag: variants[tag](inner, f"{where}.{tag}")}
    return check


def _meta(value: Any, where: str) -> Any:
    """``value`` checked against the meta schema, its format first."""
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        found = value.get("format") if isinstance(value, dict) else None
        raise SnapshotError(f"{where}.format: snapshot format {_show(found)}, this version "
                            f"reads {FORMAT}")
    return _META(value, where)


_PEER = _int(0, MAX_PEER_ID)
_SIZE = _int(0, 2**32 - 1)
_META = _record(
    format=_int(FORMAT, FORMAT), peer=_PEER, targets=_list(_str),
    config=_record(
        peers=_map(_list(_PEER)), inputs=_list(_str),
        limits=_record(**{f.name: _SIZE for f in dataclasses.fields(Limits)}),
        max_inbound=_SIZE, max_pending=_SIZE, dedup_window=_SIZE),
    state=_record(
        slots=_map(_SIZE), pending=_map(_SIZE), gathered=_map(_list(_PEER)), inbound=_SIZE,
        held=_list(_record(peer=_PEER, ports=_list(_str),
                           deadline_ns=_optional(_int(1, _MAX_I64)),
                           expiry_ns=_optional(_int(-_MAX_I64 - 1, 2 * _MAX_I64 + 1)))),
        seen=_SIZE, started=_list(_str), sequence=_int(0, 2**64 - 1),
        health=_record(failures=_map(_int(1, 2**32 - 1)),
                       retry_at=_map(_int(-_MAX_I64 - 1, 2 * _MAX_I64 + 1))),
        events=_list(_tagged(
            output=_record(target=_str, name=_str),
            peer_down=_record(peer=_PEER),
            rejected=_record(kind=_one_of(*get_args(RejectKind)), detail=_str,
                             source=_optional(_str), port=_optional(_str))))),
)
