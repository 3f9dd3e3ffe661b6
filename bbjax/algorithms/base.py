"""The one algorithm contract, in the optax style.

An :class:`Algorithm` is two pure functions::

    state = algorithm.init(params)
    new_updates, state = algorithm.update(updates, state, params, key=key, **extra)

``params`` is the global model, ``key`` a PRNG key (None for deterministic algorithms)
and ``extra`` the round's other inputs, by name (``weights``, ``mask``, ``losses``,
``round``, ...). ``inputs`` names the extra inputs ``update`` reads. What ``updates`` is
depends on the stage (``docs/algorithms.md``, "One contract, and chain"):

- *cohort*: the clients' updates (model deltas) stacked on a leading axis ``[n, ...]``;
- *aggregate*: one update shaped like ``params``, which the server adds to it
  (:func:`apply_updates`);
- *selection*: the round's candidate mask ``[num_clients]`` (bool).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = Any
"""A pytree of arrays: a model's parameters."""


class EmptyState(NamedTuple):
    """State of an algorithm that keeps none."""


class Algorithm(NamedTuple):
    """``init(params) -> state`` and
    ``update(updates, state, params=None, *, key=None, **extra) -> (updates, state)``, both
    pure, jittable and vmappable; ``inputs`` names the keyword inputs in ``extra`` that
    ``update`` reads."""

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Any, Any]]
    inputs: tuple[str, ...] = ()


def identity() -> Algorithm:
    """Returns its updates unchanged and keeps no state."""

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Any, state: EmptyState, params: Params = None, *,
               key: jax.Array | None = None) -> tuple[Any, EmptyState]:
        return updates, state

    return Algorithm(init, update)


def apply_updates(params: Params, updates: Params) -> Params:
    """``params + updates`` leafwise, in ``params``' dtypes: the server's step with an
    aggregate update."""
    return jax.tree.map(lambda p, u: (jnp.asarray(p) + u).astype(jnp.result_type(p)),
                        params, updates)


def check_stack(name: str, updates: Any, error: type[Exception]) -> int:
    """The cohort size ``n`` of a stack of updates (every leaf ``[n, ...]``); raises
    ``error`` naming ``name`` when the leaves disagree or have no leading axis."""
    leaves = jax.tree.leaves_with_path(updates)
    if not leaves:
        raise error(f"{name}: the updates have no leaves")
    sizes = {}
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if not shape:
            raise error(f"{name}: updates leaf {jax.tree_util.keystr(path) or '<root>'} is a "
                        "scalar; a cohort stacks the clients' updates on a leading axis")
        sizes.setdefault(shape[0], jax.tree_util.keystr(path) or "<root>")
    if len(sizes) > 1:
        raise error(f"{name}: the updates' leaves stack different numbers of clients "
                    f"{sorted(sizes)}")
    return next(iter(sizes))


def check_mask(name: str, mask: Any, n: int, error: type[Exception]) -> jax.Array:
    """``mask`` as bool ``[n]`` (all True when None); raises ``error`` for another shape."""
    if mask is None:
        return jnp.ones((n,), bool)
    mask = jnp.asarray(mask)
    if mask.shape != (n,):
        raise error(f"{name}: mask has shape {mask.shape}, expected ({n},)")
    return mask.astype(bool)


def split_keys(name: str, key: jax.Array | None, n: int,
               error: type[Exception]) -> jax.Array:
    """``n`` keys split from ``key``; raises ``error`` when ``key`` is None."""
    if key is None:
        raise error(f"{name} needs a PRNG key (update(..., key=...))")
    return jax.random.split(key, n)
