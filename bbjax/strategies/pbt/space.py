"""A population's hyperparameters as arrays, drawn from a
:class:`~bbjax.strategies.config.SearchSpace`.

A population of ``n`` holds its hyperparameters as ``Hyperparameters``: one ``[n]`` array
per name of the space, in the space's order. ``Float`` and ``Int`` values are float32
(somatize's perturbation turns an integer into a float, and rounding at every perturbation
would pin a small integer in place: ``2 × (1 ± 0.2)`` rounds back to 2), a
``Categorical`` value is the int32 index of its choice. :func:`decode` gives the values a
member's functions see: ``Float`` as is, ``Int`` rounded to the nearest integer (ties to
even) as int32, ``Categorical`` as its index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbjax.errors import InvalidArgument
from bbjax.strategies.config import Categorical, Float, Int, SearchSpace

Hyperparameters = dict[str, jax.Array]
"""``{name: [n] array}`` in a search space's order (float32, or int32 for a categorical)."""


def draw(key: jax.Array, param: Float | Int | Categorical, n: int) -> jax.Array:
    """``n`` values of one parameter, drawn uniformly (held as :func:`sample` holds them)."""
    if isinstance(param, Float):
        return jax.random.uniform(key, (n,), jnp.float32, param.low, param.high)
    if isinstance(param, Int):
        return jax.random.randint(key, (n,), param.low, param.high + 1).astype(jnp.float32)
    return jax.random.randint(key, (n,), 0, len(param.choices)).astype(jnp.int32)


def sample(key: jax.Array, space: SearchSpace, n: int) -> Hyperparameters:
    """``n`` members' hyperparameters, each drawn uniformly from ``space`` (``Float`` from
    ``[low, high]``, ``Int`` from ``low..high`` inclusive, ``Categorical`` over its
    choices), name ``i`` with ``jax.random.split(key, len(space.params))[i]``."""
    keys = jax.random.split(key, len(space.params))
    return {name: draw(k, param, n) for k, (name, param) in zip(keys, space.params)}


def decode(space: SearchSpace, hparams: Hyperparameters) -> Hyperparameters:
    """The values the member functions see: ``Int`` rounded to int32, the rest as held.
    Works on a population's ``[n]`` arrays and on one member's scalars."""
    check(space, hparams)
    return {name: jnp.round(hparams[name]).astype(jnp.int32) if isinstance(param, Int)
            else hparams[name] for name, param in space.params}


def choice_values(param: Categorical, index: jax.Array) -> jax.Array:
    """The numeric choices at ``index`` (float32); :class:`InvalidArgument` when a choice
    is not a number."""
    if not param.numeric():
        raise InvalidArgument(f"the choices {list(param.choices)!r} are not all numbers")
    return jnp.asarray(param.choices, jnp.float32)[index]


def check(space: SearchSpace, hparams: Hyperparameters) -> None:
    """:class:`InvalidArgument` unless ``hparams`` holds exactly the names of ``space``,
    each an array of one common shape."""
    if not isinstance(hparams, dict) or set(hparams) != set(space.names):
        got = sorted(hparams) if isinstance(hparams, dict) else type(hparams).__name__
        raise InvalidArgument(f"hyperparameters must name {list(space.names)}, got {got}")
    shapes = {name: jnp.shape(value) for name, value in hparams.items()}
    if len(set(shapes.values())) > 1:
        raise InvalidArgument(f"hyperparameters must share one shape, got {shapes}")
