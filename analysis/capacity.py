"""The capacity of a run's replicas for the run's own workload mix (``sim.capacity``)."""

from __future__ import annotations

import numpy as np

from analysis.rundata import RunData
from analysis.window import Window
from sim.capacity import SAMPLE_SEED, Capacity, WorkloadMix, replica_capacity
from sim.perf import make_step_time_model


def workload_mix(data: RunData, window: Window) -> WorkloadMix:
    """Token counts of the requests that arrived in `window` and were not rejected (of every
    routed request when the window holds none)."""
    req = data.requests[data.requests["status"] != "rejected"]
    inside = req[window.holds(req["arrival_s"])]
    mix = inside if len(inside) else req
    return WorkloadMix.of(mix["prompt_tokens"], mix["output_tokens"], mix["cached_prompt_tokens"])


def run_capacity(data: RunData, window: Window) -> Capacity | None:
    """What one replica of the run completes per second when kept full, with the KV-cache blocks
    the run had (None when no request was routed)."""
    if not (data.requests["status"] != "rejected").any():
        return None
    model = make_step_time_model(data.scenario, np.random.default_rng(SAMPLE_SEED))
    mix = workload_mix(data, window)
    return replica_capacity(model, data.scenario.batcher, data.kv_capacity_blocks, mix)
