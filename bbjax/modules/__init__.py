"""Ready-made Modules: federated rounds to compile, install or simulate."""

from bbjax.modules.fedavg import FedAvgRound
from bbjax.modules.scaffold import ScaffoldRound

__all__ = ["FedAvgRound", "ScaffoldRound"]
