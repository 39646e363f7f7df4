"""The waiting queue of a replica, ordered by the scheduling policy.

Orders: ``fcfs`` (arrival order; a preempted request keeps its place, so it goes back in front
of everything that arrived after it, as in vLLM), ``priority`` (higher class priority first,
then arrival order), ``shortest_prompt`` (fewest prompt tokens first, then arrival order).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from sim.request import Request

ORDER_KEYS: dict[str, Callable[[Request], tuple[int, ...]]] = {
    "fcfs": lambda r: (r.rid,),
    "priority": lambda r: (-r.priority, r.rid),
    "shortest_prompt": lambda r: (r.prompt_tokens, r.rid),
}


class WaitingQueue:
    """A priority queue of requests; ties always go to the earlier arrival (lower id)."""

    def __init__(self, order: str) -> None:
        self._key = ORDER_KEYS[order]
        self._heap: list[tuple[tuple[int, ...], Request]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (entry[1] for entry in sorted(self._heap, key=lambda e: e[0]))

    def push(self, req: Request) -> None:
        heapq.heappush(self._heap, (self._key(req), req))

    def head(self) -> Request:
        return self._heap[0][1]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[1]
