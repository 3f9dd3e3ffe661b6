"""The aggregator interface, its error type, and the input checks shared by every rule.

An aggregator is a pair of pure functions (the optax style)::

    agg = bbjax.aggregators.fedavg()
    state = agg.init(global_params)
    new_global, state = agg.aggregate(state, global_params, client_params, weights, mask)

``client_params`` is the clients' returned model pytree stacked on a leading axis of size
``n`` (the cohort), ``weights`` their example counts ``[n]`` and ``mask`` a boolean ``[n]``
that is True for clients that reported and False for absent ones. The cohort shape is fixed,
so one compiled ``aggregate`` serves every round and ``vmap`` runs many servers at once.

Shared rules, documented once here:

- A client *takes part* when its mask is True **and all its parameters are finite**. A
  client that sends a NaN or an infinity is treated exactly like an absent one, by every
  rule; it never reaches the result.
- When no client takes part (or the weights of those that do sum to zero, for weighted
  rules), the round is skipped: ``global_params`` is returned unchanged and the rule's
  statistics (momenta, control variates) are left as they were. Flower returns ``None``
  from ``aggregate_fit`` in that case and keeps its parameters, which is the same outcome.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.columns import all_finite
from bbjax.errors import AggregatorError

Params = Any
"""A pytree of floating-point arrays: a model's parameters."""



class EmptyState(NamedTuple):
    """State of a rule that keeps none."""


class Aggregator(NamedTuple):
    """An aggregation rule as two pure functions.

    ``init(global_params) -> state`` and
    ``aggregate(state, global_params, client_params, weights, mask=None) -> (new_global, state)``.
    Both are jittable and vmappable.
    """

    init: Callable[[Params], Any]
    aggregate: Callable[..., tuple[Params, Any]]


def require(ok: bool, message: str) -> None:
    """Raise :class:`AggregatorError` with ``message`` unless ``ok``."""
    if not ok:
        raise AggregatorError(message)


def check_nonnegative_int(rule: str, name: str, value: Any) -> None:
    """Require ``value`` to be an ``int`` (not a ``bool``) and ``>= 0``."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            f"{rule}: {name} must be a non-negative int, got {value!r}")


def check_cohort(rule: str, global_params: Params, client_params: Params, weights: Any,
                 mask: Any, stacked_name: str = "client_params"
                 ) -> tuple[int, jax.Array, jax.Array]:
    """Check the shapes of one round's inputs at trace time (``stacked_name`` names
    ``client_params`` in messages).

    Returns ``(n, weights, mask)``: the cohort size, the weights as a float ``[n]`` array and
    the mask as a bool ``[n]`` array (all True when ``mask`` is None).
    """
    g_leaves, g_def = jax.tree.flatten(global_params)
    c_def = jax.tree.structure(client_params)
    require(c_def == g_def, f"{rule}: {stacked_name} has tree structure {c_def}, "
            f"global_params has {g_def}")
    require(len(g_leaves) > 0, f"{rule}: global_params has no leaves")
    n = None
    for (path, c), g in zip(jax.tree.leaves_with_path(client_params), g_leaves):
        where = jax.tree_util.keystr(path) or "<root>"
        require(jnp.issubdtype(c.dtype, jnp.floating),
                f"{rule}: {stacked_name} leaf {where} has dtype {c.dtype}; aggregators "
                "need floating-point parameters")
        require(c.ndim >= 1 and tuple(c.shape[1:]) == tuple(jnp.shape(g)),
                f"{rule}: {stacked_name} leaf {where} has shape {tuple(c.shape)}, expected "
                f"(clients, *{tuple(jnp.shape(g))}) to match global_params")
        require(n is None or c.shape[0] == n,
                f"{rule}: {stacked_name} leaf {where} stacks {c.shape[0]} clients, other "
                f"leaves stack {n}")
        n = c.shape[0]
    require(n > 0, f"{rule}: the cohort is empty ({stacked_name} stacks 0 clients)")
    weights = jnp.asarray(weights)
    require(weights.shape == (n,), f"{rule}: weights has shape {weights.shape}, expected ({n},)")
    weights = weights.astype(jnp.promote_types(weights.dtype, jnp.float32))
    if mask is None:
        mask = jnp.ones((n,), bool)
    mask = jnp.asarray(mask)
    require(mask.shape == (n,), f"{rule}: mask has shape {mask.shape}, expected ({n},)")
    return n, weights, mask.astype(bool)


def rows(leaf: jax.Array) -> jax.Array:
    """A stacked leaf ``[n, *shape]`` viewed as ``[n, prod(shape)]``."""
    return leaf.reshape(leaf.shape[0], -1)


def present_clients(client_params: Params, mask: jax.Array) -> jax.Array:
    """``[n]`` bool: the mask, and-ed with "every parameter of this client is finite"."""
    for leaf in jax.tree.leaves(client_params):
        mask = mask & all_finite(leaf)
    return mask


def count(present: jax.Array) -> jax.Array:
    """Number of True entries, as int32."""
    return jnp.sum(present, dtype=jnp.int32)


def skip_round(skip: jax.Array, old: Any, new: Any) -> Any:
    """``old`` where ``skip`` is True, else ``new`` (leafwise, in ``new``'s dtype): what a
    skipped round returns."""
    return jax.tree.map(lambda o, v: jnp.where(skip, o, v).astype(v.dtype), old, new)
