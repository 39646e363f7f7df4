"""Benchmark: wall time grows linearly with requests and with replicas at fixed per-replica load.

    python benchmarks/scaling.py                                   # the benchmark
    python benchmarks/scaling.py --requests 500,1000 --replicas 1,2 --per-replica 200   # smoke

Requests sweep: 10k / 100k / 1M requests on 32 replicas at 70% load. Replica sweep: 1 / 32 /
1024 replicas at 70% load and the same number of requests per replica (1,000), so every
replica lives through the same history. Each point runs in a fresh interpreter
(``fleet_1m.py``), so its time and peak memory are its own.
Targets: 10x the requests costs <= 11x the wall time; per-request cost on 1024 replicas is
<= 1.5x that on 32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import machine_load, replica_capacity_per_s, report

FLEET = Path(__file__).resolve().with_name("fleet_1m.py")


def point(requests: int, replicas: int, load: float, capacity_per_s: float) -> dict:
    """Run fleet_1m.py at one size in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, str(FLEET), "--requests", str(requests), "--replicas", str(replicas)]
    cmd += ["--load", str(load), "--capacity-per-s", repr(capacity_per_s)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratios(sweep: list[dict], key: str, per_request: bool) -> list[float]:
    """Ratio of `key` (per request, if asked) between consecutive points of a sweep."""
    values = [p[key] / p["requests"] if per_request else p[key] for p in sweep]
    return [round(b / a, 3) for a, b in zip(values, values[1:], strict=False)]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--requests-replicas", type=int, default=32)
    parser.add_argument("--replicas", type=ints, default=[1, 32, 1024])
    parser.add_argument("--per-replica", type=int, default=1000, help="requests per replica")
    parser.add_argument("--load", type=float, default=0.7)
    args = parser.parse_args()

    capacity = replica_capacity_per_s()
    load_before = machine_load()
    by_requests = [point(n, args.requests_replicas, args.load, capacity) for n in args.requests]
    by_replicas = [point(r * args.per_replica, r, args.load, capacity) for r in args.replicas]
    lines, rows = {}, []
    for name, sweep in (("requests", by_requests), ("replicas", by_replicas)):
        for p in sweep:
            us = 1e6 * p["wall_s"] / p["requests"]
            cpu_us = 1e6 * p["cpu_s"] / p["requests"]
            lines[f"{p['requests']:,} req x {p['replicas']} rep"] = (
                f"{p['wall_s']:8.2f} s wall {us:6.1f} us/req (cpu {cpu_us:6.1f} us/req), "
                f"{p['events_per_request']:.2f} events/req, {p['peak_rss_mb']:.0f} MiB"
            )
            rows.append({"sweep": name, **p})
    growth = {k: ratios(by_requests, k, per_request=False) for k in ("wall_s", "cpu_s")}
    cost = {k: ratios(by_replicas, k, per_request=True) for k in ("wall_s", "cpu_s")}
    lines["time growth per step"] = "wall " + ", ".join(f"{g:.2f}x" for g in growth["wall_s"])
    lines["time growth per step"] += "; cpu " + ", ".join(f"{g:.2f}x" for g in growth["cpu_s"])
    lines["cost/req per replica step"] = "wall " + ", ".join(f"{g:.2f}x" for g in cost["wall_s"])
    lines["cost/req per replica step"] += "; cpu " + ", ".join(f"{g:.2f}x" for g in cost["cpu_s"])
    lines["machine load"] = f"{load_before} -> {machine_load()}"
    biggest = max(rows, key=lambda p: p["requests"])
    result = {
        "benchmark": "scaling",
        "wall_s": round(sum(p["wall_s"] for p in rows), 3),
        "requests": sum(p["requests"] for p in rows),
        "requests_per_s": biggest["requests_per_s"],
        "events_per_request": biggest["events_per_request"],
        "peak_rss_mb": max(p["peak_rss_mb"] for p in rows),
        "request_growth_wall": growth["wall_s"],
        "request_growth_cpu": growth["cpu_s"],
        "replica_cost_ratio_wall": cost["wall_s"],
        "replica_cost_ratio_cpu": cost["cpu_s"],
        "points": rows,
        "machine_load": lines["machine load"],
    }
    report(lines, result)


if __name__ == "__main__":
    main()
