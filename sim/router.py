"""Routers: which replica gets an arriving request.

A router is a small class built over the fleet's replicas with ``choose() -> index`` (the replica
that takes the next request) and ``left(index)`` (a request left that replica: it finished or was
rejected; the recorder calls it). `ROUTERS` maps the scenario's ``fleet.router`` names to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import Protocol

from sim.replica import Replica


class Router(Protocol):
    def choose(self) -> int:
        """Index of the replica that takes the next request."""
        ...

    def left(self, index: int) -> None:
        """A request left replica `index` (finished or rejected)."""
        ...


class RoundRobin:
    """Replicas in turn, whatever their load."""

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._count = len(replicas)
        self._next = 0

    def choose(self) -> int:
        index = self._next
        self._next = (index + 1) % self._count
        return index

    def left(self, index: int) -> None:
        """Round robin ignores load."""


class LeastOutstanding:
    """The replica with the fewest requests inside it (join the shortest queue).

    Ties go to the lowest index. The router counts each replica's outstanding requests itself
    (routed minus left, which equals the batcher's waiting + running count) and keeps them in a
    min-heap of keys ``load * replicas + index``, whose order is (load, index). A replica's
    current key is ``self._keys[index]``; a heap entry that differs from it is stale and is
    dropped when it reaches the top, and the heap is rebuilt when stale entries outnumber live
    ones. Both operations cost O(log replicas) amortised.
    """

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._count = len(replicas)
        self._keys = [r.outstanding * self._count + i for i, r in enumerate(replicas)]
        self._heap = self._keys.copy()
        heapify(self._heap)

    def choose(self) -> int:
        heap, keys, n = self._heap, self._keys, self._count
        top = heap[0]
        while keys[top % n] != top:
            heappop(heap)
            top = heap[0]
        index = top % n
        keys[index] = top + n
        heapreplace(heap, top + n)
        return index

    def left(self, index: int) -> None:
        key = self._keys[index] - self._count
        self._keys[index] = key
        heap = self._heap
        heappush(heap, key)
        if len(heap) > 2 * self._count + 64:
            self._heap = self._keys.copy()
            heapify(self._heap)

    def loads(self) -> list[int]:
        """Outstanding requests per replica, as the router counts them."""
        return [key // self._count for key in self._keys]


ROUTERS: dict[str, type] = {"round_robin": RoundRobin, "least_outstanding": LeastOutstanding}


def make_router(name: str, replicas: Sequence[Replica]) -> Router:
    """The router registered under `name`, over `replicas`."""
    return ROUTERS[name](replicas)
