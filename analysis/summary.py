"""summary.json: every headline number of a run, computed from its traces."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.economics import economics, margin_with_background, pool_economics
from analysis.fleet import fleet_summary
from analysis.metrics import (
    batching,
    distribution,
    latencies,
    request_counts,
    throughput,
)
from analysis.rundata import RunData, load_run
from analysis.utilization import fleet_utilization, pool_utilization


def summarize(data: RunData) -> dict:
    """The summary of one run (the keys of summary.json; times in seconds, money in USD)."""
    measured = data.measured
    money, fleet = economics(data), fleet_summary(data)
    fleet["background"]["margin_with_background"] = margin_with_background(
        money, fleet["background"]["value_usd"]
    )
    return {
        "scenario": data.scenario.name,
        "seed": data.run["seed"],
        "simulated_s": data.simulated_s,
        "wall_s": data.run["wall_s"],
        "events": data.run["events"],
        "requests": request_counts(measured),
        "latency_s": {k: distribution(v) for k, v in latencies(measured).items()},
        "throughput": throughput(data),
        "utilization": fleet_utilization(data),
        "batching": batching(data),
        "economics": money,
        "classes": per_class(data),
        "pools": per_pool(data),
        "fleet": fleet,
    }


def per_pool(data: RunData) -> dict[str, dict]:
    """Per pool: what it is, its measured requests and throughput, its replicas' utilization,
    and its cost, revenue and margin over the whole run (pools' costs add up to the fleet's)."""
    measured = data.measured
    pools = data.request_pools().loc[measured.index]
    utilization, money = pool_utilization(data), pool_economics(data)
    out = {}
    for pool in data.spec.pools:
        mine = measured[pools == pool.name]
        out[pool.name] = {
            "gpu": pool.gpu,
            "tp": pool.tp,
            "replicas": pool.replicas,
            "pricing": pool.lifecycle.pricing,
            "model": pool.model,
            "requests": request_counts(mine),
            "throughput": throughput(data, mine),
            "utilization": utilization[pool.name],
            **money[pool.name],
        }
    return out


def per_class(data: RunData) -> dict[str, dict]:
    """Request counts and latency distributions of each request class (measured requests)."""
    measured = data.measured
    money, fleet = economics(data), fleet_summary(data)
    fleet["background"]["margin_with_background"] = margin_with_background(
        money, fleet["background"]["value_usd"]
    )
    return {
        str(name): {
            "requests": request_counts(group),
            "latency_s": {k: distribution(v) for k, v in latencies(group).items()},
        }
        for name, group in measured.groupby("class", sort=True)
    }


def write_summary(run_dir: str | Path, data: RunData | None = None) -> dict:
    """Compute the summary of a run directory and write it as summary.json."""
    run_dir = Path(run_dir)
    summary = summarize(data if data is not None else load_run(run_dir))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
