"""Benchmark: a million requests on 32 Llama-3-8B H100 replicas at 70% of fleet capacity.

    python benchmarks/fleet_1m.py                       # the benchmark
    python benchmarks/fleet_1m.py --requests 2000       # a quick smoke run

Targets (docs/performance.md): <= 30 s wall, <= 1.5 GB peak memory, >= 33,000 simulated
requests per wall second, <= 6 SimPy events per request.
"""

from __future__ import annotations

from common import (
    fleet_parser,
    fleet_scenario,
    machine_load,
    replica_capacity_per_s,
    report,
    timed_run,
)


def main() -> None:
    parser = fleet_parser(__doc__.splitlines()[0], requests=1_000_000)
    parser.add_argument("--no-step-compression", action="store_true")
    args = parser.parse_args()

    capacity = args.capacity_per_s or replica_capacity_per_s()
    rate = args.load * capacity * args.replicas
    scenario = fleet_scenario(args.replicas, args.requests, rate, not args.no_step_compression)
    load_before = machine_load()
    _, m = timed_run(scenario)
    m.update(
        benchmark="fleet_1m",
        replicas=args.replicas,
        load=args.load,
        replica_capacity_per_s=round(capacity, 3),
        arrival_rate_per_s=round(rate, 3),
        step_compression=not args.no_step_compression,
        machine_load=f"{load_before} -> {machine_load()}",
    )
    report(
        {
            "scenario": f"{scenario.name}, {args.requests:,} requests",
            "capacity": f"{capacity:.2f} req/s per replica (saturation run); "
            f"arrivals {rate:.1f} req/s = {args.load:.0%}",
            "wall time": f"{m['wall_s']:.2f} s (cpu {m['cpu_s']:.2f} s)",
            "simulated requests/s": f"{m['requests_per_s']:,.0f} per wall s, "
            f"{m['requests_per_cpu_s']:,.0f} per cpu s",
            "events per request": f"{m['events_per_request']:.3f}",
            "peak RSS": f"{m['peak_rss_mb']:.0f} MiB",
            "machine load": m["machine_load"],
        },
        m,
    )


if __name__ == "__main__":
    main()
