"""The capacity of a run's replicas for the run's own workload mix (``sim.capacity``)."""

from __future__ import annotations

import math

import pandas as pd

from analysis.rundata import RunData
from analysis.window import Window
from sim.capacity import Capacity, WorkloadMix, pool_capacity
from sim.fleet_config import COLOCATED
from sim.runspec import PoolSpec


def workload_mix(requests: pd.DataFrame, window: Window) -> WorkloadMix | None:
    """Token counts of the `requests` that arrived in `window` and were not rejected (of every
    one not rejected when the window holds none; None when there are none)."""
    routed = requests[requests["status"] != "rejected"]
    inside = routed[window.holds(routed["arrival_s"])]
    mix = inside if len(inside) else routed
    if mix.empty:
        return None
    return WorkloadMix.of(mix["prompt_tokens"], mix["output_tokens"], mix["cached_prompt_tokens"])


def replica_capacity(data: RunData, window: Window, pool: PoolSpec) -> Capacity | None:
    """What one replica of `pool` completes per second when kept full, as resolved for the run
    (step-time parameters, batcher, KV-cache blocks), for the requests routed to the pool (for
    those of the whole run when it served none; None when no request was routed at all)."""
    mine = data.requests[data.request_pools() == pool.name]
    mix = workload_mix(mine, window) or workload_mix(data.requests, window)
    return None if mix is None else pool_capacity(pool, mix)


def pool_capacities(data: RunData, window: Window) -> dict[str, float]:
    """One replica's capacity (requests/s) of each pool, by pool name (NaN: unknown; always for
    a prefill or decode pool, whose replicas complete no request alone). Computed once per run
    and window."""
    capacities = data.derived(
        ("pool_capacities", window),
        lambda: {pool.name: _requests_per_s(data, window, pool) for pool in data.spec.pools},
    )
    return dict(capacities)


def _requests_per_s(data: RunData, window: Window, pool: PoolSpec) -> float:
    if pool.role != COLOCATED:
        return math.nan
    capacity = replica_capacity(data, window, pool)
    return math.nan if capacity is None else capacity.requests_per_s
