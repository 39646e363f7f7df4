"""The command line: ``sim run``; other commands register in `COMMANDS`.

Bad input ends with the UserError's message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sim import perf_cli
from sim.compare_cli import add_compare
from sim.e2e_cli import add_validate_e2e
from sim.errors import SimWarning, UserError
from sim.report_cli import add_report
from sim.request import REJECTION_REASONS
from sim.rundir import check_out_dir, check_run_out, writing_run
from sim.study.commands import add_plan, add_study, add_sweep

if TYPE_CHECKING:
    from sim.runspec import RunSpec


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate one scenario and write its traces and summary")
    p.add_argument(
        "scenario", help="scenario TOML file, or a run's scenario.json to run it again as it was"
    )
    p.add_argument("--out", help="run directory (default: runs/<scenario name>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a run or sweep already in --out (whole: no old file is kept)",
    )
    p.add_argument("--seed", type=int, help="override sim.seed")
    add_target_margin_option(p)
    add_set_option(p)
    p.set_defaults(func=_cmd_run)


def add_target_margin_option(p: argparse.ArgumentParser) -> None:
    """``--target-margin``: the margin the price-cut headroom keeps (a fraction below 1)."""
    p.add_argument(
        "--target-margin",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="gross margin that economics.price_cut_headroom keeps, e.g. 0.3 (default 0)",
    )


def check_target_margin(value: float) -> float:
    """The --target-margin value, or UserError when it is not a fraction below 1."""
    if not value < 1.0:
        raise UserError(f"--target-margin {value}: must be a fraction below 1, e.g. 0.3")
    return value


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

    target_margin = check_target_margin(args.target_margin)
    spec = load_run_spec(args.scenario, args.overrides)
    out = check_run_out(args.out or Path("runs") / spec.name, args.force)
    result = run(spec, seed=args.seed, progress=True)
    with writing_run(out) as tmp:
        result.save(tmp)
        summary = write_summary(tmp, RunData.from_result(result), target_margin)
    print(format_summary(summary))
    warn_if_saturated(summary)
    warn_if_mostly_rejected(summary)
    print(f"traces and summary in {out}/")
    return 0


def warn_if_saturated(summary: dict) -> None:
    """A SimWarning, one line, when the run's fleet was overloaded (its saturation block)."""
    sat = summary["saturation"]
    if not sat["saturated"]:
        return
    load = sat["offered_load"]
    times = "" if load is None else f" ({load:.1f}x its capacity of {sat['capacity_per_s']:.1f})"
    warnings.warn(
        f"saturated: {sat['offered_per_s']:.1f} req/s offered{times}, "
        f"{sat['departures_per_s']:.1f} req/s served; the backlog grew by "
        f"{sat['backlog_growth']:.0f} requests over the measurement window and held "
        f"{sat['backlog_end']} at its end (warm-up arrivals included); latency and margin "
        "describe an overloaded fleet",
        SimWarning,
        stacklevel=2,
    )


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


def warn_if_mostly_rejected(summary: dict) -> None:
    """A SimWarning when more than half of a run's measured requests were rejected."""
    counts = summary["requests"]
    if counts["rejected"] > counts["arrived"] / 2:
        warnings.warn(
            f"{counts['rejected']} of {counts['arrived']} requests were rejected: "
            f"{rejection_text(counts['rejected_by_reason'])}",
            SimWarning,
            stacklevel=2,
        )


def rejection_text(by_reason: dict[str, int]) -> str:
    """'12 longer than the model's context (...), 3 ...' for the reasons that refused any."""
    return ", ".join(
        f"{n} {REJECTION_REASONS.get(reason, 'for an unrecorded reason')}"
        for reason, n in by_reason.items()
        if n
    )


