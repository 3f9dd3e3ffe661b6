"""``OnnxClient``: a peer running an exported client partition on onnxruntime, no JAX.

Driven like :class:`bbjax.runtime.Node`: the host hands inbound envelope bytes to
:meth:`OnnxClient.deliver`, calls :meth:`OnnxClient.poll` and ships the :class:`Outbound`
envelopes it returns. A poll runs the model once for every set of messages, one per receive
port (a partition without receives runs once per :meth:`OnnxClient.start`), feeding the
client's state, its peer sets and inputs, and keeps the new state. Whatever a peer sends,
``deliver`` and ``poll`` never raise: an envelope that does not decode, comes from no peer id
or from this client, names an unknown site, lacks or repeats an array, or carries an array
of another type hash, dtype or shape is one :class:`Rejected` event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from bbjax.errors import EnvelopeError, InvalidArgument, TensorDecodeError
from bbjax.onnxclient import codec

METADATA = "bbjax.client"
FORMAT = 1
MAX_PEER_ID = 2**31 - 1


@dataclass(frozen=True)
class Outbound:
    """Envelope bytes for the host to send to ``peer``."""

    peer: int
    data: bytes


@dataclass(frozen=True)
class AppOutput:
    """A graph output of the partition ``target``."""

    target: str
    name: str
    value: np.ndarray


@dataclass(frozen=True)
class Rejected:
    """Inbound bytes that were not accepted; ``kind`` says why (the kinds of
    :class:`bbjax.runtime.Rejected`), ``detail`` what exactly."""

    kind: str
    detail: str
    source: str | None = None
    port: str | None = None


@dataclass(frozen=True)
class _Port:
    name: str
    arrays: tuple[str, ...]      # graph input (receive) or output (send) names
    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]
    hashes: tuple[int, ...]


class OnnxClient:
    """Peer ``peer`` running the model ``bbjax export-client`` wrote.

    ``peers`` gives the peer ids of each class (``peers.<class>`` inputs), ``inputs`` the
    partition's declared inputs, ``state`` (state input name -> array) the client's state,
    by default the model's stored initial state. Raises :class:`InvalidArgument` for a model
    that is not an exported client, a state leaf or input that is missing or of another
    dtype or shape, or peer ids that are not integers in ``[0, 2**31 - 1]``.
    """

    def __init__(self, model: str | Path | bytes | onnx.ModelProto, peer: int,
                 peers: Mapping[str, Sequence[int]],
                 state: Mapping[str, Any] | None = None,
                 inputs: Mapping[str, Any] | None = None,
                 limits: codec.Limits = codec.DEFAULT_LIMITS, dedup_window: int = 8192):
        proto = _load(model)
        try:
            meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA])
        except (KeyError, ValueError):
            raise InvalidArgument(f"not an exported client model: no {METADATA!r} "
                                  "metadata (write one with bbjax export-client)") from None
        if meta.get("format") != FORMAT:
            raise InvalidArgument(f"client model format {meta.get('format')!r}, this client "
                                  f"reads {FORMAT}")
        self.peer = _peer_id("peer", peer)
        self.peers = {cls: tuple(_peer_id(f"peers[{cls!r}]", p) for p in ids)
                      for cls, ids in peers.items()}
        self.target = meta["partition"]
        self.limits = limits
        self.dedup_window = dedup_window
        self.receives = {r["port"]: _port(r["port"], r["inputs"], r) for r in meta["receives"]}
        self.sends = [(_port(s["port"], s["outputs"], s), s["peers"], s["deadline_ns"])
                      for s in meta["sends"]]
        self.outputs = list(meta["outputs"])
        self._state_out = {o: i for leaves in meta["state"].values()
                           for i, o in zip(leaves["inputs"], leaves["outputs"])}
        types = {v.name: v for v in proto.graph.input}
        stored = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer
                  if t.name in self._state_out.values()}
        graph_inputs = [v for v in proto.graph.input]
        kept = [t for t in proto.graph.initializer if t.name not in stored]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        self.state: dict[str, np.ndarray] = {}
        given = dict(state or {})
        for name in self._state_out.values():
            value = given.pop(name, stored.get(name))
            if value is None:
                raise InvalidArgument(f"state leaf {name!r} has no value: pass state=... "
                                      "(the model stores no initial state)")
            self.state[name] = _check(types[name], value, "state leaf")
        if given:
            raise InvalidArgument(f"state names no leaves of this model: {sorted(given)}")
        self._fixed: dict[str, np.ndarray] = {}
        for cls, ids in self.peers.items():
            self._fixed[f"peers.{cls}"] = np.asarray(ids, np.int32)
        for name, value in (inputs or {}).items():
            self._fixed[name] = np.asarray(value)
        wanted = {v.name for v in graph_inputs} - set(self.state) \
            - {a for p in self.receives.values() for a in p.arrays}
        missing = sorted(wanted - set(self._fixed))
        if missing:
            raise InvalidArgument(f"the model needs inputs {missing} (peer sets come from "
                                  "peers=..., declared inputs from inputs=...)")
        self._fixed = {n: _check(types[n], v, "input") for n, v in self._fixed.items()
                       if n in wanted}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(proto.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._session.get_outputs()]
        self._pending: dict[str, list[list[np.ndarray]]] = {p: [] for p in self.receives}
        self._inbound: list[bytes] = []
        self._seen: dict[bytes, None] = {}
        self._events: list[Any] = []
        self._started = 0
        self._sequence = 0

    # -- host interface -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the model at the next poll (for a partition that receives nothing)."""
        if not self.receives:
            self._started += 1

    def deliver(self, data: bytes) -> bool:
        """Queue inbound envelope bytes for the next poll; ``False`` (and a Rejected event)
        for anything that is not bytes or is over ``limits.max_envelope_bytes``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            self._events.append(Rejected("malformed", f"expected bytes, got "
                                         f"{type(data).__name__}"))
            return False
        data = bytes(data)
        if len(data) > self.limits.max_envelope_bytes:
            self._events.append(Rejected("oversized", f"{len(data)} bytes exceed "
                                         f"Limits.max_envelope_bytes = "
                                         f"{self.limits.max_envelope_bytes}"))
            return False
        self._inbound.append(data)
        return True

    def poll(self) -> list[Any]:
        """Accept what was delivered, run the model for every complete set of messages and
        return the resulting :class:`Outbound`, :class:`AppOutput` and :class:`Rejected`."""
        while self._inbound:
            self._accept(self._inbound.pop(0))
        out: list[Any] = []
        while self._started:
            self._started -= 1
            out += self._run({})
        while self.receives and all(self._pending[p] for p in self.receives):
            out += self._run({p: self._pending[p].pop(0) for p in self.receives})
        events, self._events = self._events, []
        return events + out

    # -- inbound --------------------------------------------------------------------------------

    def _accept(self, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=8).digest()
        if digest in self._seen:
            self._events.append(Rejected("duplicate", f"envelope {digest.hex()} was accepted "
                                         "before"))
            return
        try:
            envelope = codec.decode(data, limits=self.limits)
        except EnvelopeError as exc:
            kind = {"TruncatedEnvelope": "truncated", "OversizedEnvelope": "oversized",
                    "UnsupportedVersion": "wrong_version"}.get(type(exc).__name__, "malformed")
            self._events.append(Rejected(kind, str(exc)))
            return
        checked = self._check(envelope)
        if isinstance(checked, Rejected):
            self._events.append(checked)
            return
        for port, arrays in checked.items():
            self._pending[port].append(arrays)
        self._seen[digest] = None
        if len(self._seen) > self.dedup_window:
            del self._seen[next(iter(self._seen))]

    def _check(self, envelope: codec.Envelope) -> dict[str, list[np.ndarray]] | Rejected:
        source = envelope.source

        def refuse(kind: str, detail: str, port: str | None = None) -> Rejected:
            return Rejected(kind, detail, source, port)

        sender = _parse_peer(source)
        if sender is None:
            return refuse("malformed", f"source {source!r} is not a peer id")
        if sender == self.peer:
            return refuse("from_self", f"the envelope claims to come from this client "
                          f"({sender})")
        fills: dict[str, dict[int, codec.Fill]] = {}
        for fill in envelope.fills:
            port, slash, index = fill.site.rpartition("/")
            if not slash or port not in self.receives:
                return refuse("unexpected_port", f"this client receives no site {fill.site!r}",
                              port if slash else None)
            spec = self.receives[port]
            if not (index.isascii() and index.isdigit() and len(index) <= 5
                    and (index == "0" or index[0] != "0")):
                return refuse("malformed", f"site {fill.site!r}: {index!r} is not an array "
                              "index", port)
            i = int(index)
            if i >= len(spec.arrays):
                return refuse("count_mismatch", f"port {port!r} carries {len(spec.arrays)} "
                              f"arrays, got a fill for array {i}", port)
            if i in fills.setdefault(port, {}):
                return refuse("duplicate_fill", f"site {fill.site!r} is filled twice", port)
            fills[port][i] = fill
        messages = {}
        for port, by_index in fills.items():
            spec = self.receives[port]
            if len(by_index) != len(spec.arrays):
                return refuse("count_mismatch", f"port {port!r} carries {len(spec.arrays)} "
                              f"arrays, got fills for {sorted(by_index)}", port)
            arrays = []
            for i in range(len(spec.arrays)):
                fill, where = by_index[i], f"port {port!r} array {i}"
                if fill.type_hash != spec.hashes[i]:
                    return refuse("type_mismatch", f"{where}: type hash "
                                  f"{fill.type_hash:016x}, expected {spec.hashes[i]:016x}", port)
                try:
                    array = codec.decode_tensor(fill.payload, limits=self.limits)
                except TensorDecodeError as exc:
                    return refuse("malformed", f"{where}: {exc}", port)
                if array.dtype != spec.dtypes[i]:
                    return refuse("type_mismatch", f"{where}: the payload is {array.dtype}, "
                                  f"the port carries {spec.dtypes[i]}", port)
                if array.shape != spec.shapes[i]:
                    return refuse("shape_mismatch", f"{where}: the payload has shape "
                                  f"{list(array.shape)}, the port carries "
                                  f"{list(spec.shapes[i])}", port)
                arrays.append(array)
            messages[port] = arrays
        return messages

    # -- running --------------------------------------------------------------------------------

    def _run(self, inbox: Mapping[str, list[np.ndarray]]) -> list[Any]:
        feed = {**self.state, **self._fixed}
        for port, arrays in inbox.items():
            feed.update(zip(self.receives[port].arrays, arrays))
        values = dict(zip(self._names, self._session.run(self._names, feed)))
        for output, name in self._state_out.items():
            self.state[name] = values[output]
        out: list[Any] = [AppOutput(self.target, n, values[n]) for n in self.outputs]
        batches: dict[int, list[tuple[_Port, int]]] = {}
        for port, peers, deadline in self.sends:
            for peer in np.asarray(values[peers]).reshape(-1).tolist():
                batches.setdefault(int(peer), []).append((port, deadline))
        for peer, ports in batches.items():
            deadlines = [d for _, d in ports if d]
            fills = tuple(codec.Fill(f"{port.name}/{i}", codec.type_hash(a.dtype, a.shape),
                                     codec.encode_tensor(a, limits=self.limits))
                          for port, _ in ports
                          for i, a in enumerate(np.asarray(values[n]) for n in port.arrays))
            self._sequence = self._sequence % (2**64 - 1) + 1
            data = codec.encode(codec.Envelope(str(self.peer), fills, self._sequence,
                                               min(deadlines) if deadlines else 0),
                                limits=self.limits)
            out.append(Outbound(peer, data))
        return out


def _load(model: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto
    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        return onnx.load(str(model))
    except Exception as exc:  # noqa: BLE001 - any unreadable file or bytes
        raise InvalidArgument(f"cannot read the client model: {type(exc).__name__}: "
                              f"{exc}") from None


def _port(name: str, arrays: Sequence[str], meta: Mapping[str, Any]) -> _Port:
    dtypes = tuple(np.dtype(d) for d in meta["dtypes"])
    shapes = tuple(tuple(int(d) for d in s) for s in meta["shapes"])
    return _Port(name, tuple(arrays), dtypes, shapes,
                 tuple(codec.type_hash(d, s) for d, s in zip(dtypes, shapes)))


def _peer_id(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 0 <= value <= MAX_PEER_ID:
        raise InvalidArgument(f"{name} must be a peer id in [0, {MAX_PEER_ID}], got {value!r}")
    return int(value)


def _parse_peer(text: str) -> int | None:
    if (0 < len(text) <= 10 and text.isascii() and text.isdigit()
            and (text == "0" or text[0] != "0") and int(text) <= MAX_PEER_ID):
        return int(text)
    return None


def _check(value_info: onnx.ValueInfoProto, value: Any, what: str) -> np.ndarray:
    tensor = value_info.type.tensor_type
    want = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    array = np.asarray(value)
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if array.dtype != want or array.ndim != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, array.shape)):
        raise InvalidArgument(f"{what} {value_info.name!r} must be {want}{shape}, got "
                              f"{array.dtype}{list(array.shape)}")
    return array
