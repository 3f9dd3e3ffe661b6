"""Ready-made Modules."""

from bbjax.modules.fedavg import FedAvgRound

__all__ = ["FedAvgRound"]
