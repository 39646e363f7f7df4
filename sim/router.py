"""Routers: which replica gets an arriving request.

A router is a small class built over read-only views of the fleet's replicas
(:class:`~sim.replica.ReplicaView`) with ``choose(req) -> index`` (the replica that takes `req`,
or None to hold it in the fleet's queue) and ``left(index)`` (a request left that replica: it
finished or was rejected; the fleet calls it). `ROUTERS` maps the scenario's ``fleet.router``
names to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import Protocol

from sim.replica import ReplicaView
from sim.request import Request


class Router(Protocol):
    def choose(self, req: Request) -> int | None:
        """Index of the replica that takes `req`; None: hold it in the fleet queue."""
        ...

    def left(self, index: int) -> None:
        """A request left replica `index` (finished or rejected)."""
        ...


class RoundRobin:
    """Replicas in turn, whatever their load."""

    def __init__(self, replicas: Sequence[ReplicaView]) -> None:
        self._count = len(replicas)
        self._next = 0

    def choose(self, req: Request) -> int:
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

    def __init__(self, replicas: Sequence[ReplicaView]) -> None:
        self._count = len(replicas)
        self._keys = [r.outstanding * self._count + i for i, r in enumerate(replicas)]
        self._heap = self._keys.copy()
        heapify(self._heap)

    def choose(self, req: Request) -> int:
        top = self._top()
        index = top % self._count
        self._keys[index] = top + self._count
        heapreplace(self._heap, top + self._count)
        return index

    def _top(self) -> int:
        """The smallest live key (stale entries above it are dropped)."""
        heap, keys, n = self._heap, self._keys, self._count
        top = heap[0]
        while keys[top % n] != top:
            heappop(heap)
            top = heap[0]
        return top

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


class CentralQueue(LeastOutstanding):
    """One fleet-wide FCFS queue: a request goes to a replica only when one has a free slot.

    A replica has a free slot while it holds fewer requests than its batcher runs at once
    (``max_num_seqs``, or ``max_batch``); the least loaded such replica takes the request (ties
    to the lowest index). When every replica is full the request waits in the fleet's queue
    (``choose`` returns None) and the engine dispatches it, in arrival order, as soon as a
    request leaves. With c replicas of one slot each and exponential service times the fleet is
    the M/M/c queue of Erlang C. A request still in the fleet's queue when an undrained run
    stops has no replica (-1 in requests.parquet) and is in no replica's queue statistics.
    """

    def __init__(self, replicas: Sequence[ReplicaView]) -> None:
        super().__init__(replicas)
        self._slots = replicas[0].slots  # every replica has the scenario's batcher

    def choose(self, req: Request) -> int | None:
        if self._top() // self._count >= self._slots:
            return None
        return super().choose(req)


ROUTERS: dict[str, type] = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "central_queue": CentralQueue,
}


def make_router(name: str, replicas: Sequence[ReplicaView]) -> Router:
    """The router registered under `name`, over `replicas`."""
    return ROUTERS[name](replicas)
