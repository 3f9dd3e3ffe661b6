"""The Gaussian mechanism: its noise scales, the noised mean of clipped updates, and
:func:`gaussian_noise`, the mechanism as an algorithm."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from scipy import special

from bbjax._checks import check_count, check_nonnegative, check_open_unit, check_positive
from bbjax.algorithms.base import Algorithm, EmptyState, check_mask, check_stack
from bbjax.errors import PrivacyError

PyTree = Any


def central_noise_stddev(
    noise_multiplier: ArrayLike, clipping_norm: ArrayLike, num_sampled_clients: int
) -> ArrayLike:
    """Noise std of the central mechanism on a mean: ``σ = z · C / n``.

    The mean of ``n`` updates clipped to L2 norm ``C`` changes by at most ``C / n`` when one
    client is added or removed, so ``z`` is the noise in units of that sensitivity.
    """
    return noise_multiplier * clipping_norm / num_sampled_clients


def add_gaussian_noise(key: jax.Array | None, tree: PyTree, stddev: ArrayLike) -> PyTree:
    """``tree`` plus independent ``N(0, stddev²)`` noise on every coordinate (one draw of
    all coordinates, split over the leaves, in flattening order); ``tree`` itself when
    ``key`` is None and ``stddev`` is the Python number 0."""
    if key is None and isinstance(stddev, (int, float)) and stddev == 0:
        return tree
    if key is None:
        raise PrivacyError("Gaussian noise needs a PRNG key")
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [int(np.prod(np.shape(x))) for x in leaves]
    noise = stddev * jax.random.normal(key, (sum(sizes),), jnp.float32)
    parts = jnp.split(noise, np.cumsum(sizes)[:-1])
    noised = [
        (x + n.reshape(np.shape(x))).astype(jnp.result_type(x)) for x, n in zip(leaves, parts)
    ]
    return jax.tree.unflatten(treedef, noised)


def noised_mean(
    key: jax.Array,
    updates: PyTree,
    stddev: ArrayLike,
    num_sampled_clients: int,
    mask: jax.Array | None = None,
) -> PyTree:
    """``(Σ_i mask_i · updates_i) / num_sampled_clients + N(0, stddev²)`` per coordinate.

    ``updates`` has a leading client axis on every leaf; masked-out rows contribute
    nothing, even NaN. The denominator is the fixed (expected) cohort size, not the number
    of valid rows, so one client's influence on the mean is bounded by
    ``C / num_sampled_clients`` whatever the others do. ``key`` may be None when
    ``stddev`` is 0.
    """
    n = jax.tree.leaves(updates)[0].shape[0]
    mask = jnp.ones(n, bool) if mask is None else jnp.asarray(mask, bool)

    def mean(x: jax.Array) -> jax.Array:
        rows = jnp.where(mask.reshape((n,) + (1,) * (x.ndim - 1)), x.astype(jnp.float32), 0.0)
        return (jnp.sum(rows, axis=0) / num_sampled_clients).astype(x.dtype)

    return add_gaussian_noise(key, jax.tree.map(mean, updates), stddev)


def _check_epsilon_delta(epsilon: float, delta: float, sensitivity: float) -> None:
    check_positive("epsilon", epsilon, error=PrivacyError)
    check_nonnegative("sensitivity", sensitivity, error=PrivacyError)
    check_open_unit("delta", delta, error=PrivacyError)


def classic_gaussian_stddev(epsilon: float, delta: float, sensitivity: float) -> float:
    """``σ = Δ · sqrt(2 ln(1.25 / δ)) / ε`` (Dwork & Roth 2014, Thm A.1; needs ε < 1)."""
    _check_epsilon_delta(epsilon, delta, sensitivity)
    if epsilon >= 1.0:
        raise PrivacyError(
            f"epsilon must be < 1 for the classic Gaussian calibration, got {epsilon!r}; "
            "use the analytic calibration"
        )
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def gaussian_delta(stddev: float, epsilon: float, sensitivity: float) -> float:
    """Exact δ(ε) of the Gaussian mechanism with noise ``stddev`` and L2 sensitivity ``Δ``
    (Balle & Wang 2018, Thm 8): ``Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ)``."""
    a, b = sensitivity / (2.0 * stddev), epsilon * stddev / sensitivity
    return float(special.ndtr(a - b) - math.exp(epsilon + special.log_ndtr(-a - b)))


def analytic_gaussian_stddev(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest ``σ`` (to 1e-12 relative) with ``gaussian_delta(σ, ε, Δ) <= δ``: the
    analytic Gaussian mechanism (Balle & Wang 2018), valid for every ε > 0."""
    _check_epsilon_delta(epsilon, delta, sensitivity)
    if sensitivity == 0:
        return 0.0
    lo, hi = 0.0, float(sensitivity)
    while gaussian_delta(hi, epsilon, sensitivity) > delta:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mid, epsilon, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_noise(noise_multiplier: float, clipping_norm: float,
                   num_sampled_clients: int | None = None) -> Algorithm:
    """The central Gaussian mechanism on the mean, as an algorithm: a cohort stack
    ``[n, ...]`` of updates clipped to ``clipping_norm`` (``C``) in, their noised mean out,
    ``Σ_i mask_i · u_i / m + N(0, (z · C / m)²)`` per coordinate with ``z =
    noise_multiplier`` and ``m = num_sampled_clients`` (None: the stack's ``n``).

    ``update(updates, state, params=None, *, key, mask=None)``; the key is needed unless
    ``z`` is 0. It does not clip: put :func:`bbjax.privacy.clip` (same ``C``) before it, or
    let the clients clip.
    """
    z = check_nonnegative("noise_multiplier", noise_multiplier, error=PrivacyError)
    c = check_positive("clipping_norm", clipping_norm, error=PrivacyError)
    if num_sampled_clients is not None:
        num_sampled_clients = check_count("num_sampled_clients", num_sampled_clients,
                                          error=PrivacyError)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(updates: PyTree, state: EmptyState, params: PyTree = None, *,
               key: jax.Array | None = None, mask: ArrayLike | None = None
               ) -> tuple[PyTree, EmptyState]:
        n = check_stack("gaussian_noise", updates, PrivacyError)
        m = n if num_sampled_clients is None else num_sampled_clients
        mask = check_mask("gaussian_noise", mask, n, PrivacyError)
        if z > 0 and key is None:
            raise PrivacyError("gaussian_noise needs a PRNG key (update(..., key=...))")
        return noised_mean(key, updates, central_noise_stddev(z, c, m), m, mask), state

    return Algorithm(init, update, ("mask",))
