"""PBT's explore step: new hyperparameters for the slots an exploit marked ``explored``
(the bottom ``cutoff`` positions, whether or not they copied), the others unchanged. Pure
and jittable; the method is static.

- :class:`~bbjax.strategies.config.Perturbation` ``{factor}`` (somatize): every ``Float``
  and ``Int`` value times ``1 + u · factor``, ``u`` uniform in [−1, 1] drawn per slot and
  name; an ``Int`` stays a float (as in somatize;
  :func:`~bbjax.strategies.pbt.space.decode` rounds it); a ``Categorical`` keeps its choice (somatize multiplies any numeric JSON
  value, so a numeric choice would leave its list). Nothing is clipped to the bounds.
- :class:`~bbjax.strategies.config.Resample` (somatize): every value redrawn from the
  search space (:func:`~bbjax.strategies.pbt.space.sample`).
- :class:`~bbjax.strategies.config.RayTune` (Ray Tune's ``PopulationBasedTraining``
  explore): each value on its own is redrawn with probability ``resample_probability``,
  else a number is multiplied by ``factors[0]`` or ``factors[1]`` (even odds; an ``Int``
  then truncated toward zero, Ray's ``int()``) and a categorical moves one choice down or
  up (even odds, clamped to the list).

:func:`ray_tune_preset` is Ray Tune's defaults as an (exploit, explore) pair.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbjax.errors import InvalidArgument
from bbjax.strategies.config import (
    Categorical,
    Int,
    Perturbation,
    RayTune,
    Resample,
    SearchSpace,
    Truncation,
)
from bbjax.strategies.pbt.space import Hyperparameters, check, draw, sample


def ray_tune_preset() -> tuple[Truncation, RayTune]:
    """Ray Tune's PBT defaults: ``quantile_fraction`` 0.25 as ``Truncation(0.25)`` (the
    bottom quarter copies the top quarter, somatize's i-th worst from i-th best pairing;
    Ray clones a random top member), ``resample_probability`` 0.25 and perturbation
    factors 0.8 / 1.2 as ``RayTune()``."""
    return Truncation(0.25), RayTune()


def explore(key: jax.Array, hparams: Hyperparameters, explored: jax.Array,
            space: SearchSpace, method: Perturbation | Resample | RayTune
            ) -> Hyperparameters:
    """``hparams`` (``{name: [n]}``, in ``space``) with the ``explored`` (``[n]`` bool)
    slots' values rewritten by ``method``; name ``i`` draws with
    ``jax.random.split(key, len(space.params))[i]`` (Resample: all of ``sample(key, ...)``)."""
    check(space, hparams)
    n = jnp.shape(explored)[0]
    if isinstance(method, Resample):
        new = sample(key, space, n)
    elif isinstance(method, Perturbation):
        new = {name: _perturb(k, hparams[name], param, method)
               for k, (name, param) in zip(jax.random.split(key, len(space.params)),
                                           space.params)}
    elif isinstance(method, RayTune):
        new = {name: _ray_tune(k, hparams[name], param, method)
               for k, (name, param) in zip(jax.random.split(key, len(space.params)),
                                           space.params)}
    else:
        raise InvalidArgument(f"explore must be Perturbation, Resample or RayTune, got "
                              f"{method!r}")
    return {name: jnp.where(explored, new[name], hparams[name]) for name in space.names}


def _perturb(key: jax.Array, value: jax.Array, param, method: Perturbation) -> jax.Array:
    if isinstance(param, Categorical):
        return value
    u = jax.random.uniform(key, value.shape, jnp.float32, -1.0, 1.0)
    return value * (1.0 + u * method.factor)


def _ray_tune(key: jax.Array, value: jax.Array, param, method: RayTune) -> jax.Array:
    coin, side, fresh = jax.random.split(key, 3)
    n = value.shape[0]
    resample = jax.random.uniform(coin, (n,)) < method.resample_probability
    first = jax.random.bernoulli(side, 0.5, (n,))
    drawn = draw(fresh, param, n)
    if isinstance(param, Categorical):
        moved = jnp.clip(value + jnp.where(first, -1, 1), 0, len(param.choices) - 1)
        return jnp.where(resample, drawn, moved.astype(value.dtype))
    scaled = value * jnp.where(first, method.factors[0], method.factors[1])
    if isinstance(param, Int):
        scaled = jnp.trunc(scaled)
    return jnp.where(resample, drawn, scaled.astype(value.dtype))
