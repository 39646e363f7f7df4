"""Bare SimPy events with a callback, for the fleet's own bookkeeping (no process per event)."""

from __future__ import annotations

from collections.abc import Callable

import simpy
from simpy.core import URGENT


def schedule_urgent(
    env: simpy.Environment, at_s: float, callback: Callable[[simpy.Event], None]
) -> None:
    """Call `callback` at `at_s` from an URGENT event (before NORMAL events at that time).

    A bare event with a callback rather than a SimPy process: it skips the generator resumption.
    Arrivals and every change of a replica's state are such events, so at one simulated time
    they come, in the order they were scheduled, before any iteration boundary.
    """
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(callback)
    env.schedule(event, URGENT, at_s - env.now)
