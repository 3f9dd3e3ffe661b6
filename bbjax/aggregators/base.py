"""The aggregator interface, the rule builder, and the input checks and rejection rule
shared by every rule.

Every rule is an :class:`~bbjax.algorithms.Algorithm` (its ``algorithm``; the
``bbjax.algorithms`` contract, composable with ``chain``) and keeps the aggregator-facing
view it always had::

    agg = bbjax.aggregators.fedavg()
    state = agg.init(global_params)
    new_global, state, present, rejected = agg.apply(state, global_params, client_params,
                                                     weights, mask)
    update, state = agg.update(client_updates, state, global_params, weights=weights,
                               mask=mask)

``client_params`` is the clients' returned model pytree stacked on a leading axis of size
``n`` (the cohort), ``client_updates`` the same as deltas (``client_params - global``),
``weights`` their example counts ``[n]`` (``update``: None for equal weights) and ``mask`` a
boolean ``[n]`` that is True for clients that reported and False for absent ones. The
cohort shape is fixed, so one compiled ``apply`` serves every round and ``vmap`` runs many
servers at once. ``agg.aggregate(...)`` is ``apply`` returning only ``(new_global, state)``.
``update`` returns the aggregate update ``new_global - global``; the rules built on a
weighted mean (FedAvg, FedAvgM, FedOpt) also take an update already reduced by an earlier
stage (shaped like ``global_params``) and then run only their server step.

Both views run one function per rule, ``reduce``, in the frame of its inputs: on client
models (``origin`` = the global model) it yields the new global model, on updates
(``origin`` None: zero) the aggregate update, with the same arithmetic and no copy of the
stack.

Shared rules, documented once here:

- A reporting client is *rejected*, and then treated exactly like an absent one by every
  rule, when one of its parameters is NaN or infinite, its weight is NaN, infinite or
  negative, or its weight exceeds the rule's ``max_weight`` (None: no cap; Flower's
  SecAgg+ ``max_weight``). A rejected client never reaches the result or the rule's state;
  ``rejected`` counts them (int32).
- When no client takes part (or the weights of those that do sum to zero, for weighted
  rules), the round is skipped: ``global_params`` is returned unchanged (``update``: a
  zero update) and the rule's statistics (momenta, control variates) are left as they
  were. Flower returns ``None`` from ``aggregate_fit`` in that case and keeps its
  parameters, which is the same outcome.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bbjax._checks import check_positive
from bbjax.aggregators.columns import all_finite
from bbjax.algorithms.base import Algorithm, Params
from bbjax.errors import AggregatorError


class Aggregation(NamedTuple):
    """One round's outcome: the new global parameters, the rule's new state, which clients
    took part (bool ``[n]``) and how many reporting clients were rejected (int32)."""

    params: Params
    state: Any
    present: jax.Array
    rejected: jax.Array


class Aggregator(NamedTuple):
    """An aggregation rule: ``init(global_params) -> state``,
    ``apply(state, global_params, client_params, weights, mask=None, **inputs) ->
    Aggregation`` and ``algorithm``, the same rule on the one contract
    (``update``/``inputs`` are its). All jittable and vmappable.
    """

    init: Callable[[Params], Any]
    apply: Callable[..., Aggregation]
    algorithm: Algorithm

    @property
    def update(self) -> Callable[..., tuple[Params, Any]]:
        """The algorithm's ``update(updates, state, params, *, key=None, weights=None,
        mask=None, **inputs) -> (aggregate_update, state)``."""
        return self.algorithm.update

    @property
    def inputs(self) -> tuple[str, ...]:
        """The keyword inputs ``update`` reads: ``weights``, ``mask`` and the rule's own."""
        return self.algorithm.inputs

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
    """Check one round's inputs at trace time (``weights`` None: equal; ``mask`` None: all
    reported) and apply the rejection rule, :func:`admitted_clients`."""
    n = check_stacked(rule, global_params, client_params)
    weights = jnp.ones((n,)) if weights is None else jnp.asarray(weights)
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


