"""Local DP: each client clips its update and adds Gaussian noise before it leaves the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax

from bbjax._checks import check_positive
from bbjax.algorithms.base import Algorithm, EmptyState, check_stack, split_keys
from bbjax.errors import PrivacyError
from bbjax.privacy.clipping import clip_by_global_norm
from bbjax.privacy.gaussian import (
    add_gaussian_noise,
    analytic_gaussian_stddev,
    classic_gaussian_stddev,
)

PyTree = Any


class LocalDP(NamedTuple):
    """``privatize(key, update)`` clips ``update`` to ``clipping_norm`` and adds
    ``N(0, noise_stddev²)`` to every coordinate. ``algorithm`` does the same to every row
    of a cohort stack ``[n, ...]``, row ``i`` with key ``jax.random.split(key, n)[i]``
    (no state)."""

    clipping_norm: float
    noise_stddev: float
    privatize: Callable[[jax.Array, PyTree], PyTree]
    algorithm: Algorithm


def local_gaussian(
    clipping_norm: float,
    epsilon: float,
    delta: float,
    *,
    sensitivity: float | None = None,
    calibration: Literal["analytic", "classic"] = "analytic",
) -> LocalDP:
    """An (ε, δ)-locally-DP Gaussian mechanism on one client's update.

    ``sensitivity`` (Δ) defaults to ``2 · clipping_norm``, the largest L2 distance between
    two clipped updates. ``calibration="analytic"`` gives the exact smallest σ for (ε, δ)
    (Balle & Wang 2018); ``"classic"`` gives ``Δ · sqrt(2 ln(1.25/δ)) / ε`` (Dwork & Roth,
    ε < 1; the noise of Flower's ``LocalDpMod``).
    """
    c = check_positive("clipping_norm", clipping_norm, error=PrivacyError)
    delta_l2 = 2.0 * c if sensitivity is None else sensitivity
    if calibration == "analytic":
        stddev = analytic_gaussian_stddev(epsilon, delta, delta_l2)
    elif calibration == "classic":
        stddev = classic_gaussian_stddev(epsilon, delta, delta_l2)
    else:
        raise PrivacyError(f"calibration must be 'analytic' or 'classic', got {calibration!r}")

    def privatize(key: jax.Array, update: PyTree) -> PyTree:
        clipped, _ = clip_by_global_norm(update, c)
        return add_gaussian_noise(key, clipped, stddev)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(updates: PyTree, state: EmptyState, params: PyTree = None, *,
               key: jax.Array | None = None) -> tuple[PyTree, EmptyState]:
        n = check_stack("local_gaussian", updates, PrivacyError)
        keys = split_keys("local_gaussian", key, n, PrivacyError)
        return jax.vmap(privatize)(keys, updates), state

    return LocalDP(c, stddev, privatize, Algorithm(init, update))
