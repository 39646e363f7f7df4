"""Shared pieces of the benchmarks: the fleet scenario, its capacity, and one timed run.

Every benchmark ends by printing one JSON line (``wall_s``, ``requests``, ``requests_per_s``,
``events_per_request``, ``peak_rss_mb`` and more), so scripts and CI can parse the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/NAME.py` puts benchmarks/, not the root, first
    sys.path.insert(0, str(ROOT))

from sim.engine import RunResult, run  # noqa: E402
from sim.scenario import Scenario, scenario_from_dict  # noqa: E402

AZURE_CONV = {"dist": "empirical", "trace": "builtin:azure2023_conv"}
CAPACITY_REQUESTS = 4000  # requests of the saturation run that measures a replica's capacity
WARMUP_REQUESTS = 200  # a small run first, so imports and trace parsing are not timed


def fleet_scenario(
    replicas: int, num_requests: int, rate: float, step_compression: bool = True, seed: int = 1
) -> Scenario:
    """Llama-3.1-8B on H100 (tp 1), continuous batching, Poisson arrivals at `rate` req/s.

    Prompt and output lengths are resampled together (same rows) from the Azure LLM inference
    trace 2023, conversation part.
    """
    return scenario_from_dict(
        {
            "name": f"fleet_{replicas}x_llama3-8b_h100",
            "sim": {
                "seed": seed,
                "num_requests": num_requests,
                "step_compression": step_compression,
            },
            "workload": {
                "arrival": "poisson",
                "rate": rate,
                "classes": [
                    {"name": "chat", "prompt_tokens": AZURE_CONV, "output_tokens": AZURE_CONV}
                ],
            },
            "model": {"name": "llama-3.1-8b"},
            "fleet": {"gpu": "h100", "tp": 1, "replicas": replicas, "router": "least_outstanding"},
            "batcher": {"kind": "continuous"},
            "perf": {"kind": "roofline"},
            "economics": {
                "gpu_usd_per_hour": 3.99,
                "input_usd_per_million": 0.18,
                "output_usd_per_million": 0.18,
            },
        },
        "benchmarks/common.py",
    )


def fleet_parser(description: str, requests: int) -> argparse.ArgumentParser:
    """The options of a fleet benchmark: requests, replicas, load and a replica's capacity."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of fleet capacity")
    parser.add_argument(
        "--capacity-per-s", type=float, help="a replica's capacity (default: measure it)"
    )
    return parser


def replica_capacity_per_s() -> float:
    """Saturation throughput of one replica of the fleet scenario, in completed requests/s.

    Method: CAPACITY_REQUESTS requests all arrive within the first millisecond, so the replica's
    queue never empties and its batch stays as full as its KV cache and max_num_seqs allow;
    the capacity is the completion rate between the 10th and the 90th percentile of finish
    times (leaving out the ramp-up and the draining tail).
    """
    result = run(fleet_scenario(1, CAPACITY_REQUESTS, rate=CAPACITY_REQUESTS * 1000.0, seed=7))
    finish = np.sort(result.requests["finish_s"].to_numpy())
    lo, hi = len(finish) // 10, (9 * len(finish)) // 10
    return float((hi - lo) / (finish[hi] - finish[lo]))


def timed_run(scenario: Scenario) -> tuple[RunResult, dict]:
    """Run `scenario` after a small warm-up run; return the result and its measurements."""
    warmup_sim = scenario.sim.model_copy(update={"num_requests": WARMUP_REQUESTS})
    run(scenario.model_copy(update={"sim": warmup_sim}))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(scenario)
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    requests = result.requests.num_rows
    return result, {
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "requests": requests,
        "requests_per_s": round(requests / wall_s, 1),
        "requests_per_cpu_s": round(requests / cpu_s, 1),
        "events": result.events,
        "events_per_request": round(result.events / requests, 3),
        "steps_rows": result.steps.num_rows,
        "simulated_s": round(result.simulated_s, 3),
        "completed": pc.sum(pc.equal(result.requests["status"], "completed")).as_py(),
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine_load() -> str:
    """The 1/5/15-minute load averages, to judge how busy the machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(lines: dict, result: dict) -> None:
    """Print human-readable lines, then the one JSON line that ends every benchmark."""
    for key, value in lines.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(result, sort_keys=True))
