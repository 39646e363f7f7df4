"""Benchmark: step-by-step vs compressed mode on one 100k-request scenario, with a trace check.

    python benchmarks/compression.py                    # the benchmark (fleet scenario)
    python benchmarks/compression.py --requests 500     # a quick smoke run

Both modes run the fleet scenario of fleet_1m.py (32 replicas, by default at 70% load); the
request traces must be identical (same status, replica and preemptions; times equal within
1e-9 s relative). Target: compressed >= 20x faster than step-by-step.
"""

from __future__ import annotations

import numpy as np
from common import (
    fleet_parser,
    fleet_scenario,
    machine_load,
    replica_capacity_per_s,
    report,
    timed_run,
)

TIME_COLUMNS = ("first_scheduled_s", "first_token_s", "finish_s")
EXACT_COLUMNS = ("status", "replica", "preemptions")


def trace_differences(fast, slow) -> dict:
    """How far the compressed run's request trace is from the step-by-step one."""
    exact = {c: fast.requests[c].equals(slow.requests[c]) for c in EXACT_COLUMNS}
    worst = 0.0
    for c in TIME_COLUMNS:
        a, b = fast.requests[c].to_numpy(), slow.requests[c].to_numpy()
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return {"identical": False, "exact_columns": exact, "max_time_diff_s": None}
        finite = ~np.isnan(a)
        worst = max(worst, float(np.max(np.abs(a[finite] - b[finite]), initial=0.0)))
    times_ok = all(
        np.allclose(fast.requests[c].to_numpy(), slow.requests[c].to_numpy(), 1e-9, 1e-9, True)
        for c in TIME_COLUMNS
    )
    return {
        "identical": all(exact.values()) and times_ok,
        "exact_columns": exact,
        "max_time_diff_s": worst,
    }


def main() -> None:
    parser = fleet_parser(__doc__.splitlines()[0], requests=100_000)
    args = parser.parse_args()

    rate = args.load * (args.capacity_per_s or replica_capacity_per_s()) * args.replicas
    load_before = machine_load()
    slow, s = timed_run(fleet_scenario(args.replicas, args.requests, rate, step_compression=False))
    fast, f = timed_run(fleet_scenario(args.replicas, args.requests, rate, step_compression=True))
    check = trace_differences(fast, slow)
    iterations = int(np.sum(fast.steps["iterations"].to_numpy()))
    result = {
        "benchmark": "compression",
        **f,
        "step_by_step": s,
        "speedup_wall": round(s["wall_s"] / f["wall_s"], 3),
        "speedup_cpu": round(s["cpu_s"] / f["cpu_s"], 3),
        "event_ratio": round(s["events"] / f["events"], 3),
        "iterations_per_interval": round(iterations / f["steps_rows"], 3),
        "traces": check,
        "replicas": args.replicas,
        "load": args.load,
        "machine_load": f"{load_before} -> {machine_load()}",
    }
    report(
        {
            "scenario": f"{args.replicas} replicas at {args.load:.0%}, {args.requests:,} requests",
            "step-by-step": f"{s['wall_s']:.2f} s wall (cpu {s['cpu_s']:.2f} s), "
            f"{s['events_per_request']:.2f} events/req",
            "compressed": f"{f['wall_s']:.2f} s wall (cpu {f['cpu_s']:.2f} s), "
            f"{f['events_per_request']:.2f} events/req",
            "speed-up": f"{result['speedup_wall']:.2f}x wall, {result['speedup_cpu']:.2f}x cpu, "
            f"{result['event_ratio']:.2f}x fewer events",
            "iterations per interval": f"{result['iterations_per_interval']:.2f}",
            "traces identical": f"{check['identical']} "
            f"(largest time difference {check['max_time_diff_s']} s)",
            "machine load": result["machine_load"],
        },
        result,
    )


if __name__ == "__main__":
    main()
