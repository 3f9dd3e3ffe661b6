"""Population-based training over federated runs: each member a whole federated simulation
(a server and its clients), every member in one vmapped program.

A member's hyperparameters live in its states, so one compiled round serves every member
and every generation: a :class:`Place` names where (e.g. :data:`CLIENT_LEARNING_RATE`, the
clients' ``optax.inject_hyperparams`` learning rate, and :data:`SERVER_LEARNING_RATE`, the
rate of a :func:`server_rate_aggregator`). :class:`FederatedPopulation` stacks the members'
states on a leading axis (leaves no round and no hyperparameter rewrites, e.g. the clients'
data, are stored once and shared), ``vmap``-s :meth:`Simulation.round
<bbjax.simulation.Simulation.round>` over them, and runs generations of ``rounds`` rounds
each; between generations PBT's exploit copies a whole member (server and clients, and so
its hyperparameters) and explore rewrites the hyperparameters in the copies' states.

Member ``i`` runs with the key ``member_key(key, i)`` exactly as :func:`bbjax.simulate`
runs with that key: ``init_key, run_key = split(member_key)``, round ``r``'s key
``fold_in(run_key, r)``; an exploited member keeps its own key.

:func:`run` is :func:`bbjax.strategies.pbt.run` for such members (a ``PbtHistory``);
:func:`federated_population` builds FedAdam members from a ``Training`` configuration and
:func:`federated_population_run` a run of a ``PopulationBased`` strategy over them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.extend.core import Var

from bbjax import aggregators
from bbjax._checks import check_count
from bbjax.compiler import Compiler
from bbjax.components import Component, flax_model, rule_aggregator
from bbjax.components.adapters import RuleAggregatorState
from bbjax.components.component import PyTree
from bbjax.errors import ConfigError, InvalidArgument, SimulationError
from bbjax.models import cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.simulation import Peers, Simulation
from bbjax.strategies import workload
from bbjax.strategies.config import (
    Binary,
    Categorical,
    Perturbation,
    RayTune,
    Resample,
    SearchSpace,
    Training,
    Truncation,
)
from bbjax.strategies.pbt.evolve import evolve
from bbjax.strategies.pbt.exploitation import Lineage, cutoff, guard
from bbjax.strategies.pbt.history import PbtHistory
from bbjax.strategies.pbt.run import run_generations
from bbjax.strategies.pbt.space import Hyperparameters, choice_values, decode, sample

States = dict[str, dict[str, Any]]


# --- where a hyperparameter lives ------------------------------------------------------------

@dataclass(frozen=True)
class Place:
    """A hyperparameter's home: the field at ``path`` (attribute names of dataclasses and
    named tuples, keys of dicts) in the ``slot`` state of every peer of population entry
    ``entry``; the field is a floating-point scalar per peer."""

    entry: str
    slot: str
    path: tuple[str, ...]

    def read(self, states: States) -> jax.Array:
        """The value (of the entry's first peer) in one member's ``states``."""
        return _field(self._stack(states), self.path, self)[0]

    def write(self, states: States, value: Any) -> States:
        """One member's ``states`` with every peer of the entry holding ``value``."""
        stack = self._stack(states)
        old = _field(stack, self.path, self)
        new = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
        slots = {**states[self.entry], self.slot: _replaced(stack, self.path, new)}
        return {**states, self.entry: slots}

    def _stack(self, states: States) -> Any:
        if self.entry not in states or self.slot not in states[self.entry]:
            raise InvalidArgument(f"{self}: the member's states have no slot {self.slot!r} "
                                  f"in entry {self.entry!r}; they have "
                                  f"{ {e: sorted(s) for e, s in states.items()} }")
        return states[self.entry][self.slot]


CLIENT_LEARNING_RATE = Place("client", "model", ("opt_state", "hyperparams", "learning_rate"))
"""The clients' learning rate: a ``flax_model`` whose optimizer is
``optax.inject_hyperparams(optax.sgd)(learning_rate=...)`` (or any optimizer so wrapped)."""

SERVER_LEARNING_RATE = Place("server", "aggregator", ("learning_rate",))
"""The server's learning rate: the ``aggregator`` slot a :func:`server_rate_aggregator`."""


def _field(tree: Any, path: tuple[str, ...], place: Place) -> jax.Array:
    for name in path:
        tree = _child(tree, name, place)
    if not hasattr(tree, "dtype") or not jnp.issubdtype(tree.dtype, jnp.floating) \
            or jnp.ndim(tree) != 1:
        raise InvalidArgument(f"{place}: the field is {tree!r}; a hyperparameter is a "
                              f"floating-point scalar per peer")
    return tree


def _child(tree: Any, name: str, place: Place) -> Any:
    if isinstance(tree, Mapping):
        if name in tree:
            return tree[name]
        fields = sorted(tree)
    else:
        fields = _fields(tree)
        if name in fields:
            return getattr(tree, name)
    raise InvalidArgument(f"{place}: no field {name!r} in a {type(tree).__name__}; it has "
                          f"{fields}")


def _fields(tree: Any) -> list[str]:
    if dataclasses.is_dataclass(tree):
        return [f.name for f in dataclasses.fields(tree)]
    return list(getattr(tree, "_fields", ()))


def _replaced(tree: Any, path: tuple[str, ...], value: jax.Array) -> Any:
    if not path:
        return value
    name, rest = path[0], path[1:]
    if isinstance(tree, Mapping):
        return {**tree, name: _replaced(tree[name], rest, value)}
    new = _replaced(getattr(tree, name), rest, value)
    if dataclasses.is_dataclass(tree):
        return dataclasses.replace(tree, **{name: new})
    return tree._replace(**{name: new})


# --- a server whose learning rate is state ---------------------------------------------------

@struct.dataclass
class ServerRateState:
    """The wrapped :func:`~bbjax.components.rule_aggregator`'s state and the server's
    learning rate."""

    inner: RuleAggregatorState
    learning_rate: jax.Array  # float32 scalar


SERVER_RATE_RULES: dict[str, Callable[..., aggregators.Aggregator]] = {
    "fedadam": lambda **hp: aggregators.fedadam(eta=1.0, **hp),
    "fedyogi": lambda **hp: aggregators.fedyogi(eta=1.0, **hp),
    "fedadagrad": lambda **hp: aggregators.fedadagrad(eta=1.0, **hp),
    "fedavgm": lambda **hp: aggregators.fedavgm(server_learning_rate=1.0, **hp),
}
"""The rules whose server step is ``global + rate * step`` with a ``step`` and a state
that do not depend on the rate, built at rate 1."""


def server_rate_aggregator(rule: str, capacity: int, initial_params: PyTree,
                           learning_rate: float, **hyperparameters: Any) -> Component:
    """The Aggregator of ``rule`` (a name in :data:`SERVER_RATE_RULES`, with its other
    ``hyperparameters``) at server ``learning_rate``, the rate held in the state
    (:data:`SERVER_LEARNING_RATE`), so a population of servers with different rates runs
    as one program. Its results equal ``bbjax.aggregators.<rule>(eta=learning_rate, ...)``
    (FedAvgM: ``server_learning_rate``) through :func:`~bbjax.components.rule_aggregator`.
    Raises :class:`ConfigError` for another rule, :class:`~bbjax.errors.AggregatorError`
    for invalid hyperparameters."""
    if rule not in SERVER_RATE_RULES:
        raise ConfigError(f"server_rate_aggregator: rule must be one of "
                          f"{sorted(SERVER_RATE_RULES)}, got {rule!r}", field="rule")
    rate = float(learning_rate)
    if not rate > 0:
        raise ConfigError(f"server_rate_aggregator: learning_rate must be > 0, got "
                          f"{learning_rate!r}", field="learning_rate")
    inner = rule_aggregator(SERVER_RATE_RULES[rule](**hyperparameters), capacity,
                            initial_params, name=f"{rule}_server_rate")

    def scaled(state: ServerRateState, inner_state: RuleAggregatorState, origin: PyTree,
               unit: PyTree) -> tuple[ServerRateState, PyTree]:
        point = jax.tree.map(lambda o, u: o + state.learning_rate * (u - o), origin, unit)
        return ServerRateState(inner_state.replace(global_params=point),
                               state.learning_rate), point

    def init(key: jax.Array) -> ServerRateState:
        return ServerRateState(inner.init(key), jnp.float32(rate))

    def contribute(state, peer, tensor, weight):
        new, outputs = inner.methods["contribute"](state.inner, peer, tensor, weight)
        return state.replace(inner=new), outputs

    def aggregate(state):
        new, (unit, total) = inner.methods["aggregate"](state.inner)
        state, point = scaled(state, new, state.inner.global_params, unit)
        return state, (point, total)

    def aggregate_stacked(state, global_params, tensors, weights, mask, extra):
        new, (unit, total) = inner.methods["aggregate_stacked"](
            state.inner, global_params, tensors, weights, mask, extra)
        state, point = scaled(state, new, global_params, unit)
        return state, (point, total)

    def rule_state(state):
        return state, state.inner.rule_state

    return Component(inner.role, init, {"contribute": contribute, "aggregate": aggregate,
                                        "aggregate_stacked": aggregate_stacked,
                                        "rule_state": rule_state},
                     f"{rule}_server_rate")


# --- the population --------------------------------------------------------------------------

def member_key(key: jax.Array, member: int | jax.Array) -> jax.Array:
    """Member ``member``'s key: its run is :func:`bbjax.simulate`'s with this key."""
    return jax.random.fold_in(key, member)


@struct.dataclass
class Members:
    """The population's states: ``stacked`` leaves ``[P, ...]`` (those that differ between
    members), ``shared`` leaves (the same in every member), each member's run key (``[P]``
    keys) and the index of the next round."""

    stacked: list
    shared: list
    keys: jax.Array
    next_round: jax.Array  # int32


class FederatedPopulation:
    """A population of federated runs of ``simulation`` (a
    :class:`~bbjax.simulation.Simulation`), trained ``rounds`` rounds a generation, with
    ``hyperparameters`` (name -> :class:`Place`) in their states and measured by
    ``evaluate(states)`` on one member's states (``states[entry][slot]`` stacked over the
    entry's peers, as ``simulate``'s ``evaluate`` sees them): a scalar fitness (higher is
    better) or a dict of scalars holding ``"fitness"``. Raises :class:`InvalidArgument` for
    no hyperparameters, a :class:`Place` the states do not have or a ``rounds`` that is not
    a count. ``score`` is the ``evaluate`` given."""

    def __init__(self, simulation: Any, hyperparameters: Mapping[str, Place],
                 evaluate: Callable[[States], Any], rounds: int):
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise InvalidArgument(f"rounds (a generation's) must be an integer >= 1, got "
                                  f"{rounds!r}")
        if not hyperparameters:
            raise InvalidArgument("a federated population needs at least one hyperparameter")
        self.simulation = simulation
        self.hyperparameters = dict(hyperparameters)
        self.rounds = rounds
        self.score = evaluate
        self._data = simulation.init_args, simulation.inputs, simulation.tables
        key = jax.random.PRNGKey(0)
        shapes = jax.eval_shape(simulation.init, key, *self._data)
        self._tree = jax.tree.structure(shapes)
        self._stacked = self._differing(shapes, key)

    def _differing(self, shapes: States, key: jax.Array) -> tuple[bool, ...]:
        """Per leaf of a member's states, whether it differs between members: whether a
        hyperparameter or a round rewrites it, or ``init`` draws it from the member's key
        (seen at trace time)."""
        flags: list[bool] = []

        def probe(states: States) -> tuple:
            placed = states
            for place in self.hyperparameters.values():
                placed = place.write(placed, place.read(placed))
            new, _ = self.simulation.round(placed, key, self._data[1], 0, self._data[2])
            flags.extend(a is not s or p is not s for a, p, s in zip(
                jax.tree.leaves(new), jax.tree.leaves(placed), jax.tree.leaves(states)))
            return ()

        jax.eval_shape(probe, shapes)
        keyed = _depends_on_input(jax.make_jaxpr(
            lambda k: self.simulation.init(k, *self._data))(key).jaxpr)
        return tuple(f or k for f, k in zip(flags, keyed))

    # -- members' states ----------------------------------------------------------------

    def _split(self, states: States) -> tuple[list, list]:
        leaves = self._tree.flatten_up_to(states)
        return ([a for a, s in zip(leaves, self._stacked) if s],
                [a for a, s in zip(leaves, self._stacked) if not s])

    def _join(self, stacked: list, shared: list) -> States:
        stacked, shared = iter(stacked), iter(shared)
        return self._tree.unflatten([next(stacked) if s else next(shared)
                                     for s in self._stacked])

    @property
    def data(self) -> tuple:
        """``(init_args, inputs, tables)``, the simulation's: pass them to a jitted
        :meth:`init` so that the clients' data is not baked into its program."""
        return self._data

    def init(self, key: jax.Array, values: Mapping[str, Any],
             data: tuple | None = None) -> Members:
        """The members' fresh states holding ``values`` (name -> ``[P]`` numbers, every
        hyperparameter): member ``i`` is ``simulate``'s with key :func:`member_key`
        ``(key, i)``, its init key the first of ``split(member_key)``, its run key the
        second; ``data`` as :attr:`data` (the default). Raises :class:`InvalidArgument` for
        missing, unknown or mis-shaped values."""
        values = self._checked(values)
        data = self._data if data is None else data
        size = next(iter(values.values())).shape[0]
        keys = jax.vmap(lambda i: member_key(key, i))(jnp.arange(size))
        init_keys, run_keys = jax.vmap(jax.random.split, out_axes=1)(keys)

        def one(init_key: jax.Array, member_values: dict) -> list:
            states = self._place(self.simulation.init(init_key, *data), member_values)
            return self._split(states)[0]

        stacked = jax.vmap(one)(init_keys, values)
        shared = self._split(self.simulation.init(init_keys[0], *data))[1]
        return Members(stacked, shared, run_keys, jnp.int32(0))

    def _checked(self, values: Mapping[str, Any]) -> dict[str, jax.Array]:
        names = sorted(self.hyperparameters)
        if sorted(values) != names:
            raise InvalidArgument(f"values must give every hyperparameter {names}, got "
                                  f"{sorted(values)}")
        arrays = {name: jnp.asarray(values[name], jnp.float32) for name in names}
        shapes = {jnp.shape(a) for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1 or next(iter(shapes))[0] < 1:
            raise InvalidArgument(f"values must each be one number per member, [P] with "
                                  f"one P >= 1; got shapes "
                                  f"{ {n: jnp.shape(a) for n, a in arrays.items()} }")
        return arrays

    def _place(self, states: States, values: Mapping[str, Any]) -> States:
        for name, place in self.hyperparameters.items():
            states = place.write(states, values[name])
        return states

    def member(self, members: Members, i: int) -> States:
        """Member ``i``'s states, as :func:`bbjax.simulate` keeps them."""
        return self._join([a[i] for a in members.stacked], members.shared)

    def values(self, members: Members) -> dict[str, jax.Array]:
        """Each hyperparameter's ``[P]`` values, read from the members' states."""
        def one(stacked: list) -> dict[str, jax.Array]:
            states = self._join(stacked, members.shared)
            return {name: p.read(states) for name, p in self.hyperparameters.items()}
        return jax.vmap(one)(members.stacked)

    def with_values(self, members: Members, values: Mapping[str, Any]) -> Members:
        """``members`` holding ``values`` (name -> ``[P]`` numbers)."""
        values = self._checked(values)

        def one(stacked: list, member_values: dict) -> list:
            return self._split(self._place(self._join(stacked, members.shared),
                                           member_values))[0]
        return members.replace(stacked=jax.vmap(one)(members.stacked, values))

    # -- a generation -------------------------------------------------------------------

    def train(self, members: Members) -> tuple[Members, dict[str, jax.Array]]:
        """``rounds`` rounds of every member; the rounds' metrics, each ``[P, rounds]``."""
        first = members.next_round
        inputs, tables = self._data[1], self._data[2]

        def member_rounds(stacked: list, run_key: jax.Array) -> tuple[list, dict]:
            def one(states: States, r: jax.Array) -> tuple[States, dict]:
                return self.simulation.round(states, jax.random.fold_in(run_key, r), inputs,
                                             r, tables)
            states, metrics = jax.lax.scan(
                one, self._join(stacked, members.shared),
                first + jnp.arange(self.rounds, dtype=jnp.int32))
            return self._split(states)[0], metrics

        stacked, metrics = jax.vmap(member_rounds)(members.stacked, members.keys)
        return members.replace(stacked=stacked, next_round=first + self.rounds), metrics

    def evaluate(self, members: Members) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(fitness, extras)``: every member's fitness ``[P]`` (float32, ``-inf`` for a
        failed member: non-finite fitness or states, :func:`~bbjax.strategies.pbt.guard`)
        and the other scalars ``evaluate`` returned (each ``[P]``)."""
        def one(stacked: list) -> dict[str, jax.Array]:
            out = self.score(self._join(stacked, members.shared))
            out = dict(out) if isinstance(out, Mapping) else {"fitness": out}
            if "fitness" not in out:
                raise InvalidArgument(f"evaluate returned a dict without 'fitness': "
                                      f"{sorted(out)}")
            for name, value in out.items():
                if jnp.ndim(value) != 0:
                    raise InvalidArgument(f"evaluate's {name!r} must be one scalar a "
                                          f"member, got shape {jnp.shape(value)}")
            return {name: jnp.asarray(v, jnp.float32) for name, v in out.items()}
        scores = jax.vmap(one)(members.stacked)
        return guard(scores.pop("fitness"), members.stacked), scores

    def evolve(self, members: Members, hparams: Hyperparameters, fitness: jax.Array,
               key: jax.Array, space: SearchSpace, *, exploit: Truncation | Binary,
               explore: Perturbation | Resample | RayTune
               ) -> tuple[Members, Hyperparameters, Lineage]:
        """PBT's :func:`~bbjax.strategies.pbt.evolve` on the members: each copies its
        ``lineage.parent``'s whole states (server and clients, so its hyperparameters) and
        ``hparams`` (``space``'s held values), explored members' states then hold their
        new values (:func:`numbers`)."""
        stacked, hparams, lineage = evolve(key, fitness, members.stacked, hparams, space,
                                           exploit=exploit, explore=explore)
        members = self.with_values(members.replace(stacked=stacked), numbers(space, hparams))
        return members, hparams, lineage


def numbers(space: SearchSpace, hparams: Hyperparameters) -> Hyperparameters:
    """The numbers a member's states hold for ``hparams``: ``decode``'s, a numeric
    ``Categorical``'s index replaced by its choice (float32). Raises
    :class:`InvalidArgument` for a categorical whose choices are not numbers."""
    decoded = decode(space, hparams)
    return {name: choice_values(param, decoded[name]) if isinstance(param, Categorical)
            else jnp.asarray(decoded[name], jnp.float32) for name, param in space.params}


TRUNCATION, PERTURBATION = Truncation(0.2), Perturbation(0.2)
"""The issue's exploit and explore: :func:`run`'s defaults."""


def run(population: FederatedPopulation, space: SearchSpace, key: jax.Array, *,
        population_size: int, generations: int, exploit: Truncation | Binary = TRUNCATION,
        explore: Perturbation | Resample | RayTune = PERTURBATION,
        progress: bool = False, allow_divergence: bool = False,
        config: dict | None = None) -> PbtHistory:
    """PBT over ``population``'s federated runs, as :func:`bbjax.strategies.pbt.run` over
    one-member functions: ``population_size`` members with hyperparameters drawn from
    ``space`` (its names the population's hyperparameters), ``generations`` generations of
    ``population.rounds`` rounds; between generations ``exploit`` and ``explore``
    (default: Truncation 0.2, Perturbation 0.2; the last generation is not evolved). One
    compiled program trains and evaluates a generation, one evolves it, each compiled once.
    The record's extras are the last round's metrics and ``evaluate``'s other scalars, of
    the generation's best member; its ``states`` the final :class:`Members`
    (``population.member(history.states, j)``: member ``j``'s); its ``compile_seconds`` the
    time before the first generation (initial states, tracing, compilation).

    Keys: ``members_key, space_key, evolve_key = split(key, 3)``; the hyperparameters are
    ``sample(space_key, space, population_size)``, member ``j`` runs with
    ``member_key(members_key, j)`` and generation ``g`` evolves with ``fold_in(evolve_key,
    g)``. Raises :class:`InvalidArgument` for bad counts or a space that does not name the
    population's hyperparameters, :class:`~bbjax.errors.SimulationError` for more rounds
    than the cohort schedules cover, :class:`DivergenceError` (``round`` the generation)
    when every member of a generation failed, unless ``allow_divergence``."""
    n = population_size
    for name, value in (("population_size", n), ("generations", generations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    cutoff(exploit, n)
    if sorted(space.names) != sorted(population.hyperparameters):
        raise InvalidArgument(f"the search space names {list(space.names)}; the population's "
                              f"hyperparameters are {sorted(population.hyperparameters)}")
    covered = population.simulation.scheduled_rounds
    if covered is not None and generations * population.rounds > covered:
        raise SimulationError(f"the cohort schedules cover {covered} rounds; {generations} "
                              f"generations of {population.rounds} rounds need "
                              f"{generations * population.rounds}")
    started = time.perf_counter()
    members_key, space_key, evolve_key = jax.random.split(key, 3)
    hparams = sample(space_key, space, n)
    members = jax.jit(population.init)(members_key, numbers(space, hparams), population.data)

    def train_and_evaluate(members: Members, hparams: Hyperparameters, g: jax.Array
                           ) -> tuple:
        del g  # the members' keys live in their states
        members, metrics = population.train(members)
        fitness, extras = population.evaluate(members)
        extras = {**{k: v[:, -1] for k, v in metrics.items()}, **extras}
        return members, fitness, extras, decode(space, hparams)

    def evolve_step(members: Members, hparams: Hyperparameters, fitness: jax.Array,
                    g: jax.Array) -> tuple:
        members, hparams, lineage = population.evolve(
            members, hparams, fitness, jax.random.fold_in(evolve_key, g), space,
            exploit=exploit, explore=explore)
        return members, hparams, lineage.parent

    g0 = jnp.zeros((), jnp.int32)
    step = jax.jit(train_and_evaluate, donate_argnums=0).lower(members, hparams, g0).compile()
    fitness_shape = jax.ShapeDtypeStruct((n,), jnp.float32)
    evolver = jax.jit(evolve_step).lower(members, hparams, fitness_shape, g0).compile()
    compile_seconds = time.perf_counter() - started
    return run_generations(step, evolver, members, hparams, space=space,
                           generations=generations, started=started,
                           compile_seconds=compile_seconds, config=config,
                           progress=progress, allow_divergence=allow_divergence)


def _depends_on_input(jaxpr: Any) -> list[bool]:
    """Per output of ``jaxpr``, whether it depends on an input (an equation's outputs depend
    on all of its inputs: conservative for equations with inner jaxprs)."""
    dependent = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(isinstance(v, Var) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    return [isinstance(v, Var) and v in dependent for v in jaxpr.outvars]


# --- from a configuration --------------------------------------------------------------------

FEDERATED_HYPERPARAMETERS: dict[str, Place] = {
    "client_learning_rate": CLIENT_LEARNING_RATE, "server_learning_rate": SERVER_LEARNING_RATE}
"""What a search space over federated members may name, and where each lives."""


def federated_population(training: Training, names: tuple[str, ...], *, num_clients: int,
                         clients_per_round: int, rounds: int, rule: str = "fedadam",
                         server_learning_rate: float = 0.1) -> FederatedPopulation:
    """Federated members of ``training``'s data and model (one client of its generator per
    client, ``test_fraction`` held out): each round ``clients_per_round`` of
    ``num_clients`` clients (all: every round) take ``training.local_steps`` SGD steps and
    the server aggregates them by ``rule`` (:func:`server_rate_aggregator`, at
    ``server_learning_rate`` unless searched); ``rounds`` rounds a generation. ``names``
    (in :data:`FEDERATED_HYPERPARAMETERS`) are the searched hyperparameters; the others keep
    ``training.learning_rate`` and ``server_learning_rate``. Fitness: the server model's
    negated ``test_loss`` on every client's held-out rows (``accuracy`` recorded too).
    Raises :class:`ConfigError` naming a field at fault."""
    unknown = [n for n in names if n not in FEDERATED_HYPERPARAMETERS]
    if unknown or not names:
        raise ConfigError(f"search_space must name some of {list(FEDERATED_HYPERPARAMETERS)} "
                          f"for federated members, got {list(names)}", field="search_space")
    for field, value in (("num_clients", num_clients), ("clients_per_round",
                                                        clients_per_round), ("rounds", rounds)):
        check_count(field, value, error=ConfigError, field=field)
    if clients_per_round > num_clients:
        raise ConfigError(f"clients_per_round must be at most num_clients ({num_clients}), "
                          f"got {clients_per_round}", field="clients_per_round")
    train, test = workload.peer_data(training, num_clients)
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=training.learning_rate)
    model = flax_model(workload.network(training, train), sgd, cross_entropy)
    initial = model.init(jax.random.PRNGKey(training.seed)).params
    bindings = {"model": model, "data": workload.data_source(training, train),
                "aggregator": server_rate_aggregator(rule, clients_per_round, initial,
                                                     server_learning_rate)}
    compiler = Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(FedAvgRound(training.local_steps, num_clients=clients_per_round,
                                            aggregator=True))
    clients = Peers(num_clients, init_args={"data": (train.x, train.y, train.sizes)},
                    cohort=None if clients_per_round == num_clients else clients_per_round)
    simulation = Simulation(compiled, {"server": Peers(1), "client": clients}, bindings)
    measure = workload.evaluation(model, test, "server", consensus=False)

    def evaluate(states: States) -> dict[str, jax.Array]:
        metrics = measure(states)
        return {"fitness": -metrics["test_loss"], "accuracy": metrics["accuracy"]}

    return FederatedPopulation(simulation, {n: FEDERATED_HYPERPARAMETERS[n] for n in names},
                               evaluate, rounds)


@dataclass
class FederatedPbtRun:
    """A built PBT run over federated members: :meth:`run` trains it."""

    population: FederatedPopulation
    space: SearchSpace
    population_size: int
    generations: int
    exploit: Truncation | Binary
    explore: Perturbation | Resample | RayTune
    seed: int
    config: dict

    def run(self, key: jax.Array | None = None, progress: bool = False,
            devices: int | None = None, *, allow_divergence: bool = False) -> PbtHistory:
        """:func:`run` with the key of the configured seed (or ``key``). The population
        runs on the default device: ``devices`` other than None or 1 raise
        :class:`ConfigError`."""
        if devices not in (None, 1):
            raise ConfigError(f"a federated population runs on one device, got devices="
                              f"{devices!r}", field="devices")
        key = jax.random.PRNGKey(self.seed) if key is None else key
        return run(self.population, self.space, key, population_size=self.population_size,
                   generations=self.generations, exploit=self.exploit, explore=self.explore,
                   progress=progress, allow_divergence=allow_divergence, config=self.config)


def federated_population_run(strategy: Any, *, num_clients: int, clients_per_round: int,
                             rounds: int, rule: str = "fedadam",
                             server_learning_rate: float = 0.1) -> FederatedPbtRun:
    """The PBT run of ``strategy`` (a ``PopulationBased`` configuration: its
    ``population_size``, ``generations``, ``exploit``, ``explore``, ``search_space`` over
    :data:`FEDERATED_HYPERPARAMETERS` and ``training``) whose members are the federated
    runs of :func:`federated_population` with the other arguments. The record's ``config``
    is ``strategy.to_json()`` with those arguments under ``"federated"``. Raises
    :class:`ConfigError` naming a field at fault."""
    names = tuple(strategy.search_space.names)
    population = federated_population(
        strategy.training, names, num_clients=num_clients, clients_per_round=clients_per_round,
        rounds=rounds, rule=rule, server_learning_rate=server_learning_rate)
    cutoff(strategy.exploit, strategy.population_size)
    config = {**strategy.to_json(), "federated": {
        "num_clients": num_clients, "clients_per_round": clients_per_round, "rounds": rounds,
        "rule": rule, "server_learning_rate": server_learning_rate}}
    return FederatedPbtRun(population, strategy.search_space, strategy.population_size,
                           strategy.generations, strategy.exploit, strategy.explore,
                           strategy.training.seed, config)
