"""The schedule tables against independent enumerations: GPipe from the recurrence "a
micro-batch enters a stage once it has left the previous one and the stage is free", 1F1B
from a hand-drawn table and its defining properties."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.errors import InvalidArgument
from bbjax.strategies.pipeline.schedule import BACKWARD, FORWARD, gpipe, one_f_one_b


def gpipe_by_recurrence(p: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    forward: dict[tuple[int, int], int] = {}
    for j in range(m):
        for s in range(p):
            forward[s, j] = max(forward.get((s - 1, j), -1), forward.get((s, j - 1), -1)) + 1
    start = max(forward.values()) + 1  # the backwards wait for the last forward (a flush)
    backward: dict[tuple[int, int], int] = {}
    for j in reversed(range(m)):
        for s in reversed(range(p)):
            backward[s, j] = max(backward.get((s + 1, j), start - 1),
                                 backward.get((s, j + 1), start - 1)) + 1
    ticks = max(backward.values()) + 1
    op = np.full((ticks, p), -1)
    mb = np.full((ticks, p), -1)
    for kind, table in ((FORWARD, forward), (BACKWARD, backward)):
        for (s, j), t in table.items():
            op[t, s], mb[t, s] = kind, j
    return op, mb


def cells(schedule) -> dict[tuple[int, int, int], int]:
    """(op, stage, micro-batch) -> tick, checking that none runs twice."""
    where = {}
    for t in range(schedule.ticks):
        for s in range(schedule.stages):
            j = int(schedule.micro_batch[t, s])
            if j >= 0:
                key = (int(schedule.op[t, s]), s, j)
                assert key not in where, f"{key} runs twice"
                where[key] = t
    return where


@pytest.mark.parametrize("p,m", [(1, 1), (1, 4), (2, 1), (2, 3), (3, 5), (4, 1), (4, 8), (4, 16)])
def test_gpipe_matches_the_recurrence(p, m):
    schedule = gpipe(p, m)
    op, mb = gpipe_by_recurrence(p, m)
    np.testing.assert_array_equal(schedule.micro_batch, mb)
    busy = mb >= 0
    np.testing.assert_array_equal(schedule.op[busy], op[busy])
    assert schedule.ticks == 2 * (m + p - 1) and schedule.micro_batches == m


def test_one_f_one_b_hand_drawn():
    # P = 2, M = 3: stage 0 runs F0 F1 . B0 F2 B1 . B2, stage 1 . F0 B0 F1 B1 F2 B2 .
    schedule = one_f_one_b(2, 3)
    f, b = FORWARD, BACKWARD
    assert [(int(o), int(j)) for o, j in zip(schedule.op[:, 0], schedule.micro_batch[:, 0])
            if j >= 0] == [(f, 0), (f, 1), (b, 0), (f, 2), (b, 1), (b, 2)]
    np.testing.assert_array_equal(schedule.micro_batch[:, 0], [0, 1, -1, 0, 2, 1, -1, 2])
    np.testing.assert_array_equal(schedule.micro_batch[:, 1], [-1, 0, 0, 1, 1, 2, 2, -1])
    np.testing.assert_array_equal(schedule.op[1:7, 1], [f, b, f, b, f, b])


@settings(max_examples=60, deadline=None)
@given(p=st.integers(1, 6), m=st.integers(1, 20), name=st.sampled_from(["gpipe", "1f1b"]))
def test_schedules_respect_dependencies_and_the_bubble(p, m, name):
    schedule = (gpipe if name == "gpipe" else one_f_one_b)(p, m)
    where = cells(schedule)
    assert len(where) == 2 * p * m  # every forward and backward of every micro-batch, once
    for s in range(p):
        for j in range(m):
            if s > 0:
                assert where[FORWARD, s, j] > where[FORWARD, s - 1, j]
            after = where[BACKWARD, s + 1, j] if s < p - 1 else where[FORWARD, s, j]
            assert where[BACKWARD, s, j] > after
    assert schedule.ticks == 2 * (m + p - 1)
    assert Fraction(int((schedule.micro_batch < 0).sum()), schedule.ticks * p) == \
        Fraction(p - 1, m + p - 1)
    assert schedule.bubble_fraction == pytest.approx((p - 1) / (m + p - 1))
    if name == "gpipe":
        assert max(t for (o, _, _), t in where.items() if o == FORWARD) < \
            min(t for (o, _, _), t in where.items() if o == BACKWARD)
        assert schedule.slots == (m if p > 1 else 1)
    else:  # stage s never holds more than P - s micro-batches between forward and backward
        for s in range(p):
            for t in range(schedule.ticks):
                started = sum(where[FORWARD, s, j] <= t for j in range(m))
                finished = sum(where[BACKWARD, s, j] <= t for j in range(m))
                assert started - finished <= p - s
        assert schedule.slots == (min(m, p) if p > 1 else 1)


@pytest.mark.parametrize("stages,micro_batches", [(0, 4), (2, 0), (2, -1), (2.5, 2), (True, 2)])
def test_bad_counts(stages, micro_batches):
    for make in (gpipe, one_f_one_b):
        with pytest.raises(InvalidArgument, match="stages|micro_batches"):
            make(stages, micro_batches)
