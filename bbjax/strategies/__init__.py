"""Training strategies: what a run does with its peers.

:mod:`~bbjax.strategies.config`: somatize-core's ``TrainingStrategy`` JSON as checked
configurations (:func:`parse`, :func:`load`); :func:`bbjax.strategies.build.build` makes
one a ``Run`` whose ``run()`` simulates it (import it from there: it loads JAX);
``decentralized``: topologies and gossip-style algorithms; ``federated``: the federated
strategy's server rules, client objective and selection.
"""

from __future__ import annotations

from bbjax.strategies.config import (
    AllClients,
    AllReduce,
    Binary,
    ByCapability,
    DataParallel,
    DataStore,
    Decentralized,
    Direct,
    FedAvg,
    Federated,
    FedProx,
    FedYogi,
    Local,
    ModelParallel,
    ParameterServer,
    Partition,
    Perturbation,
    Pipeline,
    PopulationBased,
    RandomClients,
    Resample,
    Strategy,
    TagTarget,
    Training,
    Truncation,
    WorkerTarget,
    load,
    loads,
    parse,
)

__all__ = ["AllClients", "AllReduce", "Binary", "ByCapability", "DataParallel", "DataStore",
           "Decentralized", "Direct", "FedAvg", "FedProx", "FedYogi", "Federated", "Local",
           "ModelParallel", "ParameterServer", "Partition", "Perturbation", "Pipeline",
           "PopulationBased", "RandomClients", "Resample", "Strategy", "TagTarget", "Training",
           "Truncation", "WorkerTarget", "load", "loads", "parse"]
