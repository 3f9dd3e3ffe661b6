"""The error ``simulate`` raises for a population, schedule or configuration it cannot run."""

from bbjax.errors import BbjaxError


class SimulationError(BbjaxError):
    """The compiled Module, population or settings given to ``simulate`` do not fit."""
