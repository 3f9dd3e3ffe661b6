"""The ``"local"`` task of a ``PopulationBased`` strategy: every member trains
``training``'s model on the pooled rows of ``num_clients`` clients (their held-out rows
measure it), searched SGD hyperparameters in its ``optax.inject_hyperparams`` state.

Each member starts from the same parameters (``training.seed``); a generation is
``training.local_steps`` SGD steps on batches of ``batch_size`` rows drawn with
replacement by the step's key; the optimizer is ``add_decayed_weights(weight_decay)``
then ``sgd(learning_rate, momentum)`` with the member's searched values (unsearched:
``training.learning_rate``, momentum 0, weight decay 0). Fitness is the negated loss on
the held-out rows; ``accuracy`` and ``test_loss`` are recorded too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bbjax.errors import ConfigError
from bbjax.models import cross_entropy
from bbjax.strategies import workload
from bbjax.strategies.config import Categorical, PopulationBased
from bbjax.strategies.pbt.history import PbtHistory
from bbjax.strategies.pbt.optim import with_hyperparams
from bbjax.strategies.pbt.run import run
from bbjax.strategies.pbt.space import Hyperparameters, choice_values


def _sgd(learning_rate: float, momentum: float, weight_decay: float
         ) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum))


@dataclass(frozen=True)
class LocalPopulation:
    """A built ``PopulationBased{task: "local"}`` strategy: its member functions
    (:func:`~bbjax.strategies.pbt.run.run`'s ``init``, ``train_step``, ``evaluate``)."""

    strategy: PopulationBased
    init: Any
    train_step: Any
    evaluate: Any

    def run(self, key: jax.Array | None = None, progress: bool = False,
            devices: int | None = None, *, allow_divergence: bool = False) -> PbtHistory:
        """Run the strategy (key: ``training.seed``'s, or ``key``); the record's ``config``
        is the strategy's JSON. ``devices`` other than None or 1 raise
        :class:`ConfigError`: a population runs on one device."""
        if devices not in (None, 1):
            raise ConfigError(f"a PopulationBased run uses one device, got devices={devices}",
                              field="devices")
        s = self.strategy
        key = jax.random.PRNGKey(s.training.seed) if key is None else key
        return run(self.init, self.train_step, self.evaluate, s.search_space, key,
                   population_size=s.population_size, generations=s.generations,
                   exploit=s.exploit, explore=s.explore,
                   steps_per_generation=s.training.local_steps, progress=progress,
                   allow_divergence=allow_divergence, config=s.to_json())


def local_population(strategy: PopulationBased) -> LocalPopulation:
    """The member functions of ``strategy``'s ``"local"`` task; :class:`ConfigError` when
    the data leaves no training example."""
    training = strategy.training
    train, test = workload.peer_data(training, strategy.num_clients)
    x, y = (jnp.asarray(a) for a in workload.pooled_rows(train))
    tx, ty = (jnp.asarray(a) for a in workload.pooled_rows(test))
    if not ty.size:
        raise ConfigError("training.test_fraction leaves no held-out rows to measure "
                          "fitness on", field="training.test_fraction")
    graphdef, params = nnx.split(workload.network(training, train))
    optimizer = optax.inject_hyperparams(_sgd)(learning_rate=training.learning_rate,
                                               momentum=0.0, weight_decay=0.0)
    rows, batch = x.shape[0], min(training.batch_size, int(x.shape[0]))
    space = strategy.search_space

    def numbers(values: Hyperparameters) -> Hyperparameters:
        return {name: choice_values(param, values[name]) if isinstance(param, Categorical)
                else values[name] for name, param in space.params}

    def loss(p: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        return cross_entropy(nnx.merge(graphdef, p)(xs), ys)

    def init(key: jax.Array, values: Hyperparameters) -> dict[str, Any]:
        del key  # every member starts from training.seed's parameters
        return {"params": params,
                "opt": with_hyperparams(optimizer.init(params), numbers(values))}

    def train_step(state: dict[str, Any], values: Hyperparameters, key: jax.Array
                   ) -> dict[str, Any]:
        idx = jax.random.randint(key, (batch,), 0, rows)
        grads = jax.grad(loss)(state["params"], x[idx], y[idx])
        opt = with_hyperparams(state["opt"], numbers(values))
        updates, opt = optimizer.update(grads, opt, state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}

    def evaluate(state: dict[str, Any], values: Hyperparameters, key: jax.Array
                 ) -> dict[str, jax.Array]:
        logits = nnx.merge(graphdef, state["params"])(tx)
        test_loss = cross_entropy(logits, ty)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == ty)
        return {"fitness": -test_loss, "accuracy": accuracy, "test_loss": test_loss}

    return LocalPopulation(strategy, init, train_step, evaluate)
