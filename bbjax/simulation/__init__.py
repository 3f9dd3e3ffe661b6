"""Vectorized simulation: a compiled Module's rounds for whole populations of peers in one
jitted program (see ``docs/simulation.md``)."""

from bbjax.simulation.cache import clear_cache
from bbjax.simulation.cohort import Availability
from bbjax.simulation.engine import BYTES_SENT, Simulation
from bbjax.errors import SimulationError
from bbjax.simulation.history import History
from bbjax.simulation.population import Peers
from bbjax.simulation.run import simulate
from bbjax.simulation.sharding import peer_mesh

__all__ = ["BYTES_SENT", "Availability", "History", "Peers", "Simulation", "SimulationError",
           "clear_cache", "peer_mesh", "simulate"]
