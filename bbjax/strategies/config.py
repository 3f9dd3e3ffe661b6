"""somatize-core's ``TrainingStrategy`` JSON as frozen, checked configurations.

:func:`parse` reads the serde form exactly (tag ``"type"`` for the strategy, ``"method"``
for an aggregation or a client selection, ``"protocol"`` for a communication protocol,
``{"WorkerId": ...}`` / ``{"Tag": ...}`` for a partition's target), plus bbjax's extras:
``rounds`` and ``training`` (:class:`Training`) on the runnable strategies,
``num_clients`` on :class:`Local`, ``client_tags`` on :class:`Federated`, ``staleness`` and ``delays`` on
:class:`ParameterServer`, ``eta`` on :class:`FedYogi` and a topology's arguments on
:class:`Decentralized`. Every value is checked when a configuration is made, parsed or
constructed directly; :class:`~bbjax.errors.ConfigError` names the JSON path of the field
at fault (``aggregation.mu``, ``partitions[1].node_ids[0]``; ``$`` for the whole value)
and unknown fields are refused. ``to_json()`` gives the JSON value back:
``parse(config.to_json()) == config``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import InitVar
from pathlib import Path
from typing import Any

from bbjax.errors import ConfigError
from bbjax.strategies._schema import (
    Config,
    _finite,
    choice,
    error,
    frozen,
    integer,
    join,
    json_object,
    list_of,
    nonempty_text,
    one_of,
    optional,
    real,
    show,
)

DATASETS = ("synthetic", "synthetic_iid")
MODELS = ("logreg", "mlp")
TOPOLOGIES = ("ring", "torus", "exponential", "one_peer_exponential", "base_graph",
              "random_regular", "complete")
TOPOLOGY_ARGS = {"torus": ("rows",), "base_graph": ("k",), "random_regular": ("k", "seed")}
"""The arguments each topology takes besides the number of nodes (``num_replicas``)."""


# --- what every runnable strategy trains (bbjax) ------------------------------------------

@frozen
class Training(Config):
    """What the peers of a runnable strategy learn, the defaults ``bbjax simulate``'s
    (:class:`~bbjax.experiments.FedAvgConfig`): FedProx Synthetic(``alpha``, ``beta``) or
    ``"synthetic_iid"`` data of at most ``max_client_size`` examples a peer, of which
    ``test_fraction`` is held out; a ``"logreg"`` or ``"mlp"`` (``hidden`` units) model;
    SGD at ``learning_rate`` on batches of ``batch_size``, ``local_steps`` steps a round
    where a strategy takes several; evaluation every ``eval_every`` rounds; ``seed``."""

    dataset: str = "synthetic"
    alpha: float = 1.0
    beta: float = 1.0
    max_client_size: int = 1000
    test_fraction: float = 0.2
    model: str = "logreg"
    hidden: int = 64
    learning_rate: float = 0.01
    local_steps: int = 20
    batch_size: int = 10
    eval_every: int = 1
    seed: int = 0
    _path: InitVar[str] = ""

    SPEC = {"dataset": choice(DATASETS), "alpha": real(0), "beta": real(0),
            "max_client_size": integer(1), "test_fraction": real(0, 1, low_open=True,
                                                                 high_open=True),
            "model": choice(MODELS), "hidden": integer(1),
            "learning_rate": real(0, low_open=True), "local_steps": integer(1),
            "batch_size": integer(1), "eval_every": integer(1),
            "seed": integer(0, 2**32 - 1)}


def _training_check(value: Any, path: str) -> Training:
    return value if isinstance(value, Training) else Training.from_json(value, path)


# --- Local ---------------------------------------------------------------------------------

@frozen
class Local(Config):
    """``{"type": "Local"}``: one peer trains on all the data, ``rounds`` rounds of
    ``training.local_steps`` steps; bbjax extras ``rounds``, ``training`` and
    ``num_clients``: the peer holds the rows of that many clients of the generator (those
    a Federated run of ``num_clients`` clients spreads over them). somatize runs one
    ``fit``."""

    rounds: int = 100
    num_clients: int = 1
    training: Training = Training()
    _path: InitVar[str] = ""

    TAG = ("type", "Local")
    SPEC = {"rounds": integer(1), "num_clients": integer(1), "training": _training_check}


# --- DataParallel --------------------------------------------------------------------------

@frozen
class AllReduce(Config):
    """``{"method": "AllReduce"}``: every replica applies the mean gradient."""

    _path: InitVar[str] = ""

    TAG = ("method", "AllReduce")


@frozen
class ParameterServer(Config):
    """``{"method": "ParameterServer"}``: a server holds the parameters, the replicas pull
    them and push gradients; synchronous by default. bbjax extras: ``staleness`` τ (stale
    synchronous parallel: a replica at most τ clocks ahead of the slowest) and, with it,
    ``delays`` (each replica's compute delay in rounds; default all 0)."""

    staleness: int | None = None
    delays: tuple[int, ...] | None = None
    _path: InitVar[str] = ""

    TAG = ("method", "ParameterServer")
    SPEC = {"staleness": optional(integer(0)),
            "delays": optional(list_of(integer(0), non_empty=True))}

    def _check_together(self, path: str) -> None:
        if self.delays is not None and self.staleness is None:
            raise error(join(path, "delays"), "need a staleness (delays make the server "
                                              "stale synchronous)")


@frozen
class Decentralized(Config):
    """``{"method": "Decentralized", "topology": NAME}``: D-PSGD over the topology ``NAME``
    (one of ``TOPOLOGIES``) of ``num_replicas`` nodes; ``torus`` takes ``rows`` (which
    divides the node count), ``base_graph`` takes ``k``, ``random_regular`` takes ``k`` and
    ``seed`` (default 0)."""

    topology: str
    rows: int | None = None
    k: int | None = None
    seed: int | None = None
    _path: InitVar[str] = ""

    TAG = ("method", "Decentralized")
    SPEC = {"topology": choice(TOPOLOGIES), "rows": optional(integer(1)),
            "k": optional(integer(1)), "seed": optional(integer(0, 2**32 - 1))}

    def _check_together(self, path: str) -> None:
        takes = TOPOLOGY_ARGS.get(self.topology, ())
        for name in ("rows", "k", "seed"):
            if getattr(self, name) is not None and name not in takes:
                raise error(join(path, name), f"is not an argument of {self.topology} "
                                              f"(it takes {', '.join(takes) or 'none'})")
        for name in takes:
            if name != "seed" and getattr(self, name) is None:
                raise error(join(path, name), f"is missing ({self.topology} takes it)")


@frozen
class DataParallel(Config):
    """``{"type": "DataParallel", "num_replicas": R, "aggregation": ...}`` with
    :class:`AllReduce`, :class:`ParameterServer` or :class:`Decentralized`; bbjax extras
    ``rounds`` and ``training``. Each replica holds one peer's data."""

    num_replicas: int
    aggregation: AllReduce | ParameterServer | Decentralized
    rounds: int = 100
    training: Training = Training()
    _path: InitVar[str] = ""

    TAG = ("type", "DataParallel")
    SPEC = {"num_replicas": integer(1),
            "aggregation": one_of(AllReduce, ParameterServer, Decentralized),
            "rounds": integer(1), "training": _training_check}

    def _check_together(self, path: str) -> None:
        at = join(path, "aggregation")
        agg = self.aggregation
        if isinstance(agg, ParameterServer) and agg.delays is not None \
                and len(agg.delays) != self.num_replicas:
            raise error(join(at, "delays"), f"must list one delay per replica "
                                            f"({self.num_replicas}), got {len(agg.delays)}")
        if isinstance(agg, Decentralized) and agg.topology == "torus" \
                and self.num_replicas % agg.rows:
            raise error(join(at, "rows"), f"must divide num_replicas ({self.num_replicas}), "
                                          f"got {agg.rows}")


# --- Federated -----------------------------------------------------------------------------

@frozen
class FedAvg(Config):
    """``{"method": "FedAvg"}``: the server keeps the clients' mean model weighted by their
    example counts (somatize's mean is unweighted)."""

    _path: InitVar[str] = ""

    TAG = ("method", "FedAvg")


@frozen
class FedProx(Config):
    """``{"method": "FedProx", "mu": μ}``: clients minimize ``loss + μ/2‖w − w_g‖²``;
    the server averages as :class:`FedAvg`. ``mu >= 0``."""

    mu: float
    _path: InitVar[str] = ""

    TAG = ("method", "FedProx")
    SPEC = {"mu": real(0)}


@frozen
class FedYogi(Config):
    """``{"method": "FedYogi", "beta1", "beta2", "tau"}``: the server optimizer of Reddi et
    al. 2021 over the weighted mean update Δ: ``m ← β1 m + (1−β1)Δ``,
    ``v ← v − (1−β2)Δ² sign(v − Δ²)``, ``x ← x + η m / (√v + τ)``. ``0 <= beta < 1``,
    ``tau > 0``; bbjax extra ``eta`` (η > 0, default 0.01)."""

    beta1: float
    beta2: float
    tau: float
    eta: float = 0.01
    _path: InitVar[str] = ""

    TAG = ("method", "FedYogi")
    SPEC = {"beta1": real(0, 1, high_open=True), "beta2": real(0, 1, high_open=True),
            "tau": real(0, low_open=True), "eta": real(0, low_open=True)}


@frozen
class AllClients(Config):
    """``{"method": "All"}``: every client takes part in every round."""

    _path: InitVar[str] = ""

    TAG = ("method", "All")


@frozen
class RandomClients(Config):
    """``{"method": "Random", "fraction": f}``: each round ``ceil(f · num_clients)``
    distinct clients drawn uniformly with the round's key; ``0 < f <= 1``."""

    fraction: float
    _path: InitVar[str] = ""

    TAG = ("method", "Random")
    SPEC = {"fraction": real(0, 1, low_open=True)}


@frozen
class ByCapability(Config):
    """``{"method": "ByCapability", "required_tags": [...]}``: every round, the clients
    carrying all of ``required_tags`` (``Federated.client_tags``) and no other."""

    required_tags: tuple[str, ...]
    _path: InitVar[str] = ""

    TAG = ("method", "ByCapability")
    SPEC = {"required_tags": list_of(nonempty_text, distinct=True)}


@frozen
class Federated(Config):
    """``{"type": "Federated", "num_clients", "rounds", "aggregation", "client_selection"}``
    with :class:`FedAvg`, :class:`FedProx` or :class:`FedYogi` and :class:`AllClients`,
    :class:`RandomClients` or :class:`ByCapability`; bbjax extras ``training`` and
    ``client_tags`` (one list of tags per client, or none: no client has a tag)."""

    num_clients: int
    rounds: int
    aggregation: FedAvg | FedProx | FedYogi
    client_selection: AllClients | RandomClients | ByCapability
    client_tags: tuple[tuple[str, ...], ...] = ()
    training: Training = Training()
    _path: InitVar[str] = ""

    TAG = ("type", "Federated")
    SPEC = {"num_clients": integer(1), "rounds": integer(1),
            "aggregation": one_of(FedAvg, FedProx, FedYogi),
            "client_selection": one_of(AllClients, RandomClients, ByCapability),
            "client_tags": list_of(list_of(nonempty_text, distinct=True)),
            "training": _training_check}

    def _check_together(self, path: str) -> None:
        if self.client_tags and len(self.client_tags) != self.num_clients:
            raise error(join(path, "client_tags"),
                        f"must list the tags of each of the {self.num_clients} clients, got "
                        f"{len(self.client_tags)} lists")
        selection = self.client_selection
        if isinstance(selection, ByCapability) and not self.eligible():
            raise error(join(path, "client_selection.required_tags"),
                        f"{list(selection.required_tags)}: no client carries all of them "
                        f"(client_tags)")

    def eligible(self) -> tuple[int, ...]:
        """The ids of the clients ``client_selection`` may choose, ascending."""
        selection = self.client_selection
        if not isinstance(selection, ByCapability):
            return tuple(range(self.num_clients))
        tags = self.client_tags or ((),) * self.num_clients
        return tuple(i for i, own in enumerate(tags) if set(selection.required_tags) <= set(own))

    def cohort_size(self) -> int:
        """How many clients take part in each round."""
        if isinstance(self.client_selection, RandomClients):
            return math.ceil(self.client_selection.fraction * self.num_clients)
        return len(self.eligible())


# --- ModelParallel -------------------------------------------------------------------------

@frozen
class WorkerTarget(Config):
    """``{"WorkerId": ID}``: the worker of that id."""

    worker_id: str
    _path: InitVar[str] = ""

    SPEC = {"worker_id": nonempty_text}

    def to_json(self) -> dict[str, Any]:
        return {"WorkerId": self.worker_id}


@frozen
class TagTarget(Config):
    """``{"Tag": TAG}``: a worker carrying that tag."""

    tag: str
    _path: InitVar[str] = ""

    SPEC = {"tag": nonempty_text}

    def to_json(self) -> dict[str, Any]:
        return {"Tag": self.tag}


def _target(value: Any, path: str) -> WorkerTarget | TagTarget:
    if isinstance(value, (WorkerTarget, TagTarget)):
        return value
    fields = json_object(value, path)
    if len(fields) != 1 or next(iter(fields)) not in ("WorkerId", "Tag"):
        raise error(path, f"must be {{\"WorkerId\": ID}} or {{\"Tag\": TAG}}, got "
                          f"{show(value)}")
    (name, inner), = fields.items()
    inner = nonempty_text(inner, join(path, name))
    return WorkerTarget(inner) if name == "WorkerId" else TagTarget(inner)


@frozen
class Partition(Config):
    """``{"node_ids": [...], "target": ...}``: the graph nodes one stage runs, and where."""

    node_ids: tuple[str, ...]
    target: WorkerTarget | TagTarget
    _path: InitVar[str] = ""

    SPEC = {"node_ids": list_of(nonempty_text, non_empty=True, distinct=True), "target": _target}


@frozen
class DataStore(Config):
    """``{"protocol": "DataStore"}``: activations pass through the shared data store."""

    _path: InitVar[str] = ""

    TAG = ("protocol", "DataStore")


@frozen
class Direct(Config):
    """``{"protocol": "Direct"}``: activations go straight to the next stage."""

    _path: InitVar[str] = ""

    TAG = ("protocol", "Direct")


@frozen
class Pipeline(Config):
    """``{"protocol": "Pipeline", "micro_batch_size": B}``: micro-batches of ``B >= 1``."""

    micro_batch_size: int
    _path: InitVar[str] = ""

    TAG = ("protocol", "Pipeline")
    SPEC = {"micro_batch_size": integer(1)}


def _partitions(value: Any, path: str) -> tuple[Partition, ...]:
    parts = list_of(lambda v, p: v if isinstance(v, Partition) else Partition.from_json(v, p),
                    non_empty=True)(value, path)
    seen: dict[str, int] = {}
    for i, part in enumerate(parts):
        for j, node in enumerate(part.node_ids):
            if node in seen:
                raise error(f"{path}[{i}].node_ids[{j}]",
                            f"{node!r} is already claimed by partition {seen[node]}")
            seen[node] = i
    return parts


@frozen
class ModelParallel(Config):
    """``{"type": "ModelParallel", "partitions": [...], "communication": ...}``: stages
    of a model on different workers (every node claimed once), trained by
    :mod:`bbjax.strategies.model_parallel`; bbjax extras ``rounds`` (one training step
    each), ``training`` and ``hidden_layers``, the widths of the ReLU layers ``dense0 …``
    of the :class:`~bbjax.strategies.model_parallel.layered.LayeredMLP` whose layers
    (then ``head``) the partitions' ``node_ids`` name. A ``Pipeline``'s
    ``micro_batch_size`` must divide ``training.batch_size``."""

    partitions: tuple[Partition, ...]
    communication: DataStore | Direct | Pipeline
    rounds: int = 100
    hidden_layers: tuple[int, ...] = (64, 64)
    training: Training = Training()
    _path: InitVar[str] = ""

    TAG = ("type", "ModelParallel")
    SPEC = {"partitions": _partitions,
            "communication": one_of(DataStore, Direct, Pipeline),
            "rounds": integer(1), "hidden_layers": list_of(integer(1)),
            "training": _training_check}

    def _check_together(self, path: str) -> None:
        pipe, batch = self.communication, self.training.batch_size
        if isinstance(pipe, Pipeline) and batch % pipe.micro_batch_size:
            raise error(join(path, "communication.micro_batch_size"),
                        f"{pipe.micro_batch_size} must divide training.batch_size {batch} "
                        "(equal micro-batches)")

    def micro_batches(self) -> int:
        """How many micro-batches a batch is cut into (1 unless ``Pipeline``)."""
        pipe = self.communication
        return self.training.batch_size // pipe.micro_batch_size \
            if isinstance(pipe, Pipeline) else 1


# --- PopulationBased -----------------------------------------------------------------------

@frozen
class Truncation(Config):
    """``{"method": "Truncation", "fraction": f}``: the worst ``ceil(n f)`` (at most half)
    copy the best; ``0 < f <= 1``."""

    fraction: float
    _path: InitVar[str] = ""

    TAG = ("method", "Truncation")
    SPEC = {"fraction": real(0, 1, low_open=True)}


@frozen
class Binary(Config):
    """``{"method": "Binary"}``: each of the bottom half copies a random better member."""

    _path: InitVar[str] = ""

    TAG = ("method", "Binary")


@frozen
class Perturbation(Config):
    """``{"method": "Perturbation", "factor": c}``: each numeric hyperparameter times
    ``1 + u c``, ``u`` uniform in [−1, 1]; ``0 <= c < 1`` keeps its sign."""

    factor: float
    _path: InitVar[str] = ""

    TAG = ("method", "Perturbation")
    SPEC = {"factor": real(0, 1, high_open=True)}


@frozen
class Resample(Config):
    """``{"method": "Resample"}``: hyperparameters drawn afresh from the search space."""

    _path: InitVar[str] = ""

    TAG = ("method", "Resample")


@frozen
class RayTune(Config):
    """``{"method": "RayTune"}``: Ray Tune's ``PopulationBasedTraining`` explore, its
    defaults: each hyperparameter on its own is redrawn from the search space with
    probability ``resample_probability`` (0.25), else a number is multiplied by one of
    ``factors`` (0.8 or 1.2, even odds) and a categorical moves to a neighbouring choice
    (the first and last stay put on the side that has none); ``0 <= p <= 1``, two factors
    ``> 0``."""

    resample_probability: float = 0.25
    factors: tuple[float, ...] = (0.8, 1.2)
    _path: InitVar[str] = ""

    TAG = ("method", "RayTune")
    SPEC = {"resample_probability": real(0, 1),
            "factors": list_of(real(0, low_open=True), non_empty=True)}

    def _check_together(self, path: str) -> None:
        if len(self.factors) != 2:
            raise error(join(path, "factors"), f"must hold two factors, got "
                                               f"{len(self.factors)}")


@frozen
class Float(Config):
    """``{"type": "Float", "low", "high"}``: a real drawn uniformly from ``[low, high]``
    (finite, ``low <= high``)."""

    low: float
    high: float
    _path: InitVar[str] = ""

    TAG = ("type", "Float")
    SPEC = {"low": real(-math.inf), "high": real(-math.inf)}

    def _check_together(self, path: str) -> None:
        if self.low > self.high:
            raise error(join(path, "high"), f"must be >= low ({self.low}), got {self.high}")


INT_LIMIT = 2**24
"""An ``Int``'s bounds lie in ``[-INT_LIMIT, INT_LIMIT]``: float32 holds them exactly."""


@frozen
class Int(Config):
    """``{"type": "Int", "low", "high"}``: an integer drawn uniformly from ``low..high``
    inclusive (``|bound| <= INT_LIMIT``, ``low <= high``)."""

    low: int
    high: int
    _path: InitVar[str] = ""

    TAG = ("type", "Int")
    SPEC = {"low": integer(-INT_LIMIT, INT_LIMIT), "high": integer(-INT_LIMIT, INT_LIMIT)}

    def _check_together(self, path: str) -> None:
        if self.low > self.high:
            raise error(join(path, "high"), f"must be >= low ({self.low}), got {self.high}")


def _scalar(value: Any, path: str) -> str | int | float | bool:
    if isinstance(value, (str, bool)) or (isinstance(value, numbers.Real)
                                          and _finite(value)):
        return value
    raise error(path, f"must be a string, a boolean or a finite number, got {show(value)}")


@frozen
class Categorical(Config):
    """``{"type": "Categorical", "choices": [...]}``: one of ``choices`` (distinct strings,
    booleans or finite numbers), each as likely; held as its index."""

    choices: tuple[str | int | float | bool, ...]
    _path: InitVar[str] = ""

    TAG = ("type", "Categorical")
    SPEC = {"choices": list_of(_scalar, non_empty=True, distinct=True)}

    def numeric(self) -> bool:
        """Whether every choice is a number (not a boolean or a string)."""
        return all(isinstance(c, numbers.Real) and not isinstance(c, bool)
                   for c in self.choices)


Param = Float | Int | Categorical
_param = one_of(Float, Int, Categorical)


def _named_params(value: Any, path: str) -> tuple[tuple[str, Param], ...]:
    if isinstance(value, Mapping):
        value = tuple(value.items())
    if not isinstance(value, (tuple, list)) or not value:
        raise error(path, f"must name at least one hyperparameter, got {show(value)}")
    out, seen = [], set()
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise error(path, f"must pair each name with its parameter, got {show(item)}")
        name, param = item
        name = nonempty_text(name, path)
        if name in seen:
            raise error(join(path, name), "is named twice")
        seen.add(name)
        out.append((name, _param(param, join(path, name))))
    return tuple(out)


@frozen
class SearchSpace(Config):
    """``{NAME: Float | Int | Categorical, ...}``: the hyperparameters a population
    searches, in order; made from a mapping or ``(name, param)`` pairs."""

    params: tuple[tuple[str, Param], ...]
    _path: InitVar[str] = ""

    def _check_together(self, path: str) -> None:
        object.__setattr__(self, "params", _named_params(self.params, path))

    @classmethod
    def from_json(cls, value: Any, path: str = "") -> SearchSpace:
        return cls(tuple(json_object(value, path).items()), _path=path)

    def to_json(self) -> dict[str, Any]:
        return {name: param.to_json() for name, param in self.params}

    @property
    def names(self) -> tuple[str, ...]:
        """The hyperparameters' names, in order."""
        return tuple(name for name, _ in self.params)

    def __getitem__(self, name: str) -> Param:
        for own, param in self.params:
            if own == name:
                return param
        raise KeyError(name)


def _search_space(value: Any, path: str) -> SearchSpace:
    return value if isinstance(value, SearchSpace) else SearchSpace.from_json(value, path)


TASKS = ("local", "federated")
LOCAL_HYPERPARAMETERS = ("learning_rate", "momentum", "weight_decay")
"""What a ``"local"`` task's member reads from the search space (the rest of its SGD is
``training``'s: ``learning_rate`` when not searched, no momentum, no weight decay)."""
FEDERATED_HYPERPARAMETERS = ("client_learning_rate", "server_learning_rate")
"""What a ``"federated"`` task's member reads from the search space."""
FEDERATED_RULES = ("fedadagrad", "fedadam", "fedavgm", "fedyogi")
"""The server rules a ``"federated"`` task's members may run."""


@frozen
class FederatedMembers(Config):
    """``{"clients_per_round", "rounds", "rule", "server_learning_rate"}``: each member of a
    ``"federated"`` task is a federated simulation (:mod:`bbjax.strategies.pbt.federated`)
    of the strategy's ``num_clients`` clients, ``clients_per_round`` of them a round
    (default: all), ``rounds`` rounds a generation, the server rule ``rule`` (one of
    ``FEDERATED_RULES``) at ``server_learning_rate`` where the search space does not name
    it."""

    clients_per_round: int | None = None
    rounds: int = 5
    rule: str = "fedadam"
    server_learning_rate: float = 0.1
    _path: InitVar[str] = ""

    SPEC = {"clients_per_round": optional(integer(1)), "rounds": integer(1),
            "rule": choice(FEDERATED_RULES),
            "server_learning_rate": real(0, low_open=True)}


def _federated_members(value: Any, path: str) -> FederatedMembers | None:
    if value is None or isinstance(value, FederatedMembers):
        return value
    return FederatedMembers.from_json(value, path)


@frozen
class PopulationBased(Config):
    """``{"type": "PopulationBased", "population_size", "generations", "exploit",
    "explore"}``: population-based training (:mod:`bbjax.strategies.pbt`). bbjax extras:
    the explore method :class:`RayTune`; ``search_space`` (:class:`SearchSpace`, default
    ``learning_rate`` uniform in [0.001, 0.5]); ``task``: what each member trains.
    ``"local"``: ``training``'s model on the pooled rows of ``num_clients`` clients (as
    :class:`Local`), ``training.local_steps`` SGD steps a generation, fitness the negated
    held-out loss; the search space names only ``LOCAL_HYPERPARAMETERS``. ``"federated"``:
    a federated simulation of ``num_clients`` clients as ``federated``
    (:class:`FederatedMembers`, default its defaults) says; the search space names only
    ``FEDERATED_HYPERPARAMETERS``. Each searched value is a number."""

    population_size: int
    generations: int
    exploit: Truncation | Binary
    explore: Perturbation | Resample | RayTune
    search_space: SearchSpace = SearchSpace({"learning_rate": Float(0.001, 0.5)})
    task: str = "local"
    num_clients: int = 1
    federated: FederatedMembers | None = None
    training: Training = Training()
    _path: InitVar[str] = ""

    TAG = ("type", "PopulationBased")
    SPEC = {"population_size": integer(2), "generations": integer(1),
            "exploit": one_of(Truncation, Binary),
            "explore": one_of(Perturbation, Resample, RayTune),
            "search_space": _search_space, "task": choice(TASKS),
            "num_clients": integer(1), "federated": _federated_members,
            "training": _training_check}

    def _check_together(self, path: str) -> None:
        names = LOCAL_HYPERPARAMETERS if self.task == "local" else FEDERATED_HYPERPARAMETERS
        for name, param in self.search_space.params:
            at = join(join(path, "search_space"), name)
            if name not in names:
                raise error(at, f"is not a hyperparameter of the {self.task!r} task (it "
                                f"reads {', '.join(names)})")
            if isinstance(param, Categorical) and not param.numeric():
                raise error(join(at, "choices"), f"must be numbers for {name}, got "
                                                 f"{show(list(param.choices))}")
        if self.task == "local" and self.federated is not None:
            raise error(join(path, "federated"), "is read by the 'federated' task only")
        per_round = self.members().clients_per_round if self.task == "federated" else None
        if per_round is not None and per_round > self.num_clients:
            raise error(join(path, "federated.clients_per_round"),
                        f"must be at most num_clients ({self.num_clients}), got {per_round}")

    def members(self) -> FederatedMembers:
        """What each member of the ``"federated"`` task runs (``federated`` or the
        defaults)."""
        return self.federated or FederatedMembers()


Strategy = Local | DataParallel | ModelParallel | Federated | PopulationBased
_strategy = one_of(Local, DataParallel, ModelParallel, Federated, PopulationBased)


def parse(value: Any) -> Strategy:
    """The strategy the JSON value ``value`` describes; raises :class:`ConfigError`
    naming the path of the field at fault."""
    return _strategy(value, "")


def loads(text: str) -> Strategy:
    """The strategy of a JSON text (:func:`parse`)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"the strategy is not valid JSON ({exc})", field="$") from None
    return parse(value)


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy of a JSON file (:func:`parse`), each ``overrides`` entry (a dotted
    path such as ``"rounds"`` or ``"aggregation.mu"`` -> a JSON value) set first;
    :class:`ConfigError` when the file cannot be read or a path crosses a non-object."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read strategy file {str(path)!r}: {exc}") from None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})", field="$") from None
    for dotted, new in (overrides or {}).items():
        value = _override(value, dotted, new)
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", field=exc.field) from None


def _override(value: Any, dotted: str, new: Any) -> Any:
    """``value`` with the field at ``dotted`` set to ``new`` (missing objects created)."""
    names = dotted.split(".")
    if not all(names):
        raise ConfigError(f"{dotted!r} is no dotted field path", field=dotted)
    root = dict(json_object(value, ""))
    node = root
    for i, name in enumerate(names[:-1]):
        inner = node.get(name, {})
        node[name] = dict(json_object(inner, ".".join(names[:i + 1])))
        node = node[name]
    node[names[-1]] = new
    return root
