"""The command line: ``sim run``; other commands register in `COMMANDS`.

Bad input ends with the UserError's message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from sim import perf_cli
from sim.errors import UserError
from sim.report_cli import add_report
from sim.study.commands import add_plan, add_sweep


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate one scenario and write its traces and summary")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("--out", help="run directory (default: runs/<scenario name>)")
    p.add_argument("--seed", type=int, help="override sim.seed")
    add_set_option(p)
    p.set_defaults(func=_cmd_run)


def add_set_option(p: argparse.ArgumentParser) -> None:
    """The repeatable ``--set section.field=value`` option."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario field, e.g. --set workload.rate=30 (repeatable)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from analysis.economics import gpu_price
    from analysis.rundata import RunData
    from analysis.summary import write_summary
    from sim.engine import run
    from sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    if scenario.economics is not None:
        gpu_price(scenario)  # a missing GPU price is an error before, not after, simulating
    result = run(scenario, seed=args.seed, progress=True)
    out = Path(args.out or Path("runs") / scenario.name)
    result.save(out)
    summary = write_summary(out, RunData.from_result(result))
    print(format_summary(summary))
    print(f"traces and summary in {out}/")
    return 0


def format_summary(s: dict) -> str:
    """A short human-readable view of a summary dict."""
    r, lat, thr, util, eco = (
        s["requests"],
        s["latency_s"],
        s["throughput"],
        s["utilization"],
        s["economics"],
    )

    def ms(block: dict, key: str) -> str:
        value = block[key]
        return "-" if value is None else f"{value * 1000:.0f}"

    lines = [
        f"{s['scenario']} (seed {s['seed']}): {s['simulated_s']:.1f} s simulated in "
        f"{s['wall_s']:.2f} s wall, {s['events']} events",
        f"requests   arrived {r['arrived']}  completed {r['completed']}  rejected "
        f"{r['rejected']}  in flight {r['in_flight']}  preemptions {r['preemptions']}",
        "latency ms       mean    p50    p90    p99",
    ]
    for name in ("ttft", "tpot", "e2e", "queue"):
        b = lat[name]
        lines.append(
            f"  {name:<8} {ms(b, 'mean'):>9} {ms(b, 'p50'):>6} {ms(b, 'p90'):>6} {ms(b, 'p99'):>6}"
        )
    lines.append(
        f"throughput {thr['requests_per_s']:.2f} req/s, {thr['input_tokens_per_s']:.0f} input "
        f"and {thr['output_tokens_per_s']:.0f} output tokens/s"
    )
    lines.append(
        f"utilization  GPU busy {util['gpu_busy_fraction']:.1%}, KV cache "
        f"{util['kv_occupancy_mean']:.1%}"
    )
    if eco["cost_usd"] is not None:
        margin = "-" if eco["margin"] is None else f"{eco['margin']:.1%}"
        per_m = eco["cost_per_million_output_tokens_usd"]
        per_m_text = "-" if per_m is None else f"${per_m:.3f}"
        lines.append(
            f"economics  {eco['gpu_hours']:.2f} GPU-h, cost ${eco['cost_usd']:.2f}, revenue "
            f"${eco['revenue_usd']:.2f}, margin {margin}, {per_m_text} per 1M output tokens"
        )
    return "\n".join(lines)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from sim.compare_cli import add_compare

    add_compare(sub)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_run,
    _add_compare,
    add_report,
    perf_cli.add,
    add_sweep,
    add_plan,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim", description="Discrete-event simulator of LLM inference serving clusters."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sim`` and ``python -m sim``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
