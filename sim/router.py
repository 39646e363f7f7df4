"""Routers: which replica gets an arriving request.

A router is a small class with ``choose(replicas) -> index``; `ROUTERS` maps the scenario's
``fleet.router`` names to them.
"""

from __future__ import annotations

from typing import Protocol

from sim.replica import Replica


class Router(Protocol):
    def choose(self, replicas: list[Replica]) -> int:
        """Index of the replica that takes the next request."""
        ...


class RoundRobin:
    """Replicas in turn, whatever their load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: list[Replica]) -> int:
        index = self._next
        self._next = (index + 1) % len(replicas)
        return index


class LeastOutstanding:
    """The replica with the fewest requests inside it (join the shortest queue).

    Ties go to the lowest index.
    """

    def choose(self, replicas: list[Replica]) -> int:
        best, best_load = 0, replicas[0].outstanding
        for i in range(1, len(replicas)):
            load = replicas[i].outstanding
            if load < best_load:
                best, best_load = i, load
        return best


ROUTERS: dict[str, type] = {"round_robin": RoundRobin, "least_outstanding": LeastOutstanding}


def make_router(name: str) -> Router:
    """The router registered under `name`."""
    return ROUTERS[name]()
