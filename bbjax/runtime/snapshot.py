"""Node snapshots: everything a Node holds, as an ``.npz`` archive of arrays (no pickle).

Arrays: ``model`` (the compiled artifact's bytes), ``meta`` (UTF-8 JSON: peer, targets,
config, sequence, started entry targets, message counts), ``state/<slot>/<i>`` (state
leaves), ``input/<name>``, ``pending/<port>/<k>/<i>`` (accepted messages),
``gathered/<port>/<peer>/<i>`` (a gather round's arrivals so far), ``inbound/<k>``
(envelopes not yet polled), ``held/<k>`` (outbound envelopes waiting for a backed-off
peer; peer health is in ``meta``) and ``seen`` (the dedup window). Restoring re-installs the
artifact with the given bindings and puts every piece back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from typing import Any, Mapping

import jax
import numpy as np
import onnx
from google.protobuf.message import DecodeError

from bbjax.compiler import Compiled
from bbjax.errors import SnapshotError
from bbjax.runtime.envelope import Limits

FORMAT = 1



def dump(node: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {
        "model": np.frombuffer(node.compiled.model.SerializeToString(), np.uint8),
        "seen": np.asarray(list(node._seen), np.uint64),
    }
    for slot, state in node.states.items():
        for i, leaf in enumerate(jax.tree.leaves(state)):
            arrays[f"state/{slot}/{i}"] = np.asarray(leaf)
    for name, value in node.config.inputs.items():
        arrays[f"input/{name}"] = np.asarray(value)
    counts = {}
    for port, queue in node._pending.items():
        counts[port] = len(queue)
        for k, leaves in enumerate(queue):
            for i, leaf in enumerate(leaves):
                arrays[f"pending/{port}/{k}/{i}"] = np.asarray(leaf)
    gathered = {}
    for port, by_peer in node._gathered.items():
        gathered[port] = sorted(by_peer)
        for peer, leaves in by_peer.items():
            for i, leaf in enumerate(leaves):
                arrays[f"gathered/{port}/{peer}/{i}"] = np.asarray(leaf)
    for k, data in enumerate(node._inbound):
        arrays[f"inbound/{k}"] = np.frombuffer(data, np.uint8)
    for k, (_, data, _, _, _) in enumerate(node._held):
        arrays[f"held/{k}"] = np.frombuffer(data, np.uint8)
    config = node.config
    meta = {
        "format": FORMAT, "peer": node.peer, "targets": [s.target for s in node.steps],
        "peers": {c: [int(p) for p in ids] for c, ids in config.peers.items()},
        "limits": dataclasses.asdict(config.limits), "max_inbound": config.max_inbound,
        "max_pending": config.max_pending, "dedup_window": config.dedup_window,
        "sequence": node._sequence, "started": [s.target for s in node._started],
        "pending": counts, "gathered": gathered, "inbound": len(node._inbound),
        "held": [[peer, deadline, list(ports), expiry]
                 for peer, _, deadline, ports, expiry in node._held],
        "failures": {str(p): n for p, n in node.health.failures.items()},
        "retry_at": {str(p): t for p, t in node.health.retry_at.items()},
        "leaves": {slot: len(jax.tree.leaves(st)) for slot, st in node.states.items()},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load(data: bytes, bindings: Mapping[str, Any]) -> Any:
    from bbjax.runtime.install import install
    from bbjax.runtime.node import NodeConfig
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"snapshot format {meta.get('format')!r}, expected {FORMAT}")
        model = onnx.load_from_string(bytes(arrays["model"]))
        inputs = {k[len("input/"):]: v for k, v in arrays.items() if k.startswith("input/")}
        config = NodeConfig(peers=meta["peers"], inputs=inputs, limits=Limits(**meta["limits"]),
                            max_inbound=meta["max_inbound"], max_pending=meta["max_pending"],
                            dedup_window=meta["dedup_window"])
    except SnapshotError:
        raise
    except (KeyError, ValueError, TypeError, OSError, EOFError, DecodeError,
            zipfile.BadZipFile) as exc:
        raise SnapshotError(f"malformed snapshot: {type(exc).__name__}: {exc}") from exc
    node = install(meta["peer"], Compiled(model), meta["targets"], bindings, config)
    for slot, state in node.states.items():
        leaves = [arrays[f"state/{slot}/{i}"] for i in range(meta["leaves"].get(slot, -1))]
        if len(leaves) != len(jax.tree.leaves(state)):
            raise SnapshotError(f"slot {slot!r}: snapshot has {len(leaves)} state arrays, "
                                f"the bound component has {len(jax.tree.leaves(state))}")
        node.states[slot] = jax.tree.unflatten(jax.tree.structure(state), leaves)
    for port, count in meta["pending"].items():
        for k in range(count):
            n = len([key for key in arrays if key.startswith(f"pending/{port}/{k}/")])
            node._pending[port].append([arrays[f"pending/{port}/{k}/{i}"] for i in range(n)])
    for port, peers in meta["gathered"].items():
        for peer in peers:
            n = len([key for key in arrays if key.startswith(f"gathered/{port}/{peer}/")])
            node._gathered[port][peer] = [arrays[f"gathered/{port}/{peer}/{i}"] for i in range(n)]
    node._inbound.extend(bytes(arrays[f"inbound/{k}"]) for k in range(meta["inbound"]))
    for digest in arrays["seen"].tolist():
        node._remember(int(digest))
    node._held = [(peer, bytes(arrays[f"held/{k}"]), deadline, tuple(ports), expiry)
                  for k, (peer, deadline, ports, expiry) in enumerate(meta["held"])]
    node.health.failures = {int(p): n for p, n in meta["failures"].items()}
    node.health.retry_at = {int(p): t for p, t in meta["retry_at"].items()}
    node._sequence = meta["sequence"]
    node._started = [s for s in node.steps if s.target in meta["started"]]
    return node
