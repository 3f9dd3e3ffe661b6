"""From a strategy configuration to a run: ``build(strategy).run()`` simulates it and
returns its History.

- ``Local``: :class:`~bbjax.strategies.local.LocalRound` on one peer holding the rows of
  ``num_clients`` clients.
- ``Federated``: :mod:`bbjax.strategies.federated` (a FedAvg round, its rule, clients and
  cohort); the server's model is evaluated.
- ``DataParallel{Decentralized{topology}}``: :class:`~bbjax.strategies.decentralized.
  DPSGDRound` over that topology of ``num_replicas`` nodes (one step a round); the nodes'
  mean model is evaluated, with their ``consensus_distance``.
- ``DataParallel{AllReduce | ParameterServer}``: :mod:`bbjax.strategies.parallel`'s
  ``AllReduceRound`` / ``ParameterServerRound`` (stale synchronous with a ``staleness``)
  on the replicas' pooled rows, a global batch of ``batch_size`` rows per replica.
- ``ModelParallel``: :class:`~bbjax.strategies.model_parallel.ModelParallelRound`, one
  peer per partition (:mod:`bbjax.strategies.model_parallel.strategy`); the chained
  stages are evaluated.
- ``PopulationBased``: :func:`~bbjax.strategies.pbt.local.local_population` (task
  ``"local"``) or :func:`~bbjax.strategies.pbt.federated.federated_population_run` (task
  ``"federated"``), whose ``run()`` returns a
  :class:`~bbjax.strategies.pbt.history.PbtHistory` (a History with one row per
  generation) rather than a ``Run``'s History of rounds.

Every run is measured by ``accuracy`` and ``test_loss`` on every peer's held-out rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import optax

from bbjax.compiler import Compiled, Compiler
from bbjax.components import Component
from bbjax.dsl import Module
from bbjax.errors import ConfigError, TopologyError
from bbjax.models import cross_entropy
from bbjax.simulation import Peers
from bbjax.simulation.history import History
from bbjax.simulation.run import simulate
from bbjax.strategies import decentralized, parallel, workload
from bbjax.strategies.config import (
    AllReduce,
    DataParallel,
    Decentralized,
    Federated,
    Local,
    ModelParallel,
    PopulationBased,
    Strategy,
    parse,
)
from bbjax.strategies.federated import federated_round, proximal_mu
from bbjax.strategies.local import LocalRound
from bbjax.strategies.model_parallel.strategy import parts as model_parallel_parts
from bbjax.strategies.pbt.federated import FederatedPbtRun, federated_population_run
from bbjax.strategies.pbt.local import LocalPopulation, local_population


@dataclass
class Run:
    """A built strategy: its compiled round, population, bindings, ``evaluate`` and the
    number of ``rounds`` it runs."""

    strategy: Strategy
    compiled: Compiled
    population: dict[str, Any]
    bindings: dict[str, Component]
    evaluate: Callable[[dict[str, Any]], dict[str, jax.Array]]
    rounds: int

    def run(self, key: jax.Array | None = None, progress: bool = False,
            devices: int | None = None, rounds: int | None = None, *,
            allow_divergence: bool = False) -> History:
        """Simulate the strategy's rounds (or ``rounds``) with the key of its
        ``training.seed`` (or ``key``); the History's ``config`` is the strategy's JSON. The
        arguments and errors are :func:`~bbjax.simulation.run.simulate`'s."""
        training = self.strategy.training
        key = jax.random.PRNGKey(training.seed) if key is None else key
        return simulate(self.compiled, self.population,
                        self.rounds if rounds is None else rounds, key,
                        bindings=self.bindings, evaluate=self.evaluate,
                        eval_every=training.eval_every, progress=progress, devices=devices,
                        allow_divergence=allow_divergence, config=self.strategy.to_json())


def build(strategy: Strategy | Any) -> Run:
    """The run of ``strategy`` (a configuration, or its JSON value: :func:`parse`).
    Raises :class:`ConfigError` for a strategy bbjax does not run yet, a topology that does
    not exist for ``num_replicas`` nodes, data that leaves a peer no training example, or
    ``ModelParallel`` partitions that do not split its model."""
    if not isinstance(strategy, (Local, DataParallel, ModelParallel, Federated,
                                 PopulationBased)):
        strategy = parse(strategy)
    if isinstance(strategy, ModelParallel):
        return _model_parallel(strategy)
    if isinstance(strategy, PopulationBased):
        return _population_based(strategy)
    if isinstance(strategy, Federated):
        return _federated(strategy)
    if isinstance(strategy, Local):
        return _local(strategy)
    if isinstance(strategy.aggregation, Decentralized):
        return _decentralized(strategy)
    return _parallel(strategy)


def _compile(module: Module, bindings: dict[str, Component]) -> Compiled:
    compiler = Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    return compiler.compile(module)


