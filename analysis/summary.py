"""summary.json: every headline number of a run, computed from its traces."""

from __future__ import annotations

import json
import math
from pathlib import Path

from analysis.capacity import run_capacity
from analysis.economics import economics
from analysis.metrics import (
    batching,
    distribution,
    latencies,
    request_counts,
    throughput,
)
from analysis.rundata import RunData, load_run
from analysis.saturation import saturation
from analysis.utilization import fleet_utilization
from analysis.window import measurement_window, window_block


def summarize(data: RunData, target_margin: float = 0.0) -> dict:
    """The summary of one run (the keys of summary.json; times in seconds, money in USD).

    Everything but `simulated_s`, `economics.totals` and the end-of-run request statuses is
    measured over the one measurement window (analysis.window); `target_margin` sets the
    economics' price-cut headroom.
    """
    window = measurement_window(data)
    measured = data.measured
    capacity = run_capacity(data, window)
    per_replica = math.nan if capacity is None else capacity.requests_per_s
    fleet_capacity = None if capacity is None else per_replica * data.spec.num_replicas
    return {
        "scenario": data.scenario.name,
        "seed": data.run["seed"],
        "simulated_s": data.simulated_s,
        "wall_s": data.run["wall_s"],
        "events": data.run["events"],
        "window": window_block(data, window),
        "requests": request_counts(measured),
        "latency_s": {k: distribution(v) for k, v in latencies(measured).items()},
        "throughput": throughput(data, window),
        "utilization": fleet_utilization(data, window, per_replica),
        "saturation": saturation(data, window, fleet_capacity),
        "batching": batching(data, window),
        "economics": economics(data, window, target_margin),
        "classes": per_class(data),
    }


def per_class(data: RunData) -> dict[str, dict]:
    """Request counts and latency distributions of each request class (measured requests)."""
    measured = data.measured
    return {
        str(name): {
            "requests": request_counts(group),
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
