"""Is the fleet overloaded? Backlog, goodput and SLO attainment over the measurement window.

The backlog is the requests waiting to be admitted (arrived, not yet scheduled). A fleet offered
more than it can serve accumulates them at (offered - served) per second, so their time-average
number over the last quarter of the window exceeds that over the first quarter by about
(offered - served) x 3/4 of the window; a stable fleet's difference only fluctuates around zero.
(Requests being served are left out: a fleet filling its batches after too short a warm-up
holds more of them as it goes, without any overload.) One run is called saturated when that
growth is at least MIN_GROWTH_REQUESTS and GROWTH_FRACTION of the window's arrivals, which is
what a load offered 4/3 x GROWTH_FRACTION beyond what the fleet serves accumulates, and the
offered load is at least NEAR_CAPACITY of the fleet's capacity (analysis.capacity).
tests/test_saturation.py holds a fleet at 80% of its capacity stable and one at 120% saturated.
``sim plan`` judges the mean over seeds by the same rule and asks its 95% interval to lie above
zero too.
"""

from __future__ import annotations

import pandas as pd

from analysis.metrics import number_waiting, slo_missed
from analysis.rundata import RunData
from analysis.window import Window, completed_in

MIN_GROWTH_REQUESTS = 1.0
GROWTH_FRACTION = 0.002  # of the window's arrivals
NEAR_CAPACITY = 0.8  # docs/economics.md: the capacity is optimistic by at most 13%
EDGE_FRACTION = 0.25


def saturation(data: RunData, window: Window, capacity_per_s: float | None) -> dict:
    """The saturation block of summary.json (requests, requests per second, fractions).

    `capacity_per_s` is the fleet's capacity for the run's mix (None when unknown).
    """
    req, width = data.requests, window.duration_s
    arrived = req[window.holds(req["arrival_s"])]
    block: dict = {
        "saturated": None,
        "backlog_growth": None,
        "backlog_end": _waiting_at(req, window.end_s),
        "left_at_end": int((req["status"] == "in_flight").sum()),
        "offered_per_s": None,
        "departures_per_s": None,
        "goodput_per_s": None,
        "capacity_per_s": capacity_per_s,
        "offered_load": None,
        "slo_attainment": slo_attainment(data, arrived),
    }
    if width <= 0:
        return block
    edge = EDGE_FRACTION * width
    growth = number_waiting(req, window.end_s - edge, window.end_s) - number_waiting(
        req, window.start_s, window.start_s + edge
    )
    done = completed_in(data, window)
    offered = len(arrived) / width
    load = offered / capacity_per_s if capacity_per_s else None
    block.update(
        saturated=backlog_grows(growth, len(arrived), load),
        backlog_growth=growth,
        offered_per_s=offered,
        departures_per_s=len(done) / width,
        goodput_per_s=float((~slo_missed(done, data.scenario)).sum()) / width,
        offered_load=load,
    )
    return block


def backlog_grows(growth: float, arrivals: float, offered_load: float | None) -> bool:
    """Whether a backlog growth of `growth` requests over a window of `arrivals` arrivals, at
    `offered_load` times the capacity (None or NaN: unknown), is a saturated fleet's."""
    large = growth >= max(MIN_GROWTH_REQUESTS, GROWTH_FRACTION * arrivals)
    return bool(large and not (offered_load is not None and offered_load < NEAR_CAPACITY))


def _waiting_at(requests: pd.DataFrame, t: float) -> int:
    """Requests arrived by `t`, not rejected and not yet scheduled by `t`."""
    routed = requests[requests["status"] != "rejected"]
    waiting = routed["first_scheduled_s"].isna() | (routed["first_scheduled_s"] > t)
    return int(((routed["arrival_s"] <= t) & waiting).sum())


def slo_attainment(data: RunData, arrived: pd.DataFrame) -> dict[str, float | None]:
    """Per class: the share of the requests that arrived in the window which completed within
    their class SLOs (rejected and unfinished requests count as misses; None: no arrivals)."""
    out = {}
    for name, group in arrived.groupby("class", sort=True):
        done = group[group["status"] == "completed"]
        met = int((~slo_missed(done, data.scenario)).sum())
        out[str(name)] = met / len(group) if len(group) else None
    return out
