"""Central DP with adaptive clipping (Andrew et al. 2021, arXiv:1905.03871, Algorithm 1).

Each round, with clipping norm ``C`` and ``m = num_sampled_clients``:

- client ``i`` clips its update to ``C`` and reports ``b_i = 1[‖Δ_i‖ <= C]``;
- the mean update is ``(Σ clipped Δ_i) / m + N(0, (z_Δ · C / m)²)``;
- the unclipped fraction is ``b̃ = (Σ b_i + N(0, σ_b²)) / m``;
- the next norm is ``C · exp(−η · (b̃ − γ))``, so ``C`` tracks the ``γ``-quantile of the
  update norms.

Both noisy queries together are a Gaussian mechanism with noise multiplier ``z`` when
``z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2)``, so the accountant is run with ``z``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bbjax._checks import check_closed_unit, check_count, check_nonnegative, check_positive
from bbjax.algorithms.base import Algorithm, check_mask, check_stack
from bbjax.errors import PrivacyError
from bbjax.privacy.clipping import CentralDP, DPState, clip_by_global_norm
from bbjax.privacy.gaussian import central_noise_stddev, noised_mean

PyTree = Any


class ClippedUpdate(NamedTuple):
    """A client's clipped update and ``unclipped = ‖update‖ <= C`` (bool scalar)."""

    update: PyTree
    unclipped: jax.Array


def update_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """``z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2)``: the update noise that, with count noise ``σ_b``,
    spends the same privacy as one Gaussian query with multiplier ``z`` (0 when ``z = 0``)."""
    z = check_nonnegative("noise_multiplier", noise_multiplier, error=PrivacyError)
    sigma_b = check_nonnegative("clipped_count_stddev", clipped_count_stddev, error=PrivacyError)
    if z == 0.0:
        return 0.0
    if z >= 2.0 * sigma_b:
        raise PrivacyError(
            f"clipped_count_stddev ({sigma_b}) must exceed noise_multiplier / 2 ({z / 2}) "
            "for the update noise to be finite"
        )
    return (z**-2 - (2.0 * sigma_b) ** -2) ** -0.5


def geometric_update(
    clipping_norm: ArrayLike,
    unclipped_fraction: ArrayLike,
    target_quantile: float,
    clip_norm_lr: float,
) -> jax.Array:
    """``C · exp(−η · (b̃ − γ))``: the geometric clipping-norm update."""
    return clipping_norm * jnp.exp(-clip_norm_lr * (unclipped_fraction - target_quantile))


