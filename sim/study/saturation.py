"""Does the queue grow without bound? Backlog and throughput over a run's arrival window.

A fleet offered more than it can serve accumulates requests at (offered - served) per second,
so the time-average number in the system over the last quarter of the window exceeds that over
the first quarter by about (offered - served) x 3/4 of the window. A stable fleet's difference
only fluctuates around zero. ``sim plan`` calls a point saturated when, across seeds, this growth
is at least one request and its 95% interval lies above zero.
"""

from __future__ import annotations

from analysis.metrics import number_in_system
from analysis.rundata import RunData

MIN_GROWTH_REQUESTS = 1.0
EDGE_FRACTION = 0.25


def arrival_window(data: RunData) -> tuple[float, float]:
    """Measured arrival window in seconds: [warmup_s, duration_s or the last arrival]."""
    start = data.scenario.sim.warmup_s
    end = data.scenario.sim.duration_s
    if end is None:
        end = float(data.requests["arrival_s"].max()) if len(data.requests) else start
    return start, end


def saturation_metrics(data: RunData) -> dict[str, float | None]:
    """backlog_growth (requests), offered_per_s and departures_per_s over the arrival window."""
    t0, t1 = arrival_window(data)
    width = t1 - t0
    if width <= 0:
        return {"backlog_growth": None, "offered_per_s": None, "departures_per_s": None}
    req = data.requests
    edge = EDGE_FRACTION * width
    growth = number_in_system(req, t1 - edge, t1) - number_in_system(req, t0, t0 + edge)
    arrived = req["arrival_s"].between(t0, t1).sum()
    departed = req["finish_s"].between(t0, t1).sum()
    return {
        "backlog_growth": growth,
        "offered_per_s": float(arrived) / width,
        "departures_per_s": float(departed) / width,
    }
