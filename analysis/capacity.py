"""The capacity of a run's replicas for the run's own workload mix (``sim.capacity``)."""

from __future__ import annotations

from analysis.rundata import RunData
from analysis.window import Window
from sim.capacity import Capacity, WorkloadMix, pool_capacity


def workload_mix(data: RunData, window: Window) -> WorkloadMix:
    """Token counts of the requests that arrived in `window` and were not rejected (of every
    routed request when the window holds none)."""
    req = data.requests[data.requests["status"] != "rejected"]
    inside = req[window.holds(req["arrival_s"])]
    mix = inside if len(inside) else req
    return WorkloadMix.of(mix["prompt_tokens"], mix["output_tokens"], mix["cached_prompt_tokens"])


def run_capacity(data: RunData, window: Window) -> Capacity | None:
    """What one replica of the run completes per second when kept full, as resolved for the run
    (its step-time parameters, batcher and KV-cache blocks; None when no request was routed).
    One pool: the first (a per-pool capacity is this per pool)."""
    if not (data.requests["status"] != "rejected").any():
        return None
    return pool_capacity(data.spec.pools[0], workload_mix(data, window))
