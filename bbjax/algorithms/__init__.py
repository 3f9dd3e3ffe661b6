"""One contract for aggregation rules, central and local DP, codecs and client selectors.

An :class:`Algorithm` is ``init(params) -> state`` and ``update(updates, state, params=None,
*, key=None, **extra) -> (updates, state)``; :func:`chain` composes algorithms in order and
:func:`get` builds one from its name. See :mod:`bbjax.algorithms.base` and
``docs/algorithms.md`` ("One contract, and chain").
"""

from bbjax.algorithms.base import Algorithm, EmptyState, apply_updates, identity
from bbjax.algorithms.combine import chain
from bbjax.algorithms.registry import get, names

__all__ = ["Algorithm", "EmptyState", "apply_updates", "chain", "get", "identity", "names"]
