"""Bare SimPy events with a callback: cheaper than a process for one-off actions (the fleet's
bookkeeping, KV transfers)."""

from __future__ import annotations

from collections.abc import Callable

import simpy
from simpy.core import URGENT


def urgent_after(
    env: simpy.Environment, delay_s: float, callback: Callable[[simpy.Event], None]
) -> None:
    """Call `callback` `delay_s` seconds from now from an URGENT event (before NORMAL events,
    such as iteration boundaries, at that time).

    A bare event with a callback rather than a SimPy process: it skips the generator resumption.
    """
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(callback)
    env.schedule(event, URGENT, delay_s)


def schedule_urgent(
    env: simpy.Environment, at_s: float, callback: Callable[[simpy.Event], None]
) -> None:
    """Call `callback` at `at_s` (seconds of simulated time) from an URGENT event.

    Arrivals and every change of a replica's state are such events, so at one simulated time
    they come, in the order they were scheduled, before any iteration boundary.
    """
    urgent_after(env, at_s - env.now, callback)
