"""``Queue``: an immutable first-in first-out sequence that shares structure between versions.

:meth:`Queue.push` is O(1) and :meth:`Queue.pop` O(1) amortized over a run of pops; neither
copies the items nor changes the queue it is called on, so every older version stays valid.
Items live in two linked lists of pairs: ``front`` (oldest first) and ``back`` (newest first),
reversed into ``front`` when ``front`` runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_Link = tuple[Any, "_Link"] | None


class Queue(Generic[T]):
    """An immutable FIFO of ``items`` (oldest first)."""

    __slots__ = ("_back", "_front", "_size")

    def __init__(self, items: Iterable[T] = ()):
        back: _Link = None
        size = 0
        for item in items:
            back, size = (item, back), size + 1
        self._front: _Link = None
        self._back = back
        self._size = size

    @classmethod
    def _of(cls, front: _Link, back: _Link, size: int) -> Queue[T]:
        queue = cls.__new__(cls)
        queue._front, queue._back, queue._size = front, back, size
        return queue

    def push(self, item: T) -> Queue[T]:
        """This queue with ``item`` added last."""
        return Queue._of(self._front, (item, self._back), self._size + 1)

    def extend(self, items: Iterable[T]) -> Queue[T]:
        """This queue with ``items`` added last, in order."""
        queue = self
        for item in items:
            queue = queue.push(item)
        return queue

    def pop(self) -> tuple[T, Queue[T]]:
        """The oldest item and the queue without it; :class:`IndexError` when empty."""
        front, back = self._front, self._back
        if front is None:
            if back is None:
                raise IndexError("pop from an empty Queue")
            while back is not None:
                item, back = back
                front = (item, front)
        item, front = front
        return item, Queue._of(front, back, self._size - 1)

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[T]:
        link = self._front
        while link is not None:
            item, link = link
            yield item
        newest_first = []
        link = self._back
        while link is not None:
            item, link = link
            newest_first.append(item)
        yield from reversed(newest_first)

    def __repr__(self) -> str:
        return f"Queue({list(self)!r})"