def relative(point: Params, origin: Params | None) -> Params:
    """``point - origin`` (``point`` when ``origin`` is None, i.e. zero)."""
    return point if origin is None else jax.tree.map(jnp.subtract, point, origin)


def plus(origin: Params | None, step: Params) -> Params:
    """``origin + step`` (``step`` when ``origin`` is None, i.e. zero)."""
    return step if origin is None else jax.tree.map(jnp.add, origin, step)


def leafwise(fn: Callable[[jax.Array, jax.Array | None], Any], stack: Params,
             origin: Params | None) -> Any:
    """``fn(stack_leaf, origin_leaf)`` over the leaves (``origin_leaf`` None when
    ``origin`` is None)."""
    if origin is None:
        return jax.tree.map(lambda x: fn(x, None), stack)
    return jax.tree.map(fn, stack, origin)


class Reduced(NamedTuple):
    """A rule's round in the frame of its inputs: the new point (the new global model when
    the rows are client models, the aggregate update when they are updates), the rule's
    new state, the clients that took part (bool ``[n]``) and whether the round is skipped
    (then ``point`` is ignored)."""

    point: Params
    state: Any
    present: jax.Array
    skip: jax.Array


def _shaped_like(updates: Params, params: Params) -> bool:
    """Whether ``updates`` is one update shaped like ``params`` (not a stack)."""
    if jax.tree.structure(updates) != jax.tree.structure(params):
        return False
    return all(jnp.shape(u) == jnp.shape(p)
               for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)))


def aggregation_rule(name: str, init: Callable[[Params], Any], reduce: Callable[..., Reduced],
                     max_weight: float | None, inputs: tuple[str, ...] = (),
                     server_step: Callable[[Any, Params], tuple[Params, Any]] | None = None
                     ) -> Aggregator:
    """The :class:`Aggregator` and :class:`~bbjax.algorithms.Algorithm` of one rule.

    ``reduce(state, cohort, params, stack, origin, **inputs) -> Reduced`` computes a
    round from the checked :class:`Cohort`; the rows of ``stack`` are client models with
    ``origin = params`` (``apply``) or updates with ``origin = None`` (``update``).
    ``inputs`` names the rule's own keyword inputs. ``server_step(state, update) ->
    (update, state)``, where given, is what ``update`` does with an update already reduced
    by an earlier stage; without it such an input raises :class:`AggregatorError`.
    """

    def check_inputs(given: dict[str, Any]) -> None:
        unknown = sorted(set(given) - set(inputs))
        require(not unknown, f"{name}: unknown inputs {unknown}; the rule takes "
                f"{['weights', 'mask', *inputs]}")

    def apply(state: Any, global_params: Params, client_params: Params, weights: Any,
              mask: Any = None, **extra: Any) -> Aggregation:
        check_inputs(extra)
        cohort = check_cohort(name, global_params, client_params, weights, mask, max_weight)
        out = reduce(state, cohort, global_params, client_params, global_params, **extra)
        return Aggregation(skip_round(out.skip, global_params, out.point), out.state,
                           out.present, count(cohort.mask & ~out.present))

    def update(updates: Params, state: Any, params: Params = None, *,
               key: jax.Array | None = None, weights: Any = None, mask: Any = None,
               **extra: Any) -> tuple[Params, Any]:
        del key
        check_inputs(extra)
        require(params is not None, f"{name}: update needs params, the global model the "
                "updates are relative to")
        if _shaped_like(updates, params):
            require(server_step is not None, f"{name} reduces a stack of client updates "
                    "[n, ...]; it got one update shaped like params (an earlier stage "
                    "already reduced the cohort)")
            return server_step(state, updates)
        cohort = check_cohort(name, params, updates, weights, mask, max_weight)
        out = reduce(state, cohort, params, updates, None, **extra)
        zeros = jax.tree.map(jnp.zeros_like, out.point)
        return skip_round(out.skip, zeros, out.point), out.state

    return Aggregator(init, apply, Algorithm(init, update, ("weights", "mask", *inputs)))
