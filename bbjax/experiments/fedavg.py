"""Ready-made FedAvg experiments: a configuration in, a compiled Module, population,
bindings and evaluation out. The ``bbjax simulate`` command runs them."""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bbjax import aggregators
from bbjax._checks import check_count, check_nonnegative, check_open_unit, check_positive
from bbjax.compiler import Compiled, Compiler
from bbjax.components import (Component, flax_model, padded_data_source, rule_aggregator,
                              scaffold_model)
from bbjax.data import FederatedData, load_npz, synthetic, synthetic_iid, train_test_split
from bbjax.errors import ConfigError
from bbjax.models import MLP, LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound, ScaffoldRound
from bbjax.modules.secure_fedavg import SecureFedAvgRound
from bbjax.simulation.history import History
from bbjax.simulation.population import Peers
from bbjax.simulation.run import simulate

RULES = {  # name -> the rule for a cohort of n clients (defaults as in Flower)
    "fedavg": lambda n: aggregators.fedavg(),
    "fedavgm": lambda n: aggregators.fedavgm(server_momentum=0.9),
    "fedadagrad": lambda n: aggregators.fedadagrad(),
    "fedadam": lambda n: aggregators.fedadam(),
    "fedyogi": lambda n: aggregators.fedyogi(),
    "qfedavg": lambda n: aggregators.qfedavg(),
    "median": lambda n: aggregators.median(),
    "trimmed_mean": lambda n: aggregators.trimmed_mean(0.2),
    "krum": lambda n: aggregators.krum(max(0, (n - 3) // 2)),
    "bulyan": lambda n: aggregators.bulyan(max(0, (n - 3) // 4)),
}


DATASETS = ("synthetic", "synthetic_iid")  # or the path of a .npz file
MODELS = ("logreg", "mlp")
SECURE = ("none", "pet")
RULE_NAMES = (*RULES, "scaffold")


@dataclass(frozen=True)
class FedAvgConfig:
    """A FedAvg run. ``dataset``: ``"synthetic"`` (FedProx Synthetic(``alpha``, ``beta``)),
    ``"synthetic_iid"`` or the path of a ``.npz`` file (:func:`bbjax.data.load_npz`); each
    client keeps ``test_fraction`` of its examples for evaluation. ``model``: ``"logreg"``
    (multinomial logistic regression) or ``"mlp"`` (one ReLU layer of ``hidden`` units).
    Each round ``clients_per_round`` of ``num_clients`` clients take ``local_steps`` SGD
    steps of ``batch_size`` examples at ``learning_rate``; the server averages their models
    weighted by example counts, or aggregates them with ``rule`` (a name in ``RULES``,
    bound as a ``rule_aggregator`` component whose state carries the rule's momenta; or
    ``"scaffold"``: ``ScaffoldRound`` with ``scaffold_model`` clients). Accuracy and loss on
    the pooled test examples are measured every ``eval_every`` rounds. ``max_weight``
    (``None``: no cap) rejects a client reporting more examples than that, as it rejects
    non-finite updates; the ``rejected`` metric counts them. ``secure``: ``"none"`` or
    ``"pet"``, FedAvg under PET masking (:class:`~bbjax.modules.secure_fedavg.
    SecureFedAvgRound`, no ``rule``): each client's scalar is its example count over
    ``max_weight``, or over the largest client's training size when ``max_weight`` is None.

    Every field is checked when the configuration is made (type, range, finiteness,
    allowed names); :class:`ConfigError` names the field, the value and what is allowed.
    Numbers are stored as ``int`` or ``float``.
    """

    dataset: str = "synthetic"
    alpha: float = 1.0
    beta: float = 1.0
    num_clients: int = 100
    max_client_size: int = 1000
    test_fraction: float = 0.2
    clients_per_round: int = 10
    rounds: int = 100
    local_steps: int = 20
    batch_size: int = 10
    learning_rate: float = 0.01
    model: str = "logreg"
    hidden: int = 64
    rule: str | None = None
    max_weight: float | None = None
    secure: str = "none"
    eval_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        if self.clients_per_round > self.num_clients:
            raise ConfigError(f"clients_per_round must be at most num_clients "
                              f"({self.num_clients}), got {self.clients_per_round}",
                              field="clients_per_round")
        if self.secure == "pet" and self.rule is not None:
            raise ConfigError(f"secure='pet' aggregates by FedAvg; rule must be null, got "
                              f"{self.rule!r}", field="secure")

    def replace(self, **changes: Any) -> FedAvgConfig:
        """A copy with ``changes``, checked; raises :class:`ConfigError` for an unknown
        field or an invalid value."""
        known = sorted(f.name for f in dataclasses.fields(self))
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown configuration fields {unknown}; known: {known}",
                              field=unknown[0])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _count(name: str, value: Any) -> int:
    return check_count(name, value, error=ConfigError, field=name)


def _real(check: Callable[..., float]) -> Callable[[str, Any], float]:
    return lambda name, value: check(name, value, error=ConfigError, field=name)


def _choice(choices: Sequence[str], *, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if (value is None and optional) or (isinstance(value, str) and value in choices):
            return value
        allowed = ", ".join(repr(c) for c in choices) + (" or null" if optional else "")
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}", field=name)
    return check


def _dataset_name(name: str, value: Any) -> str:
    if isinstance(value, str) and (value in DATASETS
                                   or value.endswith(".npz") and Path(value).is_file()):
        return value
    raise ConfigError(f"{name} must be 'synthetic', 'synthetic_iid' or the path of an existing "
                      f".npz file, got {value!r}", field=name)


def _optional_positive(name: str, value: Any) -> float | None:
    return None if value is None else check_positive(name, value, error=ConfigError, field=name)


def _seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value < 2**32:
        raise ConfigError(f"{name} must be an integer in [0, 2**32), got {value!r}", field=name)
    return int(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "dataset": _dataset_name, "alpha": _real(check_nonnegative),
    "beta": _real(check_nonnegative), "num_clients": _count, "max_client_size": _count,
    "test_fraction": _real(check_open_unit), "clients_per_round": _count, "rounds": _count,
    "local_steps": _count, "batch_size": _count, "learning_rate": _real(check_positive),
    "model": _choice(MODELS), "hidden": _count, "rule": _choice(RULE_NAMES, optional=True),
    "max_weight": _optional_positive, "secure": _choice(SECURE), "eval_every": _count,
    "seed": _seed,
}


CONFIGS = {
    "fedavg-synthetic": FedAvgConfig(),
    "fedavg-synthetic-mlp": FedAvgConfig(model="mlp", learning_rate=0.05),
    "fedavg-synthetic-iid": FedAvgConfig(dataset="synthetic_iid"),
    "fedadam-synthetic": FedAvgConfig(rule="fedadam", learning_rate=0.003),
    "median-synthetic": FedAvgConfig(rule="median"),
    "scaffold-synthetic": FedAvgConfig(rule="scaffold"),
}


def load_config(name_or_path: str) -> FedAvgConfig:
    """A named configuration (``CONFIGS``) or a JSON file of ``FedAvgConfig`` fields (the
    others default), checked; raises :class:`ConfigError`."""
    if name_or_path in CONFIGS:
        return CONFIGS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"no configuration named {name_or_path!r} and no such file; "
                          f"named ones: {sorted(CONFIGS)}")
    try:
        fields = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: expected a JSON object of configuration fields")
    return FedAvgConfig().replace(**fields)


@dataclass
class Experiment:
    """Everything ``simulate`` needs for one configuration."""

    config: FedAvgConfig
    compiled: Compiled
    population: dict[str, Peers]
    bindings: dict[str, Component]
    train: FederatedData
    test: FederatedData

    def evaluate(self, states: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Accuracy and loss of the server's model on every client's test examples."""
        model = self.bindings["model"]
        server = jax.tree.map(lambda a: a[0], states["server"]["model"])
        x = jnp.asarray(self.test.x).reshape(-1, *self.test.x.shape[2:])
        y = jnp.asarray(self.test.y).reshape(-1)
        mask = jnp.asarray(self.test.mask).reshape(-1).astype(jnp.float32)
        logits = model.call("forward", server, x)[1]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        total = jnp.maximum(mask.sum(), 1.0)
        return {"accuracy": jnp.sum((jnp.argmax(logits, -1) == y) * mask) / total,
                "test_loss": jnp.sum(jnp.where(mask > 0, losses, 0.0)) / total}

    def run(self, key: jax.Array | None = None, progress: bool = False,
            devices: int | None = None, rounds: int | None = None, *,
            allow_divergence: bool = False, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int | None = None, resume: str | Path | None = None) -> History:
        """Simulate the configured rounds (or ``rounds``) with the key of the configured
        seed (or ``key``); the History's ``config`` is the configuration. The keyword
        arguments and the errors are :func:`simulate`'s."""
        key = jax.random.PRNGKey(self.config.seed) if key is None else key
        return simulate(self.compiled, self.population,
                        self.config.rounds if rounds is None else rounds, key,
                        bindings=self.bindings, evaluate=self.evaluate,
                        eval_every=self.config.eval_every, progress=progress, devices=devices,
                        allow_divergence=allow_divergence, config=self.config.to_dict(),
                        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                        resume=resume)


def build(config: FedAvgConfig) -> Experiment:
    """Data, model, compiled round and population for ``config``. Raises
    :class:`ConfigError` for a ``.npz`` file whose client count is not ``num_clients`` or a
    client left without training examples."""
    data = _dataset(config)
    train, test = train_test_split(jax.random.PRNGKey(config.seed), data, config.test_fraction)
    empty = np.flatnonzero(np.asarray(train.sizes) == 0)
    if empty.size:
        client = int(empty[0])
        raise ConfigError(f"test_fraction {config.test_fraction} leaves client {client} (of "
                          f"{int(data.sizes[client])} examples) no training examples; lower "
                          f"test_fraction or raise max_client_size", field="test_fraction")
    features, classes = int(np.prod(train.x.shape[2:])), int(data.y.max()) + 1
    if config.model == "logreg":
        module = LogisticRegression(features, classes, rngs=nnx.Rngs(config.seed))
    else:
        module = MLP(features, config.hidden, classes, rngs=nnx.Rngs(config.seed))
    if config.rule == "scaffold":
        model = scaffold_model(module, config.learning_rate, cross_entropy)
    else:
        model = flax_model(module, optax.sgd(config.learning_rate), cross_entropy)
    batch = min(config.batch_size, int(train.sizes.min()))
    source = padded_data_source(train.x[0], train.y[0], int(train.sizes[0]), batch)
    bindings = {"model": model, "data": source}
    n = config.clients_per_round
    if config.secure == "pet":
        cap = config.max_weight or float(train.sizes.max())
        round_module = SecureFedAvgRound(config.local_steps, max_weight=cap)
        bindings["pet"] = round_module.masking(model.init(jax.random.PRNGKey(config.seed)).params)
    elif config.rule is None:
        round_module = FedAvgRound(config.local_steps, max_weight=config.max_weight)
    elif config.rule == "scaffold":
        initial = model.init(jax.random.PRNGKey(config.seed)).params
        rule = aggregators.scaffold(num_clients=config.num_clients)
        bindings["aggregator"] = rule_aggregator(rule, n, initial)
        round_module = ScaffoldRound(config.local_steps, num_clients=n,
                                     max_weight=config.max_weight)
    else:
        initial = model.init(jax.random.PRNGKey(config.seed)).params
        bindings["aggregator"] = rule_aggregator(RULES[config.rule](n), n, initial)
        round_module = FedAvgRound(config.local_steps, num_clients=n, aggregator=True,
                                   max_weight=config.max_weight)
    # the pet slot stays opaque: its masking runs as the JAX it is written in
    compiler = Compiler(inline=sorted(set(bindings) - {"pet"})) if "pet" in bindings \
        else Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(round_module)
    clients = Peers(config.num_clients, init_args={"data": (train.x, train.y, train.sizes)},
                    cohort=config.clients_per_round)
    population = {"server": Peers(1), "client": clients}
    if config.secure == "pet":
        population["sum"] = Peers(1)
    return Experiment(config, compiled, population, bindings, train, test)


def _dataset(config: FedAvgConfig) -> FederatedData:
    cap = config.max_client_size
    if config.dataset == "synthetic":
        return synthetic(config.alpha, config.beta, config.num_clients, config.seed,
                         max_size=cap)
    if config.dataset == "synthetic_iid":
        return synthetic_iid(config.num_clients, config.seed, max_size=cap)
    data = load_npz(config.dataset)
    if data.num_clients != config.num_clients:
        raise ConfigError(f"num_clients must match the {data.num_clients} clients of "
                          f"{config.dataset}, got {config.num_clients}", field="num_clients")
    return data
