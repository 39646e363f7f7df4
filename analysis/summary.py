"""summary.json: every headline number of a run, computed from its traces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis.capacity import pool_capacities
from analysis.disaggregation import kv_transfer, pool_requests
from analysis.economics import economics, margin_with_background, pool_economics
from analysis.fleet import fleet_summary
from analysis.metrics import (
    batching,
    distribution,
    latencies,
    rejected_by_reason,
    request_counts,
    throughput,
)
from analysis.rundata import RunData, load_run
from analysis.saturation import saturation
from analysis.utilization import fleet_utilization, pool_utilization
from analysis.window import Window, measurement_window, window_block


def summarize(data: RunData, target_margin: float = 0.0) -> dict:
    """The summary of one run (the keys of summary.json; times in seconds, money in USD); a run
    with prefill and decode pools has a ``kv_transfer`` block too.

    Everything but `simulated_s`, `economics.totals` and the end-of-run request statuses is
    measured over the one measurement window (analysis.window); `target_margin` sets the
    economics' price-cut headroom.
    """
    window = measurement_window(data)
    measured = data.measured
    capacity = pool_capacities(data, window)
    utilization = fleet_utilization(data, window, capacity)
    fleet_capacity = utilization["capacity_per_s"]
    money, fleet = economics(data, window, target_margin), fleet_summary(data)
    fleet["background"]["margin_with_background"] = margin_with_background(
        money, fleet["background"]["value_usd"]
    )
    summary = {
        "scenario": data.scenario.name,
        "seed": data.run["seed"],
        "simulated_s": data.simulated_s,
        "wall_s": data.run["wall_s"],
        "events": data.run["events"],
        "window": window_block(data, window),
        "requests": requests_block(data, measured),
        "latency_s": {k: distribution(v) for k, v in latencies(measured).items()},
        "throughput": throughput(data, window),
        "utilization": utilization,
        "saturation": saturation(
            data,
            window,
            fleet_capacity
            if fleet_capacity is not None and math.isfinite(fleet_capacity)
            else None,
        ),
        "batching": batching(data, window),
        "economics": money,
        "classes": per_class(data),
        "pools": per_pool(data, window, capacity),
        "fleet": fleet,
    }
    if data.spec.disaggregated:
        summary["kv_transfer"] = kv_transfer(data)
    return summary


def requests_block(data: RunData, requests: pd.DataFrame) -> dict:
    """Counts of `requests` (some of the run's measured ones) and of their rejections by
    reason."""
    return {
        **request_counts(requests),
        "rejected_by_reason": rejected_by_reason(requests, data.rejections),
    }


def per_pool(data: RunData, window: Window, capacity: dict[str, float]) -> dict[str, dict]:
    """Per pool: what it is, its measured requests and the throughput it served in the window
    (a prefill pool's: the requests it prefilled, a decode pool's: those it decoded), its
    replicas' utilization, and its cost, revenue and margin over the window (pools' costs add
    up to the fleet's)."""
    measured = data.measured
    utilization = pool_utilization(data, window, capacity)
    money = pool_economics(data, window)
    out = {}
    for pool in data.spec.pools:
        out[pool.name] = {
            "gpu": pool.gpu,
            "tp": pool.tp,
            "replicas": pool.replicas,
            "pricing": pool.lifecycle.pricing,
            "model": pool.model,
            "role": pool.role,
            "requests": requests_block(data, pool_requests(data, measured, pool)),
            "throughput": throughput(data, window, pool_requests(data, data.requests, pool)),
            "utilization": utilization[pool.name],
            **money[pool.name],
        }
    return out


def per_class(data: RunData) -> dict[str, dict]:
    """Request counts and latency distributions of each request class (measured requests)."""
    measured = data.measured
    return {
        str(name): {
            "requests": requests_block(data, group),
            "latency_s": {k: distribution(v) for k, v in latencies(group).items()},
        }
        for name, group in measured.groupby("class", sort=True)
    }


def write_summary(
    run_dir: str | Path, data: RunData | None = None, target_margin: float = 0.0
) -> dict:
    """Compute the summary of a run directory and write it as summary.json."""
    run_dir = Path(run_dir)
    summary = summarize(data if data is not None else load_run(run_dir), target_margin)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
