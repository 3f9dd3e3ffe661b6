"""L2 clipping and central DP with a fixed clipping norm (DP-FedAvg, McMahan et al. 2018).

A central-DP mechanism is a :class:`CentralDP`: ``init()`` gives the server's
:class:`DPState`; each client runs ``client(state, update)`` on its model update before
sending; the server runs ``aggregate(key, state, contributions, mask)`` on the stacked
client outputs (leading client axis) and gets the noised mean update and its next state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bbjax._checks import check_count, check_nonnegative, check_positive
from bbjax.privacy.gaussian import central_noise_stddev, noised_mean
from bbjax.errors import PrivacyError

PyTree = Any


class DPState(NamedTuple):
    """The server's DP state: the clipping norm ``C`` of the current round."""

    clipping_norm: jax.Array


class CentralDP(NamedTuple):
    """Central DP on the mean of client updates.

    ``init() -> DPState``; ``client(state, update) -> contribution`` runs on each client;
    ``aggregate(key, state, contributions, mask=None) -> (noised_mean, state)`` runs on the
    server over the stacked contributions (leading client axis; bool ``mask`` marks the
    valid rows, e.g. ``Cohort.valid``).
    """

    init: Callable[[], DPState]
    client: Callable[[DPState, PyTree], Any]
    aggregate: Callable[..., tuple[PyTree, DPState]]


def global_norm(tree: PyTree) -> jax.Array:
    """L2 norm of all coordinates of ``tree`` together (float32)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip_by_global_norm(tree: PyTree, clipping_norm: ArrayLike) -> tuple[PyTree, jax.Array]:
    """``(tree · min(1, C / ‖tree‖), ‖tree‖)``: ``tree`` scaled to L2 norm at most ``C``."""
    norm = global_norm(tree)
    scale = jnp.where(norm > clipping_norm, clipping_norm / norm, 1.0)
    return jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree), norm


def _fixed_clipping(
    noise_multiplier: float, clipping_norm: float, num_sampled_clients: int, clip_on_client: bool
) -> CentralDP:
    z = check_nonnegative("noise_multiplier", noise_multiplier, error=PrivacyError)
    c = check_positive("clipping_norm", clipping_norm, error=PrivacyError)
    n = check_count("num_sampled_clients", num_sampled_clients, error=PrivacyError)

    def init() -> DPState:
        return DPState(jnp.float32(c))

    def client(state: DPState, update: PyTree) -> PyTree:
        return clip_by_global_norm(update, state.clipping_norm)[0] if clip_on_client else update

    def aggregate(
        key: jax.Array, state: DPState, contributions: PyTree, mask: jax.Array | None = None
    ) -> tuple[PyTree, DPState]:
        clipped = contributions
        if not clip_on_client:
            clipped, _ = jax.vmap(clip_by_global_norm, (0, None))(
                contributions, state.clipping_norm
            )
        stddev = central_noise_stddev(z, state.clipping_norm, n)
        return noised_mean(key, clipped, stddev, n, mask), state

    return CentralDP(init, client, aggregate)


def server_side_fixed_clipping(
    noise_multiplier: float, clipping_norm: float, num_sampled_clients: int
) -> CentralDP:
    """The server clips every update to ``C``, averages over ``n = num_sampled_clients``
    and adds ``N(0, (z·C/n)²)``; ``client`` is the identity."""
    return _fixed_clipping(
        noise_multiplier, clipping_norm, num_sampled_clients, clip_on_client=False
    )


def client_side_fixed_clipping(
    noise_multiplier: float, clipping_norm: float, num_sampled_clients: int
) -> CentralDP:
    """Every client clips its update to ``C`` (``client``); the server averages over
    ``n = num_sampled_clients`` and adds ``N(0, (z·C/n)²)``."""
    return _fixed_clipping(
        noise_multiplier, clipping_norm, num_sampled_clients, clip_on_client=True
    )
