"""The peer axis over local devices: a one-axis mesh and the placement of peer states."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bbjax.simulation.errors import SimulationError
from bbjax.simulation.population import Peers

MESH_AXIS = "peers"


def peer_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``peers`` over ``devices`` (a count of local devices, a list,
    or None for all of them)."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise SimulationError(f"devices must be in [1, {len(available)}] (the devices JAX "
                                  f"sees), got {devices}")
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise SimulationError("devices is an empty list")
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
