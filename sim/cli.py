"""The command line: ``sim run``; other commands register in `COMMANDS`.

Bad input ends with the UserError's message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sim import perf_cli
from sim.compare_cli import add_compare
from sim.e2e_cli import add_validate_e2e
from sim.errors import UserError
from sim.report_cli import add_report
from sim.study.commands import add_plan, add_sweep

if TYPE_CHECKING:
    from sim.runspec import RunSpec


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate one scenario and write its traces and summary")
    p.add_argument(
        "scenario", help="scenario TOML file, or a run's scenario.json to run it again as it was"
    )
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
    from analysis.rundata import RunData
    from analysis.summary import write_summary
    from sim.engine import run

    spec = load_run_spec(args.scenario, args.overrides)
    result = run(spec, seed=args.seed, progress=True)
    out = Path(args.out or Path("runs") / spec.name)
    result.save(out)
    summary = write_summary(out, RunData.from_result(result))
    print(format_summary(summary))
    print(f"traces and summary in {out}/")
    return 0


def load_run_spec(path: str, overrides: list[str]) -> RunSpec:
    """A scenario file resolved (every error raised now), or a saved run's scenario.json.

    A saved run carries its resolved pools (calibration loaded, catalogue entries, prices) and
    trace files, so it runs again as it was; ``--set`` does not apply to it.
    """
    from sim.resolve import resolve
    from sim.runspec import read_run_spec
    from sim.scenario import load_scenario

    if Path(path).suffix == ".json":
        if overrides:
            raise UserError(
                f"{path}: --set applies to scenario TOML files; a saved run's scenario.json "
                f"runs again as it was"
            )
        return read_run_spec(path)
    return resolve(load_scenario(path, overrides))


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
    if "kv_transfer" in s:
        lines.append(_kv_transfer_line(s["kv_transfer"]))
    if len(s["pools"]) > 1:
        lines += [_pool_line(name, p) for name, p in s["pools"].items()]
    return "\n".join(lines)


def _kv_transfer_line(kv: dict) -> str:
    """The KV transfers of a run with prefill and decode pools."""
    took, wait = kv["transfer_s"], kv["wait_s"]
    if not kv["transfers"]:
        return "kv transfer  none"
    return (
        f"kv transfer  {kv['transfers']} transfers, {kv['bytes_moved'] / 1e9:.1f} GB, "
        f"{took['mean'] * 1000:.1f} ms mean, {took['p99'] * 1000:.1f} ms p99; waited "
        f"{wait['mean'] * 1000:.1f} ms mean, {wait['p99'] * 1000:.1f} ms p99; links busy "
        f"{kv['link_busy_fraction']:.1%}"
    )


def _pool_line(name: str, p: dict) -> str:
    """One pool of a summary: what it is, its load, utilization and money."""
    money = ""
    if p["cost_usd"] is not None:
        margin = "-" if p["margin"] is None else f"{p['margin']:.1%}"
        money = f", cost ${p['cost_usd']:.2f}, revenue ${p['revenue_usd']:.2f}, margin {margin}"
    role = "" if p["role"] == "colocated" else f", {p['role']}"
    return (
        f"pool {name}  {p['replicas']} x {p['gpu']} tp {p['tp']} ({p['model']}{role}): "
        f"{p['requests']['completed']} completed, {p['throughput']['requests_per_s']:.2f} req/s, "
        f"GPU busy {p['utilization']['gpu_busy_fraction']:.1%}{money}"
    )


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check the engine against queueing theory; write validation.json/.md"
    )
    p.add_argument("--out", required=True, help="folder for validation.json, .md and figure")
    p.add_argument(
        "--quick", action="store_true", help="two loads, fewer requests (about a minute)"
    )
    p.add_argument("--profile", choices=("full", "ci", "quick"), help="full (default), ci or quick")
    p.add_argument("--workers", type=int, help="worker processes (default: all CPUs)")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from sim.validation.report import write_report
    from sim.validation.runner import PROFILES, run_validation

    name = args.profile or ("quick" if args.quick else "full")
    profile = PROFILES[name]
    entries = run_validation(profile, args.workers)
    command = "python -m sim validate" + (f" --profile {name}" if name != "full" else "")
    write_report(entries, profile, Path(args.out), f"{command} --out {args.out}")
    failed = [e for e in entries if not e["passed"]]
    print(f"{len(entries) - len(failed)} of {len(entries)} checks pass; report in {args.out}/")
    for e in failed:
        print(
            f"FAILED {e['case']} rho={e['rho']} {e['metric']} {e['relation']} theory "
            f"{e['theory']:.5g}: simulated {e['simulated']:.5g} [{e['ci_low']:.5g}, "
            f"{e['ci_high']:.5g}]"
        )
    return 1 if failed else 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check the invariants of a run directory")
    p.add_argument("run_dir", help="a directory written by `sim run`")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from analysis.invariants import check_run
    from analysis.rundata import load_run

    results = check_run(load_run(args.run_dir))
    for inv in results:
        verdict = "ok" if inv.passed else f"FAILED {inv.violations}x: {inv.example}"
        print(f"{inv.name:<28} {verdict}")
    return 0 if all(inv.passed for inv in results) else 1


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_run,
    add_compare,
    add_report,
    perf_cli.add,
    add_sweep,
    add_plan,
    _add_validate,
    add_validate_e2e,
    _add_check,
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
