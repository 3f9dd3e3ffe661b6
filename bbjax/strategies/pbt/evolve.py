"""One PBT evolution step: exploit, then explore the bottom positions."""

from __future__ import annotations

from typing import Any

import jax

from bbjax.strategies.config import (
    Binary,
    Perturbation,
    RayTune,
    Resample,
    SearchSpace,
    Truncation,
)
from bbjax.strategies.pbt.exploitation import Lineage
from bbjax.strategies.pbt.exploitation import exploit as exploit_step
from bbjax.strategies.pbt.exploration import explore as explore_step
from bbjax.strategies.pbt.space import Hyperparameters


def evolve(key: jax.Array, fitness: jax.Array, members: Any, hparams: Hyperparameters,
           space: SearchSpace, *, exploit: Truncation | Binary,
           explore: Perturbation | Resample | RayTune
           ) -> tuple[Any, Hyperparameters, Lineage]:
    """``(members, hparams, lineage)`` after
    :func:`~bbjax.strategies.pbt.exploitation.exploit` with the first key of
    ``jax.random.split(key)`` and :func:`~bbjax.strategies.pbt.exploration.explore` of
    ``lineage.explored`` with the second. Pure and jittable (``space`` and the methods
    static)."""
    exploit_key, explore_key = jax.random.split(key)
    members, hparams, lineage = exploit_step(exploit_key, fitness, members, hparams,
                                                     exploit)
    hparams = explore_step(explore_key, hparams, lineage.explored, space, explore)
    return members, hparams, lineage
