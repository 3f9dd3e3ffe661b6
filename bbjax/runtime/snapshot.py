"""Node snapshots: a Node's artifact, targets, config and :class:`NodeState` as one zip
archive of stored members with fixed timestamps, so one node always gives the same bytes.

Members: ``meta.json`` (UTF-8 JSON: ``format``, ``peer``, ``targets`` and ``config``),
``model.onnx`` (the compiled artifact), ``input/<k>`` (the config's inputs in the tensor
wire format, ``docs/envelope.md``) and ``state`` (the NodeState's
:func:`~bbjax.runtime.node_state.state_to_bytes`). :func:`load` re-installs the artifact and
checks every member, meta field and state field against the installed node before keeping
anything; whatever does not fit raises :class:`~bbjax.errors.SnapshotError` naming the
member or field.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from bbjax.compiler import Compiled
from bbjax.errors import BbjaxError, SnapshotError, TensorDecodeError, TensorEncodeError
from bbjax.runtime.envelope import Limits
from bbjax.runtime.node_state import (
    MAX_PEER_ID,
    NodeConfig,
    state_from_bytes,
    state_to_bytes,
)
from bbjax.runtime.state_codec import TENSOR_LIMITS
from bbjax.runtime.tensor_codec import decode_tensor, encode_tensor

if TYPE_CHECKING:
    from bbjax.runtime.node import Node

FORMAT = 3  # 2: the state spread over meta.json and per-array members
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: members carry no real time
# what zipfile raises on a corrupted archive: bad structure, an unsupported method or
# flag, a failed CRC or an inconsistent size
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               ValueError, OSError, EOFError, struct.error, zlib.error, lzma.LZMAError)


def dump(node: Node) -> bytes:
    """The snapshot bytes of ``node``; :class:`SnapshotError` naming the member or state
    field that the format cannot hold."""
    config = node.config
    members: dict[str, bytes] = {"state": state_to_bytes(node.state)}
    for k, value in enumerate(config.inputs.values()):
        try:
            members[f"input/{k}"] = encode_tensor(np.asarray(value), limits=TENSOR_LIMITS)
        except TensorEncodeError as exc:
            raise SnapshotError(f"input/{k}: cannot be saved: {exc}") from exc
    meta = {
        "format": FORMAT, "peer": node.peer, "targets": [s.target for s in node.steps],
        "config": {
            "peers": {c: list(ids) for c, ids in config.peers.items()},
            "inputs": list(config.inputs), "limits": dataclasses.asdict(config.limits),
            "max_inbound": config.max_inbound, "max_pending": config.max_pending,
            "dedup_window": config.dedup_window},
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
    from bbjax.runtime.install import (
        install,  # install builds Nodes, which snapshot here
    )
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
    state = state_from_bytes(archive.blob("state"), node.ctx)
    archive.check_all_read()
    node.state = state
    return node


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

    def tensor(self, name: str) -> np.ndarray:
        """Member ``name`` as an array."""
        try:
            return decode_tensor(self.blob(name), limits=TENSOR_LIMITS)
        except TensorDecodeError as exc:
            raise SnapshotError(f"{name}: {exc}") from exc

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
)
