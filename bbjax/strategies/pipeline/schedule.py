"""Pipeline schedules: which micro-batch each stage works on at each tick, forward or backward.

A tick is one step of every stage at once. At tick ``t`` stage ``s`` runs ``op[t, s]``
(:data:`FORWARD` or :data:`BACKWARD`) on micro-batch ``micro_batch[t, s]``, or idles (the
bubble) where that is ``-1``. A forward of micro-batch ``j`` on stage ``s`` follows its
forward on ``s - 1``, a backward follows the backward on ``s + 1`` (the last stage's
follows its own forward), each at least one tick later (the activation or its cotangent
crosses to the neighbour between ticks).

- :func:`gpipe` (Huang et al. 2019): all forwards (fill, steady state, drain over
  ``M + P - 1`` ticks), then all backwards in reverse micro-batch order over as many ticks.
- :func:`one_f_one_b` (PipeDream-Flush, Narayanan et al. 2021): stage ``s`` runs
  ``min(P - 1 - s, M)`` warm-up forwards, then alternates one forward and one backward,
  then drains its backwards; every operation starts as soon as its input is there. The same
  ``2 (M + P - 1)`` ticks and bubble, but a stage holds at most ``P - s`` micro-batches'
  activations instead of ``M``.

Both idle ``P - 1`` of every ``M + P - 1`` forward ticks and as many backward ticks of a
stage: the bubble fraction ``(P - 1) / (M + P - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbjax._checks import check_count

FORWARD = 0
BACKWARD = 1


@dataclass(frozen=True)
class Schedule:
    """``op[t, s]`` and ``micro_batch[t, s]`` (int32 ``[ticks, stages]``, ``-1``: idle) of a
    schedule named ``name``; ``slots`` is the most activations (or cotangents) a stage
    holds at once, received but not yet consumed by its backward."""

    name: str
    op: np.ndarray
    micro_batch: np.ndarray
    slots: int

    @property
    def ticks(self) -> int:
        return self.op.shape[0]

    @property
    def stages(self) -> int:
        return self.op.shape[1]

    @property
    def micro_batches(self) -> int:
        return int(self.micro_batch.max()) + 1

    @property
    def bubble_fraction(self) -> float:
        """The fraction of (tick, stage) cells in which a stage idles."""
        return float(np.mean(self.micro_batch < 0))


def gpipe(stages: int, micro_batches: int) -> Schedule:
    """GPipe's schedule of ``micro_batches`` micro-batches over ``stages`` stages."""
    p = check_count("stages", stages)
    m = check_count("micro_batches", micro_batches)
    ticks = m + p - 1
    t = np.arange(ticks)[:, None]
    s = np.arange(p)[None, :]
    forward = t - s
    backward = m - 1 - (t - (p - 1 - s))
    micro_batch = np.concatenate([np.where((forward >= 0) & (forward < m), forward, -1),
                                  np.where((backward >= 0) & (backward < m), backward, -1)])
    op = np.repeat(np.array([FORWARD, BACKWARD]), ticks)[:, None].repeat(p, 1)
    return _checked("gpipe", op, micro_batch.astype(np.int32))


def one_f_one_b(stages: int, micro_batches: int) -> Schedule:
    """The 1F1B (PipeDream-Flush) schedule of ``micro_batches`` over ``stages`` stages."""
    p = check_count("stages", stages)
    m = check_count("micro_batches", micro_batches)
    orders = []
    for s in range(p):
        warm = min(p - 1 - s, m)
        order = [(FORWARD, j) for j in range(warm)]
        for j in range(m - warm):
            order += [(FORWARD, warm + j), (BACKWARD, j)]
        orders.append(order + [(BACKWARD, j) for j in range(m - warm, m)])
    done: dict[tuple[int, int, int], int] = {}  # (op, stage, micro-batch) -> its tick
    rows_op, rows_mb = [], []
    nexts = [0] * p
    tick = 0
    while any(n < len(o) for n, o in zip(nexts, orders)):
        row_op, row_mb = [FORWARD] * p, [-1] * p
        for s in range(p):
            if nexts[s] == len(orders[s]):
                continue
            op, j = orders[s][nexts[s]]
            if op == FORWARD:
                needs = (FORWARD, s - 1, j) if s > 0 else None
            else:
                needs = (BACKWARD, s + 1, j) if s < p - 1 else (FORWARD, s, j)
            if needs is None or done.get(needs, tick) < tick:
                row_op[s], row_mb[s] = op, j
        for s in range(p):
            if row_mb[s] >= 0:
                done[(row_op[s], s, row_mb[s])] = tick
                nexts[s] += 1
        rows_op.append(row_op)
        rows_mb.append(row_mb)
        tick += 1
    return _checked("1f1b", np.array(rows_op, np.int32), np.array(rows_mb, np.int32))


def _checked(name: str, op: np.ndarray, micro_batch: np.ndarray) -> Schedule:
    """The schedule, with ``slots`` the most live buffers of a stage, after checking that
    storing micro-batch ``j`` in slot ``j % slots`` never overwrites a live one."""
    ticks, p = op.shape
    where = {(int(op[t, s]), s, int(micro_batch[t, s])): t
             for t in range(ticks) for s in range(p) if micro_batch[t, s] >= 0}
    m = int(micro_batch.max()) + 1
    # Stage s stores micro-batch j's input from the end of tick F(s-1, j) until B(s, j)
    # reads it, and its output cotangent from the end of B(s+1, j) until B(s, j).
    lives = [[(where[FORWARD, s - 1, j], where[BACKWARD, s, j]) for j in range(m)]
             for s in range(1, p)]
    lives += [[(where[BACKWARD, s + 1, j], where[BACKWARD, s, j]) for j in range(m)]
              for s in range(p - 1)]
    slots = max([1] + [sum(a <= t < b for a, b in live) for live in lives for t in range(ticks)])
    for live in lives:
        for j, (a, b) in enumerate(live):
            for k, (c, d) in enumerate(live):
                if k != j and k % slots == j % slots and a <= c < b:
                    raise AssertionError(f"{name}: micro-batch {k} overwrites {j}'s slot")
    return Schedule(name, op, micro_batch, slots)
