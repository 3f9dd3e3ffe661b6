"""A DataSource that replays a published batch order: the rows of every batch, by round.

``rows`` (int ``[rounds, steps, batch_size]``) lists, for each round, the rows of the
``steps`` batches the peer takes in it, in order. The simulation tells the source the
round's index before the peer's round (``start_round``); the ``j``-th ``next_batch`` of
round ``r`` returns ``x[rows[r, j]]`` and ``y[rows[r, j]]`` (``j`` counts modulo ``steps``).
With a schedule as the cohort (``Peers(cohort=schedule)``) and this source, a published
run (who trains in which round, on which examples, in which order) is replayed exactly,
whichever rounds a client sat out. Rounds from ``rounds`` on reuse the last round's rows
(indexing clamps under ``jit``): give a table covering the run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax._checks import check_count
from bbjax.components.component import Component, PyTree
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, shared_rows, spec_of
from bbjax.errors import ComponentError


@struct.dataclass
class ReplayState:
    """The data, the batch table, the example count, the round and the batch within it."""

    x: PyTree  # leaves (num_rows, ...)
    y: PyTree  # leaves (num_rows, ...)
    rows: jax.Array  # int32 (rounds, steps, batch_size)
    size: jax.Array  # int32, what num_examples reports
    round: jax.Array  # int32, the round start_round announced
    step: jax.Array  # int32, batches taken in this round


def replay_data_source(x: PyTree, y: PyTree, rows: np.ndarray, size: int | None = None,
                       name: str = "replay_data_source") -> Component:
    """A DataSource replaying ``rows`` (int ``[rounds, steps, batch_size]``, indices into
    the leading axis of ``x`` and ``y``) over examples ``x`` with labels ``y``.

    ``init(key, x=None, y=None, rows=None, size=None)`` replaces the factory's data, table
    and size with arrays of the same shapes (cast to its dtypes), so ``jax.vmap(init)``
    gives each peer its own; ``size`` (default: every row) is what ``num_examples``
    reports, e.g. a padded client's real example count. ``start_round(state, round)``
    selects the round's batches; ``reset`` starts the round's batches over. Raises
    :class:`ComponentError` when the leaves of ``x`` and ``y`` do not share a non-empty
    leading axis, ``rows`` is not a non-empty int array of three dimensions or holds an
    index outside it, or ``size`` is not in ``[1, num_rows]``.
    """
    role = Role.DATA_SOURCE.value
    template = spec_of((x, y))
    num_rows = shared_rows(template, component=name, role=role)
    table = np.asarray(rows)
    if table.ndim != 3 or 0 in table.shape or not np.issubdtype(table.dtype, np.integer):
        raise ComponentError(f"rows must be an int array [rounds, steps, batch_size], got "
                             f"{table.dtype}{list(table.shape)}", component=name, role=role)
    if table.min() < 0 or table.max() >= num_rows:
        raise ComponentError(f"rows holds indices outside [0, {num_rows})", component=name,
                             role=role)
    size = num_rows if size is None else check_count("size", size, error=ComponentError,
                                                      upper=num_rows, component=name, role=role)
    rounds, steps, batch_size = table.shape
    default = (x, y, table.astype(np.int32), size)

    def init(key: jax.Array, x: PyTree = None, y: PyTree = None, rows: jax.Array = None,
             size: jax.Array = None) -> ReplayState:
        data = (default[0] if x is None else x, default[1] if y is None else y)
        data = cast_like(template, data, "init data", component=name, role=role)
        table = jnp.asarray(default[2] if rows is None else rows, jnp.int32)
        if table.shape != default[2].shape:
            raise ComponentError(f"init rows has shape {table.shape}, the factory's "
                                 f"{default[2].shape}", component=name, role=role)
        return ReplayState(x=data[0], y=data[1], rows=table,
                           size=jnp.asarray(default[3] if size is None else size, jnp.int32),
                           round=jnp.int32(0), step=jnp.int32(0))

    def start_round(state: ReplayState, round: jax.Array) -> tuple[ReplayState, tuple[()]]:
        return state.replace(round=jnp.asarray(round, jnp.int32), step=jnp.int32(0)), ()

    def next_batch(state: ReplayState) -> tuple[ReplayState, tuple[PyTree, PyTree]]:
        picked = state.rows[state.round, state.step % steps]
        batch = jax.tree.map(lambda a: a[picked], (state.x, state.y))
        return state.replace(step=state.step + 1), batch

    def reset(state: ReplayState) -> tuple[ReplayState, tuple[()]]:
        return state.replace(step=jnp.int32(0)), ()

    def num_examples(state: ReplayState) -> tuple[ReplayState, jax.Array]:
        return state, state.size

    return Component(Role.DATA_SOURCE, init,
                     {"next_batch": next_batch, "reset": reset, "num_examples": num_examples,
                      "start_round": start_round}, name,
                     config={"batch_size": int(batch_size), "steps": int(steps),
                             "rounds": int(rounds)})
