"""The ``sweep`` and ``plan`` commands (registered in :data:`sim.cli.COMMANDS`).

Heavy imports wait until a command runs, so ``sim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sim.errors import UserError

INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C
SHOWN = (
    ("latency_s.ttft.p99", "ttft p99 s"),
    ("latency_s.tpot.p99", "tpot p99 s"),
    ("throughput.requests_per_s", "req/s"),
    ("utilization.capacity_utilization", "capacity util"),
)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    """Register ``sim sweep``."""
    from sim.cli import add_set_option

    p = sub.add_parser(
        "sweep",
        help="run a grid of overrides x seeds, resumable, with 95%% intervals per point",
        description="Runs land in DIR/points/<point>/seed-<k>/ (seed k = sim.seed + k); "
        "DIR/results.parquet and results.csv hold one row per point. Rerun to resume.",
    )
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="a grid axis: KEY=10,20,40 or KEY=START:STOP:STEP (stop included); repeatable",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per point (default 1)")
    p.add_argument("--out", required=True, help="sweep folder")
    _add_executor_options(p)
    add_set_option(p)
    p.set_defaults(func=_cmd_sweep)


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="local processes (default: CPU count)")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler (tcp://host:8786), or 'local' for a LocalCluster of --workers",
    )


def _executor_args(args: argparse.Namespace) -> dict:
    if args.scheduler and args.scheduler != "local" and args.workers is not None:
        raise UserError(
            "--workers applies to the local pool or --scheduler local, not to a "
            f"remote scheduler ({args.scheduler}); its workers are set there"
        )
    return {"workers": args.workers, "scheduler": args.scheduler}


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sim.study.sweep import sweep

    try:
        result = sweep(
            args.scenario,
            args.grid,
            seeds=args.seeds,
            out=args.out,
            overrides=args.overrides,
            progress=True,
            **_executor_args(args),
        )
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are kept in {args.out}/points; rerun to continue")
        return INTERRUPTED
    print(format_results(result.results, _grid_keys(args.grid)))
    runs = result.runs
    print(
        f"{len(result.results)} points x {args.seeds} seeds: {int(runs['new'].sum())} runs now, "
        f"{int((~runs['new']).sum())} reused, {len(result.failed)} failed"
    )
    for row in result.failed.itertuples():
        print(f"  failed: {row.run_dir}: {row.error} (traceback in {row.run_dir}.error.txt)")
    print(f"results in {Path(args.out) / 'results.csv'} and results.parquet")
    return 1 if len(result.failed) else 0


def _grid_keys(grid: list[str]) -> list[str]:
    return [g.partition("=")[0].strip() for g in grid]


def format_results(results, keys: list[str]) -> str:
    """Grid values, seeds, and a few metrics as ``mean ±half-width`` of their 95% interval."""
    table = results[[*keys, "seeds_complete"]].rename(columns={"seeds_complete": "seeds"})
    for metric, title in SHOWN:
        columns = (results[metric], results[f"{metric}.ci_low"], results[f"{metric}.ci_high"])
        table[title] = [_mean_pm(*values) for values in zip(*columns, strict=True)]
    return table.to_string(index=False)


def _mean_pm(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(high):
        return f"{mean:.4g}"
    return f"{mean:.4g} ±{(high - low) / 2:.2g}"


def add_plan(sub: argparse._SubParsersAction) -> None:
    """Register ``sim plan``."""
    from sim.cli import add_set_option

    p = sub.add_parser(
        "plan",
        help="fewest replicas per GPU type and TP meeting SLOs, or the highest rate a fleet holds",
        description="A point meets an SLO only if the upper end of its 95% interval across "
        "seeds does, and only if its queue does not grow without bound.",
    )
    p.add_argument("scenario", help="scenario TOML file")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--rate", type=float, help="target arrival rate, requests per second")
    goal.add_argument(
        "--max-rate",
        action="store_true",
        help="find the highest rate the scenario's fleet sustains within the SLOs",
    )
    p.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="upper limit, e.g. ttft_p99=1.0 or tpot_p99=0.05 (ttft|tpot|e2e|queue _ "
        "mean|p50|p90|p99); repeatable; needed with --rate; without it --max-rate finds the "
        "highest rate that does not saturate the fleet",
    )
    p.add_argument(
        "--gpu",
        type=_names,
        help="GPU types to compare, e.g. h100,h200,b200 (default: the scenario's fleet.gpu)",
    )
    p.add_argument(
        "--tp",
        type=_ints,
        help="tensor-parallel degrees, e.g. 1,2,4,8 (default: the scenario's fleet.tp)",
    )
    p.add_argument(
        "--mix",
        action="store_true",
        help="--rate: also try fleets of both of the two --gpu types (docs/fleet.md)",
    )
    p.add_argument(
        "--disaggregate",
        action="store_true",
        help="--rate: the cheapest replica counts of the scenario's prefill and decode pools "
        "per --gpu type, beside the colocated fleet (docs/disaggregation.md)",
    )
    p.add_argument("--max-replicas", type=int, default=64, help="search limit (default 64)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3, min 2)")
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="GPU=USD",
        help="USD per GPU-hour of a GPU type (the scenario's [economics] prices its own GPU)",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.02, help="--max-rate: relative precision (0.02)"
    )
    p.add_argument(
        "--out", help="folder for runs and plan.csv (default runs/<scenario>-plan or -max-rate)"
    )
    _add_executor_options(p)
    add_set_option(p)
    p.set_defaults(func=_cmd_plan)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 1,2,4") from None


def _prices(items: list[str]) -> dict[str, float]:
    prices = {}
    for item in items:
        gpu, _, usd = item.partition("=")
        try:
            prices[gpu.strip()] = float(usd)
        except ValueError:
            raise UserError(f"--price {item!r}: expected GPU=USD_PER_GPU_HOUR") from None
    return prices


def _cmd_plan(args: argparse.Namespace) -> int:
    from sim.study.plan import max_rate, plan, stderr_log

    kind = "max-rate" if args.max_rate else "plan"
    out = args.out or str(Path("runs") / f"{Path(args.scenario).stem}-{kind}")
    common = {
        "slos": args.slo,
        "gpus": args.gpu,
        "tps": args.tp,
        "seeds": args.seeds,
        "prices": _prices(args.price),
        "out": out,
        "overrides": args.overrides,
        "log": stderr_log,
        **_executor_args(args),
    }
    try:
        if args.max_rate:
            for flag, given in (("--mix", args.mix), ("--disaggregate", args.disaggregate)):
                if given:
                    raise UserError(
                        f"{flag} plans fleets for a --rate; it does not apply to --max-rate"
                    )
            result = max_rate(args.scenario, tolerance=args.tolerance, **common)
        else:
            result = plan(
                args.scenario,
                args.rate,
                max_replicas=args.max_replicas,
                mix=args.mix,
                disaggregate=args.disaggregate,
                **common,
            )
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are kept in {out}/points; rerun to continue")
        return INTERRUPTED
    print(result.options.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if not (result.options["status"] == "ok").any():
        print("no option meets every SLO; its status says why")
    print(f"options in {Path(out) / 'plan.csv'}; every point tried in evaluations.parquet")
    return 0


def add_study(sub: argparse._SubParsersAction) -> None:
    """Register ``sim study run``."""
    study = sub.add_parser("study", help="run a study of the gallery (docs/gallery.md)")
    verbs = study.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser(
        "run",
        help="run a study's plans and sweeps (resumable), then write its table, figure "
        "(PNG, SVG, PDF) and provenance.json",
    )
    p.add_argument("folder", help="study folder holding study.toml, e.g. studies/hardware")
    p.add_argument("--out", help="results folder (default FOLDER/results); rerun to resume")
    _add_executor_options(p)
    p.set_defaults(func=_cmd_study_run)


def _cmd_study_run(args: argparse.Namespace) -> int:
    import shlex

    from sim.study.gallery import run_study
    from sim.study.plan import stderr_log

    given = []
    for option in ("out", "workers", "scheduler"):
        if getattr(args, option) is not None:
            given += [f"--{option}", str(getattr(args, option))]
    command = shlex.join(["python", "-m", "sim", "study", "run", args.folder, *given])
    try:
        result = run_study(
            args.folder, args.out, command=command, log=stderr_log, **_executor_args(args)
        )
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun to continue")
        return INTERRUPTED
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("wrote " + ", ".join(str(path) for path in result.files))
    return 0
