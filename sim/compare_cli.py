"""``sim compare``: run several scenarios and tabulate their headline numbers side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COLUMNS = (
    ("batcher", "batcher"),
    ("req/s", "throughput.requests_per_s"),
    ("output tok/s", "throughput.output_tokens_per_s"),
    ("TTFT p99 (ms)", "latency_s.ttft.p99"),
    ("TPOT p99 (ms)", "latency_s.tpot.p99"),
    ("capacity util", "utilization.capacity_utilization"),
    ("mean batch", "batching.mean_batch_size"),
    ("preemptions", "batching.preemptions"),
    ("rejected", "requests.rejected"),
)


def add_compare(sub: argparse._SubParsersAction) -> None:
    from sim.cli import add_set_option

    p = sub.add_parser("compare", help="run scenarios and print a table of their key numbers")
    p.add_argument("scenarios", nargs="+", help="scenario TOML files")
    p.add_argument("--out", help="also write the table (Markdown) to this file")
    add_set_option(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from analysis.rundata import RunData
    from analysis.summary import summarize
    from sim.engine import run
    from sim.errors import UserError
    from sim.scenario import load_scenario

    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give a file for the Markdown table")
    scenarios = [load_scenario(path, args.overrides) for path in args.scenarios]  # all valid?
    rows = []
    for i, (path, scenario) in enumerate(zip(args.scenarios, scenarios, strict=True), start=1):
        print(f"[{i}/{len(scenarios)}] {path}", file=sys.stderr, flush=True)
        summary = summarize(RunData.from_result(run(scenario, progress=True)))
        summary["batcher"] = _describe_batcher(scenario)
        rows.append(summary)
    table = markdown_table(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


def _describe_batcher(scenario) -> str:
    b = scenario.batcher
    if b.kind != "continuous":
        return b.kind
    traits = [
        name
        for name, on in (
            ("chunked prefill", b.chunked_prefill),
            ("no mixing (v0)", not b.mix_prefill_decode),
            (f"order={b.order}", b.order != "fcfs"),
            ("swap", b.preemption == "swap"),
            ("prefix cache", b.prefix_caching),
        )
        if on
    ]
    return "continuous" + (f" ({', '.join(traits)})" if traits else "")


def _lookup(summary: dict, dotted: str):
    value = summary
    for part in dotted.split("."):
        value = value[part]
    return value


def _cell(header: str, value) -> str:
    if value is None:
        return "-"
    if "(ms)" in header:
        return f"{value * 1000:.0f}"
    if header == "capacity util":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def markdown_table(summaries: list[dict]) -> str:
    """A Markdown table with one row per run summary (plus its `batcher` description)."""
    headers = ["scenario", *(h for h, _ in COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for s in summaries:
        cells = [s["scenario"], *(_cell(h, _lookup(s, key)) for h, key in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
