"""``sim validate-e2e``: replay a deployment's measured requests through a scenario and compare.

``python -m sim validate-e2e --scenario S.toml --measured REQUESTS.csv --out DIR`` replaces the
scenario's workload by the measured requests (their arrival times and lengths, as a plain trace:
``arrival = "trace"``), runs it until every request is done (no warm-up: every measured request
counts), saves the run in ``DIR/run/`` and writes ``DIR/e2e.json`` and ``DIR/e2e.md``: TTFT,
TPOT and E2E mean/p50/p90/p99, measured and predicted, and their relative errors, on the requests
the measurement completed (``analysis/e2e.py``). With ``--seeds K`` it runs seeds ``sim.seed`` to
``sim.seed + K - 1`` (for a scenario whose step times are random, ``perf.noise = true``) and
reports, per statistic, the mean over the seeds, with their lowest and highest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def add_validate_e2e(sub: argparse._SubParsersAction) -> None:
    """Register ``validate-e2e``."""
    from sim.cli import add_set_option

    p = sub.add_parser(
        "validate-e2e", help="replay measured requests through a scenario; compare latencies"
    )
    p.add_argument("--scenario", required=True, help="scenario TOML of the deployment")
    p.add_argument(
        "--measured",
        required=True,
        help="measured requests CSV (request_id,arrival_s,prompt_tokens,output_tokens,"
        "first_token_s,finish_s)",
    )
    p.add_argument("--out", required=True, help="folder for e2e.json, e2e.md and the run(s)")
    p.add_argument("--seeds", type=int, default=1, help="runs with seeds sim.seed + 0..K-1")
    add_set_option(p)
    p.set_defaults(func=_cmd_validate_e2e)


def _cmd_validate_e2e(args: argparse.Namespace) -> int:
    from analysis.e2e import compare, format_comparison, read_measured
    from sim.engine import run
    from sim.errors import UserError

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: must be at least 1")
    measured = read_measured(args.measured)
    scenario = replay_scenario(args.scenario, args.measured, args.overrides)
    out = Path(args.out)
    results = []
    for k in range(args.seeds):
        seed = scenario.sim.seed + k
        folder = out / "run" if args.seeds == 1 else out / "runs" / f"seed-{k}"
        run(scenario, seed=seed).save(folder)
        results.append(compare(measured, pd.read_parquet(folder / "requests.parquet")))
    report = results[0] if args.seeds == 1 else _over_seeds(results)
    report = {
        "scenario": str(args.scenario),
        "measured": str(args.measured),
        "seeds": [scenario.sim.seed + k for k in range(args.seeds)],
        **report,
    }
    table = format_comparison(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "e2e.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"e2e.json and e2e.md in {out}/")
    return 0


def replay_scenario(path: str, measured: str, overrides: list[str]):
    """The scenario at `path` with its workload replaced by the measured requests' arrivals."""
    from sim.scenario import read_scenario_file, scenario_from_dict

    data = read_scenario_file(path)
    data["workload"] = {"arrival": "trace", "trace": str(Path(measured).resolve())}
    sim = {k: v for k, v in data.get("sim", {}).items() if k in ("seed", "step_compression")}
    data["sim"] = {**sim, "warmup_s": 0.0, "drain": True}
    return scenario_from_dict(data, source=str(path), overrides=overrides)


def _over_seeds(results: list[dict]) -> dict:
    """Per statistic, the mean predicted value over seeds (and their range) and its error."""
    first = results[0]
    metrics = {}
    for name, stats in first["metrics"].items():
        metrics[name] = {}
        for stat, entry in stats.items():
            values = [r["metrics"][name][stat]["predicted_s"] for r in results]
            measured = entry["measured_s"]
            if any(v is None for v in values):
                metrics[name][stat] = {**entry, "predicted_s": None, "error": None}
                continue
            mean = float(np.mean(values))
            metrics[name][stat] = {
                "measured_s": measured,
                "predicted_s": mean,
                "predicted_min_s": float(np.min(values)),
                "predicted_max_s": float(np.max(values)),
                "error": None if not measured else (mean - measured) / measured,
            }
    completed = min(r["requests"]["completed_both"] for r in results)
    return {"requests": {**first["requests"], "completed_both": completed}, "metrics": metrics}
