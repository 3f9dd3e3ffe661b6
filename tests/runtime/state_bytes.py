"""Byte surgery on NodeState bytes shared by the state and snapshot tests."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

from bbjax.runtime.node_state import STATE_FORMAT, STATE_MAGIC, NodeState
from bbjax.runtime.state_codec import KIND, Kind, encoded_as, to_bytes


def reseal(data: bytes) -> bytes:
    """State bytes ``data`` with the trailing CRC32 recomputed, so that an edit gets past
    the checksum into the field decoder. Inputs shorter than a checksum come back as they
    are."""
    if len(data) < 4:
        return bytes(data)
    return bytes(data[:-4]) + struct.pack("<I", zlib.crc32(data[:-4]))


def forge(state: NodeState, without: tuple[str, ...] = (),
          **fields: tuple[Kind, Any]) -> bytes:
    """The bytes of ``state`` with each named field written as ``(kind, value)`` instead
    of its declared kind and value, and the fields ``without`` left out: valid framing
    around content the NodeState writer would never produce."""
    specs, values = [], {}
    for f in dataclasses.fields(NodeState):
        if f.name in without:
            continue
        kind, value = fields.get(f.name, (f.metadata[KIND], getattr(state, f.name)))
        specs.append((f.name, Any, dataclasses.field(metadata=encoded_as(kind))))
        values[f.name] = value
    forged = dataclasses.make_dataclass("Forged", specs, frozen=True)
    return to_bytes(forged(**values), magic=STATE_MAGIC, version=STATE_FORMAT, where="state")
