"""A brute-force top-k vector Index over a fixed number of slots.

``add`` stores a vector in the first free slot under a new id (ids count up from 0 and
are never reused); on a full index it returns -1 and sets :attr:`Status.FULL`.
``remove`` frees the slot of an id (:attr:`Status.UNKNOWN_ID` when no slot has it).
``search`` scores every stored vector against the query, by cosine similarity (norms
clamped below at ``1e-12``, so a zero vector scores 0) or by dot product, and returns the
``k`` best ``(ids, scores)``, best first, ties to the lower slot, padded with id -1 and
score ``-inf`` when fewer than ``k`` vectors are stored.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components.component import Component
from bbjax.errors import ComponentError
from bbjax._checks import check_count
from bbjax.components.roles import Role
from bbjax.components.status import Status

_EPS = 1e-12


@struct.dataclass
class TopKIndexState:
    """Slot ``i`` holds ``vectors[i]`` under ``ids[i]`` (-1 when free)."""

    ids: jax.Array  # int32 (capacity,)
    vectors: jax.Array  # float32 (capacity, dim)
    next_id: jax.Array  # int32, the id the next add gets
    status: jax.Array  # int32 Status of the last call


def topk_index(
    capacity: int,
    dim: int,
    k: int,
    metric: Literal["cosine", "dot"] = "cosine",
    name: str = "topk_index",
) -> Component:
    """An Index of up to ``capacity`` float32 vectors of size ``dim``, searched for the top ``k``.

    ``add(state, vector) -> (state, id)``, ``search(state, query) -> (state, (ids,
    scores))`` with int32 ``ids`` and float32 ``scores`` of shape ``(k,)``,
    ``remove(state, id) -> (state, ())``. ``init(key)`` ignores ``key``. Raises
    :class:`ComponentError` for ``k > capacity``, an unknown ``metric`` or, when traced,
    a vector whose shape is not ``(dim,)``.
    """
    role = Role.INDEX.value
    capacity = check_count("capacity", capacity, error=ComponentError, component=name, role=role)
    dim = check_count("dim", dim, error=ComponentError, component=name, role=role)
    k = check_count("k", k, error=ComponentError, component=name, role=role)
    if k > capacity:
        raise ComponentError(f"k ({k}) exceeds capacity ({capacity})", component=name, role=role)
    if metric not in ("cosine", "dot"):
        raise ComponentError(
            f"metric must be 'cosine' or 'dot', got {metric!r}", component=name, role=role
        )

    def vector_of(method: str, value: jax.Array) -> jax.Array:
        if jnp.shape(value) != (dim,):
            raise ComponentError(
                f"expects a vector of shape ({dim},), got {jnp.shape(value)}",
                component=name,
                role=role,
                method=method,
            )
        return jnp.asarray(value, jnp.float32)

    def init(key: jax.Array) -> TopKIndexState:
        return TopKIndexState(
            ids=jnp.full((capacity,), -1, jnp.int32),
            vectors=jnp.zeros((capacity, dim), jnp.float32),
            next_id=jnp.int32(0),
            status=jnp.int32(Status.OK),
        )

    def add(state: TopKIndexState, vector: jax.Array) -> tuple[TopKIndexState, jax.Array]:
        vector = vector_of("add", vector)
        free = state.ids < 0
        ok = jnp.any(free)
        slot = jnp.argmax(free)
        new_id = jnp.where(ok, state.next_id, -1)
        new = TopKIndexState(
            ids=state.ids.at[slot].set(jnp.where(ok, new_id, state.ids[slot])),
            vectors=state.vectors.at[slot].set(jnp.where(ok, vector, state.vectors[slot])),
            next_id=state.next_id + ok.astype(jnp.int32),
            status=jnp.where(ok, Status.OK, Status.FULL).astype(jnp.int32),
        )
        return new, new_id

    def search(
        state: TopKIndexState, query: jax.Array
    ) -> tuple[TopKIndexState, tuple[jax.Array, jax.Array]]:
        query = vector_of("search", query)
        vectors = state.vectors
        if metric == "cosine":
            query = query / jnp.maximum(jnp.linalg.norm(query), _EPS)
            norms = jnp.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / jnp.maximum(norms, _EPS)
        scores = jnp.where(state.ids >= 0, jnp.sum(vectors * query, axis=1), -jnp.inf)
        top, slots = jax.lax.top_k(scores, k)
        ids = jnp.where(top > -jnp.inf, state.ids[slots], -1)
        return state.replace(status=jnp.int32(Status.OK)), (ids, top)

    def remove(state: TopKIndexState, id: jax.Array) -> tuple[TopKIndexState, tuple[()]]:
        id = jnp.asarray(id, jnp.int32)
        match = (state.ids == id) & (id >= 0)
        new = state.replace(
            ids=jnp.where(match, -1, state.ids),
            status=jnp.where(jnp.any(match), Status.OK, Status.UNKNOWN_ID).astype(jnp.int32),
        )
        return new, ()

    return Component(Role.INDEX, init, {"add": add, "search": search, "remove": remove}, name,
                     config={"capacity": capacity, "dim": dim, "k": k})
