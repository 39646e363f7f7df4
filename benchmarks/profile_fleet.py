"""Profile the fleet scenario with cProfile: where the simulation spends its time, by file.

    python benchmarks/profile_fleet.py --requests 100000

Prints the share of self time per source file and the functions with the most inclusive
time (cProfile inflates call-heavy code, so read shares, not absolute times), then the usual
JSON line (its wall time includes the profiler's overhead).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import Counter
from pathlib import Path

from common import (
    ROOT,
    WARMUP_REQUESTS,
    fleet_scenario,
    peak_rss_mb,
    replica_capacity_per_s,
    report,
)

from sim.engine import run


def shares(stats: pstats.Stats) -> tuple[Counter, list[tuple[str, float]]]:
    """Self time per file, and the functions sorted by inclusive time (seconds)."""
    by_file: Counter = Counter()
    inclusive = []
    for (path, line, name), (_, _, self_s, incl_s, _) in stats.stats.items():
        short = _short(path)
        by_file[short] += self_s
        inclusive.append((f"{name} ({short}:{line})", incl_s))
    inclusive.sort(key=lambda item: -item[1])
    return by_file, inclusive


def _short(path: str) -> str:
    if path == "~":
        return "builtins (len, heapq, list and dict methods)"
    p = Path(path)
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT))
    parts = p.parts
    return "/".join(parts[-2:]) if "site-packages" in parts else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    rate = args.load * replica_capacity_per_s() * args.replicas
    scenario = fleet_scenario(args.replicas, args.requests, rate)
    run(fleet_scenario(args.replicas, WARMUP_REQUESTS, rate))  # imports, trace parsing
    profiler = cProfile.Profile()
    wall0 = time.perf_counter()
    result = profiler.runcall(run, scenario)
    wall_s = time.perf_counter() - wall0
    by_file, inclusive = shares(pstats.Stats(profiler))
    total = sum(by_file.values())
    lines = {f"self {name}": f"{s / total:6.1%}" for name, s in by_file.most_common(12)}
    lines.update({f"incl {name}": f"{s / total:6.1%}" for name, s in inclusive[: args.top]})
    requests = result.requests.num_rows
    report(
        lines,
        {
            "benchmark": "profile_fleet",
            "wall_s": round(wall_s, 3),
            "requests": requests,
            "requests_per_s": round(requests / wall_s, 1),
            "events_per_request": round(result.events / requests, 3),
            "peak_rss_mb": peak_rss_mb(),
            "self_share_by_file": {k: round(v / total, 4) for k, v in by_file.most_common(12)},
        },
    )


if __name__ == "__main__":
    main()
