"""The FedAvg workload of the ``simulate_*`` benchmarks: a ready-made bbjax experiment
(``bbjax.experiments.fedavg``) and its jitted round, run one round per call with the
states donated from call to call."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from bbjax.compiler import Compiler
from bbjax.components import Component, Role, flax_model, padded_data_source
from bbjax.data import synthetic, train_test_split
from bbjax.models import MLP, LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.simulation import Peers, Simulation
from bbjax.experiments import CONFIGS, Experiment, FedAvgConfig, build

SOURCES = ("padded", "rows")


@struct.dataclass
class RowsState:
    x: jax.Array  # (max_size, ...) zero-padded rows
    y: jax.Array  # (max_size,)
    size: jax.Array  # int32, number of real rows (the first ones)
    key: jax.Array


def random_rows_source(x: jax.Array, y: jax.Array, batch_size: int) -> Component:
    """A DataSource whose batches are ``batch_size`` rows drawn uniformly, with replacement,
    among the first ``size`` (real) rows, independently per batch: the hand-written
    round's sampling, in place of ``padded_data_source``'s epochs.
    ``init(key, x=None, y=None, size=None)`` as for ``padded_data_source``."""

    default = (x, y)

    def init(key: jax.Array, x: Any = None, y: Any = None, size: Any = None) -> RowsState:
        x, y = default[0] if x is None else x, default[1] if y is None else y
        return RowsState(x, y, jnp.asarray(x.shape[0] if size is None else size, jnp.int32), key)

    def next_batch(state: RowsState) -> tuple[RowsState, tuple[jax.Array, jax.Array]]:
        key, sub = jax.random.split(state.key)
        rows = jax.random.randint(sub, (batch_size,), 0, state.size)
        return state.replace(key=key), (state.x[rows], state.y[rows])

    methods = {"next_batch": next_batch, "reset": lambda state: (state, ()),
               "num_examples": lambda state: (state, state.size)}
    return Component(Role.DATA_SOURCE, init, methods, "random_rows_source")


def fedavg_config(model: str, **changes: Any) -> FedAvgConfig:
    """The named configuration of ``model`` ("mlp": ``fedavg-synthetic-mlp``, learning rate
    0.05; "logreg": ``fedavg-synthetic``, 0.01) with ``changes``."""
    return CONFIGS["fedavg-synthetic-mlp" if model == "mlp" else "fedavg-synthetic"].replace(
        model=model, **changes)


def experiment(config: FedAvgConfig, full: bool, source: str = "padded") -> Experiment:
    """``build(config)``. With ``full`` every client runs every round (``cohort=None``: no
    per-round draw, gather or scatter of client states) instead of ``clients_per_round``;
    with ``source="rows"``, :func:`with_rows_source`."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    exp = build(config)
    if full:
        clients = exp.population["client"]
        exp = dataclasses.replace(exp, population={
            **exp.population, "client": Peers(clients.count, init_args=clients.init_args)})
    return with_rows_source(exp) if source == "rows" else exp


def scaling_experiment(model: str, clients: int, features: int, max_client_size: int,
                       local_steps: int, batch_size: int, seed: int = 0) -> Experiment:
    """FedAvg on FedProx Synthetic(1, 1) with ``features`` features, every client running
    every round (no cohort): ``model`` "logreg" (learning rate 0.01) or "mlp" (64 hidden
    units, 0.05), ``local_steps`` SGD steps of ``batch_size``, clients capped at
    ``max_client_size`` examples before the 80/20 split. The ``config`` is
    ``fedavg-synthetic``'s with these changes (``features`` is not one of its fields)."""
    lr = 0.05 if model == "mlp" else 0.01
    config = fedavg_config(model, num_clients=clients, clients_per_round=clients,
                           max_client_size=max_client_size, local_steps=local_steps,
                           batch_size=batch_size, learning_rate=lr, seed=seed)
    data = synthetic(1.0, 1.0, clients, seed, max_size=max_client_size, num_features=features)
    train, test = train_test_split(jax.random.PRNGKey(seed), data, 0.2)
    classes = int(np.asarray(data.y).max()) + 1
    rngs = nnx.Rngs(seed)
    module = (MLP(features, 64, classes, rngs=rngs) if model == "mlp"
              else LogisticRegression(features, classes, rngs=rngs))
    component = flax_model(module, optax.sgd(lr), cross_entropy)
    batch = min(batch_size, int(np.asarray(train.sizes).min()))
    source = padded_data_source(train.x[0], train.y[0], int(train.sizes[0]), batch)
    compiled = Compiler().bind("model", component).bind("data", source).compile(
        FedAvgRound(local_steps))
    population = {"server": Peers(1), "client": Peers(
        clients, init_args={"data": (train.x, train.y, train.sizes)})}
    return Experiment(config, compiled, population, {"model": component, "data": source},
                      train, test)


def with_rows_source(exp: Experiment) -> Experiment:
    """``exp`` (same data, model and population; ``config.rule`` None) with its clients
    drawing batches with :func:`random_rows_source` instead of ``padded_data_source``."""
    config = exp.config
    batch = min(config.batch_size, int(exp.train.sizes.min()))
    rows = random_rows_source(exp.train.x[0], exp.train.y[0], batch)
    compiled = (Compiler().bind("model", exp.bindings["model"]).bind("data", rows)
                .compile(FedAvgRound(config.local_steps)))
    return dataclasses.replace(exp, compiled=compiled, bindings={**exp.bindings, "data": rows})


class BbjaxRounds:
    """``Simulation.round`` of an experiment, jitted with the states donated (what
    ``bbjax.simulate`` runs under ``lax.scan``); each call runs the next round ``r`` with
    key ``fold_in(key, r)`` and returns its metrics."""

    def __init__(self, exp: Experiment, key: jax.Array):
        sim = Simulation(exp.compiled, exp.population, exp.bindings)
        self.states = jax.jit(sim.init)(key, sim.init_args)
        self.round = jax.jit(lambda states, r: sim.round(states, jax.random.fold_in(key, r)),
                             donate_argnums=0)
        self.r = 0

    def __call__(self) -> dict[str, jax.Array]:
        self.states, metrics = self.round(self.states, self.r)
        self.r += 1
        return metrics

    def compile(self) -> Any:
        """Compile the round ahead of time (it then runs from that executable); XLA's
        memory analysis of it."""
        self.round = self.round.lower(self.states, self.r).compile()
        return self.round.memory_analysis()

    def warm_up(self, rounds: int) -> None:
        """Compile and run ``rounds`` rounds on a copy of the states (they do not advance)."""
        states = jax.tree.map(jnp.copy, self.states)
        for r in range(rounds):
            states, _ = self.round(states, r)
        jax.block_until_ready(states)

    def timed(self, rounds: int) -> list[float]:
        """Run the next ``rounds`` rounds one by one; the seconds of each."""
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            jax.block_until_ready((self(), self.states))
            seconds.append(time.perf_counter() - start)
        return seconds

    def global_params(self) -> Any:
        """The server's current global parameters."""
        return jax.tree.map(lambda a: a[0], self.states["server"]["model"].params)
