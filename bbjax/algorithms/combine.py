"""``chain``: algorithms composed in order (optax's ``chain`` with extra arguments)."""

from __future__ import annotations

from typing import Any

import jax

from bbjax.algorithms.base import Algorithm, Params
from bbjax.errors import InvalidArgument


def _as_algorithm(position: int, member: Any) -> Algorithm:
    if not (callable(getattr(member, "init", None)) and callable(getattr(member, "update", None))):
        raise InvalidArgument(f"chain: member {position} ({type(member).__name__}) is no "
                              "Algorithm: it needs init(params) and update(updates, state, ...)")
    return Algorithm(member.init, member.update, tuple(getattr(member, "inputs", ())))


def chain(*algorithms: Any) -> Algorithm:
    """The algorithms applied in order, each to the updates the previous one returned.

    The state is the tuple of the members' states. ``update(updates, state, params, key=k,
    **extra)`` gives member ``i`` the key ``jax.random.split(k, len(algorithms))[i]`` (None
    for all when ``k`` is None), the same ``params`` and, of ``extra``, the inputs it names
    in its ``inputs``. The chain's ``inputs`` is their union; an extra input no member reads
    raises :class:`~bbjax.errors.InvalidArgument`. Anything with ``init`` and ``update``
    (and optionally ``inputs``) is a member, e.g. a ``bbjax.aggregators`` rule.
    """
    members = tuple(_as_algorithm(i, m) for i, m in enumerate(algorithms))
    if not members:
        raise InvalidArgument("chain needs at least one algorithm")
    inputs = tuple(dict.fromkeys(name for m in members for name in m.inputs))

    def init(params: Params) -> tuple[Any, ...]:
        return tuple(m.init(params) for m in members)

    def update(updates: Any, state: tuple[Any, ...], params: Params = None, *,
               key: jax.Array | None = None, **extra: Any) -> tuple[Any, tuple[Any, ...]]:
        unknown = sorted(set(extra) - set(inputs))
        if unknown:
            raise InvalidArgument(f"chain: no member reads the inputs {unknown}; the chain "
                                  f"reads {list(inputs)}")
        if not isinstance(state, tuple) or len(state) != len(members):
            raise InvalidArgument(f"chain: the state must be the tuple of the {len(members)} "
                                  f"members' states (chain.init), got {type(state).__name__}")
        keys = [None] * len(members) if key is None else list(jax.random.split(key, len(members)))
        states = []
        for member, member_state, member_key in zip(members, state, keys):
            mine = {name: extra[name] for name in member.inputs if name in extra}
            updates, member_state = member.update(updates, member_state, params,
                                                  key=member_key, **mine)
            states.append(member_state)
        return updates, tuple(states)

    return Algorithm(init, update, inputs)
