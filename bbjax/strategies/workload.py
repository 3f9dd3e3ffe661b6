"""What a strategy's peers learn (its :class:`~bbjax.strategies.config.Training`): their
data, their model and how the result is measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bbjax.components import Component, fedprox_model, flax_model, padded_data_source
from bbjax.data import FederatedData, synthetic, synthetic_iid, train_test_split
from bbjax.errors import ConfigError
from bbjax.models import MLP, LogisticRegression, cross_entropy
from bbjax.strategies.config import Training
from bbjax.strategies.decentralized.metrics import evaluator


def peer_data(training: Training, peers: int) -> tuple[FederatedData, FederatedData]:
    """``(train, test)``: one client of the configured generator per peer, ``test_fraction``
    of each held out. Raises :class:`ConfigError` when a peer is left no training
    example."""
    cap = training.max_client_size
    if training.dataset == "synthetic":
        data = synthetic(training.alpha, training.beta, peers, training.seed, max_size=cap)
    else:
        data = synthetic_iid(peers, training.seed, max_size=cap)
    train, test = train_test_split(jax.random.PRNGKey(training.seed), data,
                                   training.test_fraction)
    empty = np.flatnonzero(np.asarray(train.sizes) == 0)
    if empty.size:
        raise ConfigError(f"training.test_fraction {training.test_fraction} leaves peer "
                          f"{int(empty[0])} no training examples; lower it or raise "
                          f"training.max_client_size", field="training.test_fraction")
    return train, test


def network(training: Training, train: FederatedData) -> nnx.Module:
    """The configured flax module, initialized with ``seed``, sized for ``train``."""
    features, classes = int(np.prod(train.x.shape[2:])), int(np.asarray(train.y).max()) + 1
    rngs = nnx.Rngs(training.seed)
    if training.model == "logreg":
        return LogisticRegression(features, classes, rngs=rngs)
    return MLP(features, training.hidden, classes, rngs=rngs)


def model(training: Training, train: FederatedData, proximal_mu: float | None = None
          ) -> Component:
    """The configured model with SGD at ``learning_rate`` (FedProx's objective with
    ``proximal_mu``)."""
    sgd = optax.sgd(training.learning_rate)
    if proximal_mu is None:
        return flax_model(network(training, train), sgd, cross_entropy)
    return fedprox_model(network(training, train), sgd, cross_entropy, proximal_mu)


def pooled_rows(data: FederatedData) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: every peer's real rows, peer after peer."""
    real = np.asarray(data.mask).astype(bool)
    return np.asarray(data.x)[real], np.asarray(data.y)[real]


def pooled(data: FederatedData) -> FederatedData:
    """One client holding every client's real rows (:func:`pooled_rows`)."""
    x, y = pooled_rows(data)
    return FederatedData.from_clients([x], [y])


def data_source(training: Training, train: FederatedData) -> Component:
    """The peers' DataSource: batches of ``batch_size`` (at most the smallest peer's
    training size) of their own rows."""
    batch = min(training.batch_size, int(np.asarray(train.sizes).min()))
    return padded_data_source(train.x[0], train.y[0], int(train.sizes[0]), batch)


def evaluation(model: Component, test: FederatedData, entry: str, *, consensus: bool,
               holder: Component | None = None
               ) -> Callable[[dict[str, Any]], dict[str, jax.Array]]:
    """``evaluate(states)``: ``accuracy`` and ``test_loss`` of the mean model of ``entry``'s
    peers on every peer's held-out rows, and their ``consensus_distance`` when
    ``consensus`` (:func:`~bbjax.strategies.decentralized.metrics.evaluator`). The peers'
    ``model`` slot is ``model``, or ``holder`` (a component with a ``params`` method, whose
    parameters ``model`` then loads and runs)."""
    x = jnp.asarray(test.x).reshape(-1, *test.x.shape[2:])
    inner = evaluator(model, x, jnp.asarray(test.y).reshape(-1),
                      jnp.asarray(test.mask).reshape(-1), entry=entry)
    base = model.init(jax.random.PRNGKey(0))

    def evaluate(states: dict[str, Any]) -> dict[str, jax.Array]:
        if holder is not None:
            params = jax.vmap(lambda s: holder.call("params", s)[1])(states[entry]["model"])
            loaded = jax.vmap(lambda p: model.call("load_parameters", base, p)[0])(params)
            states = {entry: {"model": loaded}}
        metrics = dict(inner(states))
        metrics["test_loss"] = metrics.pop("loss")
        if not consensus:
            del metrics["consensus_distance"]
        return metrics

    return evaluate