def adaptive_clipping(
    noise_multiplier: float,
    num_sampled_clients: int,
    initial_clipping_norm: float = 0.1,
    target_quantile: float = 0.5,
    clip_norm_lr: float = 0.2,
    clipped_count_stddev: float | None = None,
) -> Algorithm:
    """Adaptive clipping (Andrew et al. 2021, Algorithm 1) as an algorithm: a cohort stack
    ``[n, ...]`` of updates in, the noised mean of the clipped updates out; the state is
    the round's :class:`DPState` (``init`` ignores ``params``).

    ``update(updates, state, params=None, *, key, mask=None, unclipped=None)``: with
    ``unclipped`` (bool ``[n]``, the clients' ``‖Δ_i‖ <= C`` bits) the rows are taken as
    clipped by the clients; without it the server clips them. ``clipped_count_stddev``
    (σ_b) defaults to ``num_sampled_clients / 20`` (0 when ``noise_multiplier`` is 0), the
    value Andrew et al. recommend; defaults of the other parameters are theirs too.
    """
    z = check_nonnegative("noise_multiplier", noise_multiplier, error=PrivacyError)
    m = check_count("num_sampled_clients", num_sampled_clients, error=PrivacyError)
    c0 = check_positive("initial_clipping_norm", initial_clipping_norm, error=PrivacyError)
    gamma = check_closed_unit("target_quantile", target_quantile, error=PrivacyError)
    lr = check_positive("clip_norm_lr", clip_norm_lr, error=PrivacyError)
    if clipped_count_stddev is None:
        clipped_count_stddev = m / 20.0 if z > 0 else 0.0
    sigma_b = check_nonnegative("clipped_count_stddev", clipped_count_stddev, error=PrivacyError)
    z_update = update_noise_multiplier(z, sigma_b)

    def init(params: PyTree) -> DPState:
        return DPState(jnp.float32(c0))

    def update(
        updates: PyTree, state: DPState, params: PyTree = None, *,
        key: jax.Array | None = None, mask: ArrayLike | None = None,
        unclipped: ArrayLike | None = None,
    ) -> tuple[PyTree, DPState]:
        n = check_stack("adaptive_clipping", updates, PrivacyError)
        mask = check_mask("adaptive_clipping", mask, n, PrivacyError)
        if key is None:
            raise PrivacyError("adaptive_clipping needs a PRNG key (update(..., key=...))")
        if unclipped is None:
            clipped, norms = jax.vmap(clip_by_global_norm, (0, None))(updates,
                                                                     state.clipping_norm)
            unclipped = norms <= state.clipping_norm
        else:
            clipped = updates
            unclipped = check_mask("adaptive_clipping: unclipped", unclipped, n, PrivacyError)
        update_key, count_key = jax.random.split(key)
        stddev = central_noise_stddev(z_update, state.clipping_norm, m)
        mean = noised_mean(update_key, clipped, stddev, m, mask)
        count = jnp.sum((unclipped & mask).astype(jnp.float32))
        fraction = (count + sigma_b * jax.random.normal(count_key, (), jnp.float32)) / m
        return mean, DPState(geometric_update(state.clipping_norm, fraction, gamma, lr))

    return Algorithm(init, update, ("mask", "unclipped"))


def _adaptive_clipping(algorithm: Algorithm, clip_on_client: bool) -> CentralDP:
    def init() -> DPState:
        return algorithm.init(None)

    def client(state: DPState, update: PyTree) -> PyTree:
        if not clip_on_client:
            return update
        clipped, norm = clip_by_global_norm(update, state.clipping_norm)
        return ClippedUpdate(clipped, norm <= state.clipping_norm)

    def aggregate(
        key: jax.Array, state: DPState, contributions: PyTree, mask: jax.Array | None = None
    ) -> tuple[PyTree, DPState]:
        if clip_on_client:
            return algorithm.update(contributions.update, state, key=key, mask=mask,
                                    unclipped=contributions.unclipped)
        return algorithm.update(contributions, state, key=key, mask=mask)

    return CentralDP(init, client, aggregate, algorithm)


def server_side_adaptive_clipping(
    noise_multiplier: float,
    num_sampled_clients: int,
    initial_clipping_norm: float = 0.1,
    target_quantile: float = 0.5,
    clip_norm_lr: float = 0.2,
    clipped_count_stddev: float | None = None,
) -> CentralDP:
    """Adaptive clipping done by the server; ``client`` is the identity. Parameters as in
    :func:`adaptive_clipping`."""
    return _adaptive_clipping(
        adaptive_clipping(noise_multiplier, num_sampled_clients, initial_clipping_norm,
                          target_quantile, clip_norm_lr, clipped_count_stddev),
        clip_on_client=False,
    )


def client_side_adaptive_clipping(
    noise_multiplier: float,
    num_sampled_clients: int,
    initial_clipping_norm: float = 0.1,
    target_quantile: float = 0.5,
    clip_norm_lr: float = 0.2,
    clipped_count_stddev: float | None = None,
) -> CentralDP:
    """Adaptive clipping done by the clients: ``client`` returns a :class:`ClippedUpdate`
    (the server sends ``state.clipping_norm`` to the cohort each round). Parameters as in
    :func:`adaptive_clipping`."""
    return _adaptive_clipping(
        adaptive_clipping(noise_multiplier, num_sampled_clients, initial_clipping_norm,
                          target_quantile, clip_norm_lr, clipped_count_stddev),
        clip_on_client=True,
    )
