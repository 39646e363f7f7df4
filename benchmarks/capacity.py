"""Capacity (sim/capacity.py) against the saturation throughput `sim plan --max-rate` finds.

    python benchmarks/capacity.py --workers 2            # every shipped scenario (~20 minutes)
    python benchmarks/capacity.py scenarios/policies/continuous.toml

For each scenario, `sim.plan.max_rate` without SLOs finds the highest arrival rate (req/s; for a
trace replay, its load_scale) at which the fleet's backlog does not grow, over 3 seeds to 2%;
the capacity column is the summaries' `utilization.capacity_per_s` at that rate: the fleet's
requests/s when kept full, computed from the step-time model and batcher limits for the runs'
own workload mix, no simulation. Static and dynamic batching run 1,800 s of arrivals (their
batches last 9 to 21 s). The last row is a variant (not shipped) whose KV cache, not
max_num_seqs, limits the batch. Prints a Markdown table (docs/economics.md holds its output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/NAME.py` puts benchmarks/, not the root, first
    sys.path.insert(0, str(ROOT))

from analysis.capacity import replica_capacity  # noqa: E402
from analysis.rundata import load_run  # noqa: E402
from analysis.window import measurement_window  # noqa: E402
from sim.study.plan import max_rate  # noqa: E402

KV_LIMITED = ("scenarios/policies/continuous.toml", ("batcher.gpu_memory_utilization=0.3",))
# batches of 9 to 21 s: 150 s of arrivals finish too few of them to tell a growing backlog
LONGER = {"static": ("sim.duration_s=1800",), "dynamic": ("sim.duration_s=1800",)}


def cases(paths: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(scenario, --set items) to compare: the given files, or every shipped one and a variant."""
    if not paths:
        paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").rglob("*.toml"))
        return [*((p, LONGER.get(Path(p).stem, ())) for p in paths), KV_LIMITED]
    return [(p, LONGER.get(Path(p).stem, ())) for p in paths]


def compare(path: str, items: tuple[str, ...], out: Path, workers: int | None) -> str:
    """One Markdown row: scenario, capacity and what limits it, --max-rate, their ratio."""
    found = max_rate(ROOT / path, seeds=3, out=out, overrides=items, workers=workers)
    row = found.options.iloc[0]
    if row["status"] != "ok":
        return f"| {path} {' '.join(items)} | - | - | {row['status']} | - |"
    ok = found.evaluations[found.evaluations["feasible"]]
    knob = "workload.rate" if "workload.rate" in ok else "workload.load_scale"
    data = load_run(out / "points" / ok.loc[ok[knob].idxmax(), "point"] / "seed-0")
    limit = replica_capacity(data, measurement_window(data), data.spec.pools[0]).limited_by
    name = f"{path} ({', '.join(items)})" if items else path
    capacity, top = row["capacity_per_s"], row["max_rate_per_s"]
    return f"| {name} | {capacity:.2f} | {limit} | {top:.2f} | {capacity / top:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="scenario files (default: every shipped one)")
    parser.add_argument("--workers", type=int, help="local processes (default: CPU count)")
    parser.add_argument("--out", default="runs/capacity-check", help="folder for the runs")
    args = parser.parse_args()
    print("| scenario | capacity (req/s) | limited by | --max-rate (req/s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for path, items in cases(args.scenarios):
        folder = Path(args.out) / (Path(path).stem + ("-" + "-".join(items) if items else ""))
        print(compare(path, items, folder, args.workers), flush=True)


if __name__ == "__main__":
    main()
