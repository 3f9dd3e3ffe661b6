"""The peer axis over local devices: a one-axis mesh and the placement of peer states."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bbjax.errors import SimulationError
from bbjax.simulation.population import Peers

MESH_AXIS = "peers"


def peer_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``peers`` over ``devices``: None for all of ``jax.devices()``
    (in a multi-process run, every process's), a count for the first ones, or a list.
    Raises :class:`SimulationError` for a count out of range, an empty list or devices of
    which none belongs to this process."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, bool):
        raise SimulationError(f"devices must be a count, a list of devices or None, got {devices}")
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise SimulationError(f"devices must be in [1, {len(available)}] (the devices JAX "
                                  f"sees), got {devices}")
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise SimulationError("devices is an empty list")
    if not any(d.process_index == jax.process_index() for d in chosen):
        raise SimulationError(
            f"none of the devices {chosen} belongs to this process ({jax.process_index()}); "
            f"in a multi-process run pass devices=None (every process's devices) or a list "
            f"that includes some of jax.local_devices()")
    return Mesh(np.array(chosen), (MESH_AXIS,))


def state_shardings(states: Mapping[str, Any], groups: Mapping[str, Peers], mesh: Mesh) -> dict:
    """Where each entry's states live: split along the peer axis over ``mesh`` when the
    device count divides the entry's peer count, otherwise replicated on every device."""
    size = mesh.devices.size
    result = {}
    for name, tree in states.items():
        spec = PartitionSpec(MESH_AXIS) if groups[name].count % size == 0 else PartitionSpec()
        result[name] = jax.tree.map(lambda _: NamedSharding(mesh, spec), tree)
    return result


def replicated(mesh: Mesh) -> NamedSharding:
    """The same value on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())
