"""The aggregator interface and the input checks and rejection rule shared by every rule.

An aggregator is a pair of pure functions (the optax style)::

    agg = bbjax.aggregators.fedavg()
    state = agg.init(global_params)
    new_global, state, present, rejected = agg.apply(state, global_params, client_params,
                                                     weights, mask)

``client_params`` is the clients' returned model pytree stacked on a leading axis of size
``n`` (the cohort), ``weights`` their example counts ``[n]`` and ``mask`` a boolean ``[n]``
that is True for clients that reported and False for absent ones. The cohort shape is fixed,
so one compiled ``apply`` serves every round and ``vmap`` runs many servers at once.
``agg.aggregate(...)`` is ``apply`` returning only ``(new_global, state)``.

Shared rules, documented once here:

- A reporting client is *rejected*, and then treated exactly like an absent one by every
  rule, when one of its parameters is NaN or infinite, its weight is NaN, infinite or
  negative, or its weight exceeds the rule's ``max_weight`` (None: no cap; Flower's
  SecAgg+ ``max_weight``). A rejected client never reaches the result or the rule's state;
  ``rejected`` counts them (int32).
- When no client takes part (or the weights of those that do sum to zero, for weighted
  rules), the round is skipped: ``global_params`` is returned unchanged and the rule's
  statistics (momenta, control variates) are left as they were. Flower returns ``None``
  from ``aggregate_fit`` in that case and keeps its parameters, which is the same outcome.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bbjax._checks import check_positive
from bbjax.aggregators.columns import all_finite
from bbjax.errors import AggregatorError

Params = Any
"""A pytree of floating-point arrays: a model's parameters."""


class EmptyState(NamedTuple):
    """State of a rule that keeps none."""


class Aggregation(NamedTuple):
    """One round's outcome: the new global parameters, the rule's new state, which clients
    took part (bool ``[n]``) and how many reporting clients were rejected (int32)."""

    params: Params
    state: Any
    present: jax.Array
    rejected: jax.Array


class Aggregator(NamedTuple):
    """An aggregation rule as two pure functions.

    ``init(global_params) -> state`` and
    ``apply(state, global_params, client_params, weights, mask=None) -> Aggregation``.
    Both are jittable and vmappable.
    """

    init: Callable[[Params], Any]
    apply: Callable[..., Aggregation]

    def aggregate(self, state: Any, global_params: Params, client_params: Params,
                  weights: Any, mask: Any = None, **inputs: Any) -> tuple[Params, Any]:
        """``apply``'s ``(new_global, state)``."""
        out = self.apply(state, global_params, client_params, weights, mask, **inputs)
        return out.params, out.state


class Cohort(NamedTuple):
    """One round's checked inputs: cohort size, float weights ``[n]``, the reported mask
    and the clients that take part (bool ``[n]`` each)."""

    n: Any
    weights: jax.Array
    mask: jax.Array
    present: jax.Array


def require(ok: bool, message: str) -> None:
    """Raise :class:`AggregatorError` with ``message`` unless ``ok``."""
    if not ok:
        raise AggregatorError(message)


def check_nonnegative_int(rule: str, name: str, value: Any) -> None:
    """Require ``value`` to be an ``int`` (not a ``bool``) and ``>= 0``."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            f"{rule}: {name} must be a non-negative int, got {value!r}")


def check_max_weight(rule: str, max_weight: Any) -> float | None:
    """``max_weight`` as a float, or None; raises :class:`AggregatorError` unless it is None
    or a finite number > 0."""
    if max_weight is None:
        return None
    return check_positive(f"{rule}: max_weight", max_weight, error=AggregatorError)


def check_stacked(rule: str, global_params: Params, stacked: Params,
                  stacked_name: str = "client_params") -> Any:
    """Check at trace time that ``stacked`` is ``global_params`` stacked over a cohort of
    floating-point leaves (``stacked_name`` names it in messages); return the cohort size."""
    g_leaves, g_def = jax.tree.flatten(global_params)
    c_def = jax.tree.structure(stacked)
    require(c_def == g_def, f"{rule}: {stacked_name} has tree structure {c_def}, "
            f"global_params has {g_def}")
    require(len(g_leaves) > 0, f"{rule}: global_params has no leaves")
    n = None
    for (path, c), g in zip(jax.tree.leaves_with_path(stacked), g_leaves):
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
    return n


def check_cohort(rule: str, global_params: Params, client_params: Params, weights: Any,
                 mask: Any, max_weight: float | None) -> Cohort:
    """Check one round's inputs at trace time (``mask`` None: all reported) and apply the
    rejection rule, :func:`admitted_clients`."""
    n = check_stacked(rule, global_params, client_params)
    weights = jnp.asarray(weights)
    require(weights.shape == (n,), f"{rule}: weights has shape {weights.shape}, expected ({n},)")
    weights = weights.astype(jnp.promote_types(weights.dtype, jnp.float32))
    mask = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask)
    require(mask.shape == (n,), f"{rule}: mask has shape {mask.shape}, expected ({n},)")
    mask = mask.astype(bool)
    return Cohort(n, weights, mask, admitted_clients(client_params, weights, mask, max_weight))


def admitted_clients(client_params: Params, weights: jax.Array, mask: jax.Array,
                     max_weight: float | None = None) -> jax.Array:
    """The rejection rule, ``[n]`` bool: ``mask``, and-ed with "every leaf of this client
    is finite and its weight is finite, ``>= 0`` and, unless ``max_weight`` is None,
    ``<= max_weight``"."""
    ok = mask & jnp.isfinite(weights) & (weights >= 0) & finite_clients(client_params)
    return ok if max_weight is None else ok & (weights <= max_weight)


def finite_clients(stacked: Params) -> jax.Array:
    """``[n]`` bool: whether every leaf of each client is free of NaN and infinities."""
    ok = None
    for leaf in jax.tree.leaves(stacked):
        ok = all_finite(leaf) if ok is None else ok & all_finite(leaf)
    return ok


def count(present: jax.Array) -> jax.Array:
    """Number of True entries, as int32."""
    return jnp.sum(present, dtype=jnp.int32)


def mean_coefficients(weights: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(coef, skip)``: the present clients' weights normalised to sum to one (0 elsewhere)
    and whether they sum to zero (then ``coef`` is all zeros). Weights are scaled to a
    largest of about 1 first, so large finite weights do not overflow the sum."""
    w = jnp.where(present, weights, 0)
    top = jnp.max(w)
    root = 1 / jnp.sqrt(jnp.where(top > 0, top, 1))  # twice: 1 / top may be subnormal
    w = w * root * root
    total = jnp.sum(w)
    skip = ~(total > 0)
    return w / jnp.where(skip, 1, total), skip


def skip_round(skip: jax.Array, old: Any, new: Any) -> Any:
    """``old`` where ``skip`` is True, else ``new`` (leafwise, in ``new``'s dtype): what a
    skipped round returns."""
    return jax.tree.map(lambda o, v: jnp.where(skip, o, v).astype(v.dtype), old, new)


def outcome(cohort: Cohort, skip: jax.Array, global_params: Params, new_params: Params,
            state: Any, present: jax.Array | None = None) -> Aggregation:
    """The :class:`Aggregation` of a round in which ``present`` (default: ``cohort.present``)
    took part: ``new_params``, or ``global_params`` when ``skip``; ``rejected`` counts the
    reported clients not in ``present``."""
    present = cohort.present if present is None else present
    return Aggregation(skip_round(skip, global_params, new_params), state, present,
                       count(cohort.mask & ~present))
