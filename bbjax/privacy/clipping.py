"""L2 clipping (:func:`clip_by_global_norm`, and :func:`clip` on a cohort) and central DP
with a fixed clipping norm (DP-FedAvg, McMahan et al. 2018).

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

from bbjax._checks import check_count, check_positive
from bbjax.algorithms.base import Algorithm, EmptyState, check_stack, identity
from bbjax.algorithms.combine import chain
from bbjax.errors import PrivacyError
from bbjax.privacy.gaussian import gaussian_noise

PyTree = Any


class DPState(NamedTuple):
    """The server's DP state: the clipping norm ``C`` of the current round."""

    clipping_norm: jax.Array


class CentralDP(NamedTuple):
    """Central DP on the mean of client updates.

    ``init() -> DPState``; ``client(state, update) -> contribution`` runs on each client;
    ``aggregate(key, state, contributions, mask=None) -> (noised_mean, state)`` runs on the
    server over the stacked contributions (leading client axis; bool ``mask`` marks the
    valid rows, e.g. ``Cohort.valid``). ``algorithm`` is the server's part on the
    ``bbjax.algorithms`` contract, which ``aggregate`` runs.
    """

    init: Callable[[], DPState]
    client: Callable[[DPState, PyTree], Any]
    aggregate: Callable[..., tuple[PyTree, DPState]]
    algorithm: Algorithm


def global_norm(tree: PyTree) -> jax.Array:
    """L2 norm of all coordinates of ``tree`` together (float32)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip_by_global_norm(tree: PyTree, clipping_norm: ArrayLike) -> tuple[PyTree, jax.Array]:
    """``(tree · min(1, C / ‖tree‖), ‖tree‖)``: ``tree`` scaled to L2 norm at most ``C``."""
    norm = global_norm(tree)
    scale = jnp.where(norm > clipping_norm, clipping_norm / norm, 1.0)
    return jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree), norm


def clip(clipping_norm: float) -> Algorithm:
    """Each client's update of a cohort stack ``[n, ...]`` scaled to L2 norm at most
    ``clipping_norm`` (:func:`clip_by_global_norm` per row); no state, no key."""
    c = check_positive("clipping_norm", clipping_norm, error=PrivacyError)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(updates: PyTree, state: EmptyState, params: PyTree = None, *,
               key: jax.Array | None = None) -> tuple[PyTree, EmptyState]:
        check_stack("clip", updates, PrivacyError)
        return jax.vmap(clip_by_global_norm, (0, None))(updates, c)[0], state

    return Algorithm(init, update)


def _fixed_clipping(
    noise_multiplier: float, clipping_norm: float, num_sampled_clients: int, clip_on_client: bool
) -> CentralDP:
    n = check_count("num_sampled_clients", num_sampled_clients, error=PrivacyError)
    noise = gaussian_noise(noise_multiplier, clipping_norm, n)
    c = check_positive("clipping_norm", clipping_norm, error=PrivacyError)
    # The same stages either way (the clients' clipping stands in for the server's), so
    # both sides draw the same noise from the same key.
    server = chain(identity() if clip_on_client else clip(c), noise)

    def init() -> DPState:
        return DPState(jnp.float32(c))

    def client(state: DPState, update: PyTree) -> PyTree:
        return clip_by_global_norm(update, c)[0] if clip_on_client else update

    def aggregate(
        key: jax.Array, state: DPState, contributions: PyTree, mask: jax.Array | None = None
    ) -> tuple[PyTree, DPState]:
        mean, _ = server.update(contributions, server.init(None), key=key, mask=mask)
        return mean, state

    return CentralDP(init, client, aggregate, server)


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
