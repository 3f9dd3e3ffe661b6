"""Data-parallel training (somatize's ``DataParallel``), every variant running for real:
synchronous SGD with an all-reduce over the replicas, and a parameter server, synchronous
or stale synchronous (bounded staleness, Ho et al. 2013)."""

from bbjax.strategies.parallel.all_reduce import AllReduceRound, all_reduce_mean
from bbjax.strategies.parallel.all_reduce import population as all_reduce_population
from bbjax.strategies.parallel.parameter_server import (
    ParameterServerRound,
    ServerClocks,
    WorkerClock,
    random_delays,
    ssp_server,
    ssp_worker,
)
from bbjax.strategies.parallel.parameter_server import (
    population as parameter_server_population,
)
from bbjax.strategies.parallel.replica import ReplicaState, replica
from bbjax.strategies.parallel.shards import ShardState, data_shard, shard_source, split

__all__ = ["AllReduceRound", "ParameterServerRound", "ReplicaState", "ServerClocks",
           "ShardState", "WorkerClock", "all_reduce_mean", "all_reduce_population",
           "data_shard", "parameter_server_population", "random_delays", "replica",
           "shard_source", "split", "ssp_server", "ssp_worker"]