def format_summary(s: dict) -> str:
    """A short human-readable view of a summary dict."""
    r, lat, thr, util, eco, w = (
        s["requests"],
        s["latency_s"],
        s["throughput"],
        s["utilization"],
        s["economics"],
        s["window"],
    )

    def ms(block: dict, key: str) -> str:
        value = block[key]
        return "-" if value is None else f"{value * 1000:.0f}"

    lines = [
        f"{s['scenario']} (seed {s['seed']}): {s['simulated_s']:.1f} s simulated in "
        f"{s['wall_s']:.2f} s wall, {s['events']} events; measured {w['start_s']:.0f}-"
        f"{w['end_s']:.0f} s (warm-up {w['warmup_s']:.0f} s, drain {w['drain_s']:.0f} s after)",
        f"requests   arrived {r['arrived']}  completed {r['completed']}  rejected "
        f"{r['rejected']}  in flight {r['in_flight']}  preemptions {r['preemptions']}",
    ]
    if r["rejected"]:
        lines.append(f"rejected   {rejection_text(r['rejected_by_reason'])}")
    lines.append("latency ms       mean    p50    p90    p99")
    for name in ("ttft", "tpot", "e2e", "queue"):
        b = lat[name]
        lines.append(
            f"  {name:<8} {ms(b, 'mean'):>9} {ms(b, 'p50'):>6} {ms(b, 'p90'):>6} {ms(b, 'p99'):>6}"
        )
    lines.append(
        f"throughput {thr['requests_per_s']:.2f} req/s, {thr['input_tokens_per_s']:.0f} input "
        f"and {thr['output_tokens_per_s']:.0f} output tokens/s"
    )
    lines.append(_utilization_line(util))
    if eco["cost_usd"] is not None:
        lines += _economics_lines(eco)
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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _usd(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def _utilization_line(util: dict) -> str:
    capacity = util["capacity_per_s"]
    of = "" if capacity is None else f" of {capacity:.1f} req/s capacity"
    return (
        f"utilization {_pct(util.get('capacity_utilization'))}{of}; non-idle "
        f"{_pct(util.get('nonidle_fraction'))}, KV cache {_pct(util.get('kv_occupancy_mean'))}"
    )


def _economics_lines(eco: dict) -> list[str]:
    multiplier = eco["break_even_price_multiplier"]
    headroom = eco["price_cut_headroom"]
    target = f" to keep a {eco['target_margin']:.0%} margin" if eco["target_margin"] else ""
    if multiplier is None:
        break_even = "-"
    elif headroom >= 0:
        break_even = f"break-even at {multiplier:.2f}x prices: cut up to {headroom:.0%}{target}"
    else:
        break_even = f"break-even at {multiplier:.2f}x prices: raise them {-headroom:.0%}{target}"
    return [
        f"economics  {eco['gpu_hours']:.2f} GPU-h, cost {_usd(eco['cost_usd'], 2)}, revenue "
        f"{_usd(eco['revenue_usd'], 2)}, margin {_pct(eco['margin'])}; {break_even}",
        f"cost per 1M tokens  input {_usd(eco['cost_per_million_input_tokens_usd'])}, output "
        f"{_usd(eco['cost_per_million_output_tokens_usd'])}, blended "
        f"{_usd(eco['cost_per_million_tokens_usd'])}",
    ]


def _pool_line(name: str, p: dict) -> str:
    """One pool of a summary: what it is, its load, utilization and money."""
    money = ""
    if p["cost_usd"] is not None:
        money = (
            f", cost {_usd(p['cost_usd'], 2)}, revenue {_usd(p['revenue_usd'], 2)}, "
            f"margin {_pct(p['margin'])}"
        )
    util = p["utilization"]
    if p["role"] == "colocated":
        role = ""
        load = (
            f"{_pct(util['capacity_utilization'])} of {util['capacity_per_s']:.1f} req/s capacity"
        )
    else:  # no capacity of one role alone (docs/disaggregation.md)
        role, load = f", {p['role']}", f"non-idle {_pct(util['nonidle_fraction'])}"
    return (
        f"pool {name}  {p['replicas']} x {p['gpu']} tp {p['tp']} ({p['model']}{role}): "
        f"{p['throughput']['completed']} completed, {p['throughput']['requests_per_s']:.2f} req/s, "
        f"{load}{money}"
    )


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check the engine against queueing theory; write validation.json/.md",
        description="Runs the whole engine as classic queues and compares it with closed forms "
        "(docs/validation.md). Profiles, timed on 2 cores: quick (the default: rho = 0.5 and "
        "0.8, 3% precision, 3 to 4 minutes), ci (rho up to 0.9 at 1%, about 25 minutes; "
        "what CI runs) and full (rho up to 0.95 at 1%, about 95 minutes; the published "
        "docs/validation.md).",
    )
    p.add_argument("--out", required=True, help="folder for validation.json, .md and figure")
    p.add_argument(
        "--profile",
        choices=("quick", "ci", "full"),
        default="quick",
        help="quick (default, 3 to 4 minutes), ci (about 25 minutes) or full (about 95 minutes)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default: all CPUs)")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from sim.validation.report import write_report
    from sim.validation.runner import PROFILES, run_validation

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    check_out_dir(args.out, "--out")
    profile = PROFILES[args.profile]
    entries = run_validation(profile, args.workers, progress=True)
    command = f"python -m sim validate --profile {profile.name} --out {args.out}"
    write_report(entries, profile, Path(args.out), command)
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
    add_study,
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
    with warnings.catch_warnings():
        warnings.simplefilter("always", SimWarning)
        warnings.showwarning = _print_warning
        try:
            return int(args.func(args))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A SimWarning as one ``warning:`` line on stderr; other warnings as Python shows them."""
    if issubclass(category, SimWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
