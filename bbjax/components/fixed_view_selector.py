"""A PeerSelector over a fixed view: all of its peers, or ``n`` of them at random."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax.components.component import Component
from bbjax.errors import ComponentError
from bbjax._checks import check_count
from bbjax.components.roles import Role


@struct.dataclass
class FixedViewState:
    """The view and the key of the next random sample."""

    view: jax.Array  # int32 (num_peers,)
    key: jax.Array


def fixed_view_selector(
    peers: Sequence[int] | jax.Array, n: int | None = None, name: str = "fixed_view_selector"
) -> Component:
    """A PeerSelector whose view is ``peers`` (distinct int ids >= 0).

    ``sample(state) -> (state, peers)``: with ``n=None`` the whole view in view order (the
    key is unused); else ``n`` distinct peers drawn uniformly without replacement with the
    state's key, which advances, so the same key gives the same samples.
    ``current_view(state) -> (state, view)``. ``init(key, peers=None)``: ``peers`` given
    to ``init`` replace the view with one of the same length (e.g. per-peer neighbour
    lists under ``jax.vmap``; their distinctness is not checked). Raises
    :class:`ComponentError` for an empty, non-integer, negative or repeating view or ``n``
    outside ``[1, len(peers)]``.
    """
    role = Role.PEER_SELECTOR.value
    view = np.asarray(peers)
    if view.ndim != 1 or view.size == 0 or not np.issubdtype(view.dtype, np.integer):
        raise ComponentError(
            f"peers must be a non-empty 1-D sequence of ints, got {view.dtype}{list(view.shape)}",
            component=name,
            role=role,
        )
    if (view < 0).any() or len(np.unique(view)) != view.size:
        raise ComponentError(
            f"peer ids must be distinct and >= 0, got {view.tolist()}", component=name, role=role
        )
    num_peers = view.size
    if n is not None:
        n = check_count("n", n, error=ComponentError, component=name, role=role)
        if n > num_peers:
            raise ComponentError(
                f"n ({n}) exceeds the view's {num_peers} peers", component=name, role=role
            )
    default = jnp.asarray(view, jnp.int32)

    def init(key: jax.Array, peers: jax.Array | None = None) -> FixedViewState:
        ids = default if peers is None else jnp.asarray(peers, jnp.int32)
        if ids.shape != (num_peers,):
            raise ComponentError(
                f"init peers must have shape ({num_peers},), got {ids.shape}",
                component=name,
                role=role,
            )
        return FixedViewState(view=ids, key=key)

    def sample(state: FixedViewState) -> tuple[FixedViewState, jax.Array]:
        if n is None:
            return state, state.view
        key, sub = jax.random.split(state.key)
        return state.replace(key=key), jax.random.choice(sub, state.view, (n,), replace=False)

    def current_view(state: FixedViewState) -> tuple[FixedViewState, jax.Array]:
        return state, state.view

    return Component(
        Role.PEER_SELECTOR, init, {"sample": sample, "current_view": current_view}, name
    )
