"""``Queue`` behaves like a list used as a FIFO, and every version stays what it was."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.runtime.fifo import Queue

OPS = st.lists(st.one_of(st.integers(0, 10**6).map(lambda x: ("push", x)),
                         st.just(("pop", None)), st.integers(0, 40).map(lambda n: ("back", n))),
               max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(), max_size=5), OPS)
def test_a_queue_is_a_list_fifo_and_older_versions_never_change(start, ops):
    """``push`` and ``pop`` change the newest version, ``back`` n pops the version n
    before it; every version must still list what its list model listed when made."""
    versions = [(Queue(start), list(start))]
    for op, arg in ops:
        queue, model = versions[-1] if op != "back" else versions[max(0, len(versions) - 1 - arg)]
        if op == "push":
            versions.append((queue.push(arg), [*model, arg]))
        elif model:
            item, rest = queue.pop()
            assert item == model[0]
            versions.append((rest, model[1:]))
        else:
            with pytest.raises(IndexError):
                queue.pop()
    for queue, model in versions:
        assert list(queue) == model
        assert len(queue) == len(model) and bool(queue) == bool(model)


def test_push_and_pop_leave_the_queue_they_are_called_on():
    q = Queue([1, 2]).extend([3, 4])
    first, rest = q.pop()
    assert (first, list(rest), list(q)) == (1, [2, 3, 4], [1, 2, 3, 4])
    assert list(rest.push(5)) == [2, 3, 4, 5] and list(rest) == [2, 3, 4]
    assert repr(Queue(["a"])) == "Queue(['a'])"


def test_a_long_queue_drains_without_recursion():
    q = Queue(range(50_000))
    total = 0
    while q:
        item, q = q.pop()
        total += item
    assert total == sum(range(50_000))
