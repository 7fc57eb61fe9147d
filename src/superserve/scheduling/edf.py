"""The global earliest-deadline-first queue shared by the simulator and the live router.

A binary heap of (deadline_s, seq, item): ties break by arrival order, so the queue is a
deterministic function of its pushes. The earliest-deadline request is always the head, so
the only request that can expire next is the head: expiry needs one timer, not one per request.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["EDFQueue"]


class EDFQueue(Generic[T]):
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[T]:
        """Items in no particular order (for draining on shutdown)."""
        return (item for _, _, item in self._heap)

    def push(self, deadline_s: float, item: T) -> None:
        heapq.heappush(self._heap, (deadline_s, self._seq, item))
        self._seq += 1

    def head_deadline_s(self) -> float:
        """Deadline of the earliest-deadline item; IndexError when empty."""
        return self._heap[0][0]

    def peek(self) -> T:
        return self._heap[0][2]

    def pop(self) -> T:
        return heapq.heappop(self._heap)[2]

    def pop_n(self, n: int) -> list[T]:
        """The min(n, len) earliest-deadline items, in deadline order."""
        heap = self._heap
        n = min(n, len(heap))
        return [heapq.heappop(heap)[2] for _ in range(n)]

    def clear(self) -> list[T]:
        items = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return items