def _local(strategy: Local) -> Run:
    training = strategy.training
    train, test = (workload.pooled(d) for d in workload.peer_data(training,
                                                                  strategy.num_clients))
    model = workload.model(training, train)
    bindings = {"model": model, "data": workload.data_source(training, train)}
    population = {"self": Peers(1, init_args={"data": (train.x, train.y, train.sizes)})}
    return Run(strategy, _compile(LocalRound(training.local_steps), bindings), population,
               bindings, workload.evaluation(model, test, "self", consensus=False),
               strategy.rounds)


def _federated(strategy: Federated) -> Run:
    training = strategy.training
    train, test = workload.peer_data(training, strategy.num_clients)
    model = workload.model(training, train, proximal_mu(strategy))
    module, bindings, population = federated_round(
        strategy, model, workload.data_source(training, train), train)
    return Run(strategy, _compile(module, bindings), population, bindings,
               workload.evaluation(model, test, "server", consensus=False), strategy.rounds)


def topology(strategy: DataParallel) -> decentralized.Topology:
    """The topology of a ``DataParallel{Decentralized}`` strategy over its replicas; raises
    :class:`ConfigError` (field ``aggregation.topology``) when it does not exist for that
    many nodes."""
    agg, n = strategy.aggregation, strategy.num_replicas
    make = {"ring": lambda: decentralized.ring(n),
            "torus": lambda: decentralized.torus(agg.rows, n // agg.rows),
            "exponential": lambda: decentralized.exponential(n),
            "one_peer_exponential": lambda: decentralized.one_peer_exponential(n),
            "base_graph": lambda: decentralized.base_graph(n, agg.k),
            "random_regular": lambda: decentralized.random_regular(n, agg.k, agg.seed or 0),
            "complete": lambda: decentralized.complete(n)}[agg.topology]
    try:
        return make()
    except TopologyError as exc:
        raise ConfigError(f"aggregation.topology {agg.topology!r} on {n} replicas: {exc}",
                          field="aggregation.topology") from None


def _decentralized(strategy: DataParallel) -> Run:
    training, graph = strategy.training, topology(strategy)
    train, test = workload.peer_data(training, strategy.num_replicas)
    model = workload.model(training, train)
    bindings = {"model": model, "data": workload.data_source(training, train),
                "weights": decentralized.mixing_weights(graph)}
    try:
        population = decentralized.population(graph, {"data": (train.x, train.y, train.sizes)})
    except TopologyError as exc:
        raise ConfigError(f"aggregation.topology {strategy.aggregation.topology!r}: {exc}",
                          field="aggregation.topology") from None
    return Run(strategy, _compile(decentralized.DPSGDRound(), bindings), population, bindings,
               workload.evaluation(model, test, "node", consensus=True), strategy.rounds)


def _parallel(strategy: DataParallel) -> Run:
    training, n = strategy.training, strategy.num_replicas
    train, test = workload.peer_data(training, n)
    x, y = workload.pooled_rows(train)
    batch = training.batch_size * n
    holder = parallel.replica(workload.network(training, train),
                              optax.sgd(training.learning_rate), cross_entropy)
    bindings = {"model": holder, "data": parallel.shard_source(x, y, n, batch)}
    agg = strategy.aggregation
    if isinstance(agg, AllReduce):
        bindings["all_reduce"] = parallel.all_reduce_mean()
        module, population = parallel.AllReduceRound(), parallel.all_reduce_population(
            x, y, n, batch)
        entry = "replica"
    else:
        module = parallel.ParameterServerRound(n, agg.staleness)
        delays = None if agg.staleness is None else list(agg.delays or [0] * n)
        if delays is not None:
            bindings["clock"] = parallel.ssp_worker(agg.staleness)
            bindings["clocks"] = parallel.ssp_server(n, batch)
        population = parallel.parameter_server_population(x, y, n, batch, delays)
        entry = "server"
    evaluate = workload.evaluation(workload.model(training, train), test, entry,
                                   consensus=False, holder=holder)
    return Run(strategy, _compile(module, bindings), population, bindings, evaluate,
               strategy.rounds)


def _model_parallel(strategy: ModelParallel) -> Run:
    module, bindings, population, evaluate, _ = model_parallel_parts(strategy)
    return Run(strategy, _compile(module, bindings), population, bindings, evaluate,
               strategy.rounds)


def _population_based(strategy: PopulationBased) -> LocalPopulation | FederatedPbtRun:
    """A population of ``task: "local"`` members (:mod:`bbjax.strategies.pbt.local`) or of
    federated runs (:mod:`bbjax.strategies.pbt.federated`): its ``run()`` returns a
    :class:`~bbjax.strategies.pbt.history.PbtHistory`."""
    if strategy.task == "local":
        return local_population(strategy)
    members = strategy.members()
    return federated_population_run(
        strategy, num_clients=strategy.num_clients,
        clients_per_round=members.clients_per_round or strategy.num_clients,
        rounds=members.rounds, rule=members.rule,
        server_learning_rate=members.server_learning_rate)
