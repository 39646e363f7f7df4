"""Curves over run directories: margin and latency against load, cost against the batch limit,
a run's utilization timeline and its latency CDFs. Each curve is a pandas DataFrame (the CSV
written beside its figure); every number comes from the runs' traces and resolved scenarios.

Runs are grouped into series by what identifies them (scenario name, GPU, tp, replicas, pricing,
offered load, batch limit) except the swept variable of the curve; a series is labelled with
the scenario name and whichever of those fields differ between runs of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.metrics import latencies
from analysis.rundata import RunData, load_run
from analysis.summary import summarize
from analysis.utilization import fleet_timeline, replica_timeline

IDENTITY = ("scenario", "gpu", "tp", "replicas", "pricing", "offered_rate_rps", "max_num_seqs")
CDF_LEVELS = np.linspace(0.0, 1.0, 201)  # quantile levels stored for each latency CDF


@dataclass
class Run:
    """One run directory: its traces and its summary (recomputed from the traces)."""

    label: str
    run_dir: Path
    data: RunData
    summary: dict


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Load run directories (no simulation); labels are the directory names, made unique."""
    runs, seen = [], set()
    for d in run_dirs:
        path = Path(d)
        label = path.name if path.name not in seen else str(path)
        seen.add(label)
        data = load_run(path)
        runs.append(Run(label, path, data, summarize(data)))
    return runs


def offered_rate_rps(data: RunData) -> float:
    """The scenario's mean arrival rate; for traces and schedules, arrivals / arrival window."""
    wl = data.scenario.workload
    if wl.rate is not None:
        return float(wl.rate)
    window = data.scenario.sim.duration_s or float(data.requests["arrival_s"].max())
    return len(data.requests) / window if window > 0 else float("nan")


def _slo(data: RunData, field: str) -> float:
    """The tightest SLO of the run's classes (NaN when none sets one)."""
    values = [getattr(c, field) for c in data.scenario.workload.classes]
    values = [v for v in values if v is not None]
    return min(values) if values else float("nan")


def fleet_identity(data: RunData) -> dict[str, object]:
    """gpu, tp, replicas and max_num_seqs of a run's fleet; with several pools, each pool's
    value joined by '+' where they differ (replicas: the fleet's total)."""
    pools = data.spec.pools

    def joined(values: list) -> object:
        return values[0] if len(set(values)) == 1 else "+".join(map(str, values))

    return {
        "gpu": joined([p.gpu for p in pools]),
        "tp": joined([p.tp for p in pools]),
        "replicas": data.spec.num_replicas,
        "max_num_seqs": joined([getattr(p.batcher, "max_num_seqs", None) for p in pools]),
    }


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what identifies it and its headline numbers (seconds, USD)."""
    rows = []
    for run in runs:
        s, sc = run.summary, run.data.scenario
        eco, util, lat = s["economics"], s["utilization"], s["latency_s"]
        row = {
            "run": run.label,
            "scenario": sc.name,
            **fleet_identity(run.data),
            "pricing": eco["pricing"],
            "offered_rate_rps": offered_rate_rps(run.data),
            "completed": s["requests"]["completed"],
            "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
            "gpu_busy_fraction": util["gpu_busy_fraction"],
            "mfu": util["mfu"],
            "kv_occupancy_mean": util["kv_occupancy_mean"],
            "slo_ttft_s": _slo(run.data, "slo_ttft_s"),
            "slo_tpot_s": _slo(run.data, "slo_tpot_s"),
        }
        for metric in ("ttft", "tpot", "e2e"):
            for p in ("p50", "p90", "p99"):
                row[f"{metric}_{p}_s"] = lat[metric][p]
        for key in (
            "gpu_hours",
            "cost_usd",
            "revenue_usd",
            "margin",
            "profit_usd_per_hour",
            "cost_per_million_output_tokens_usd",
            "revenue_per_gpu_hour_usd",
            "break_even_usd_per_million_output_tokens",
        ):
            row[key] = eco[key]
        rows.append(row)
    return pd.DataFrame(rows)


def with_series(table: pd.DataFrame, swept: tuple[str, ...]) -> pd.DataFrame:
    """`table` with a `series` label: the scenario name, plus the identifying fields that differ
    between runs of the same scenario name."""
    fixed = [c for c in IDENTITY if c not in swept and c != "scenario"]
    by_name = table.groupby("scenario")
    varying = [c for c in fixed if by_name[c].nunique(dropna=False).max() > 1]

    def label(row: pd.Series) -> str:
        extra = ", ".join(f"{c}={row[c]:g}" if _is_number(row[c]) else f"{row[c]}" for c in varying)
        return f"{row['scenario']} ({extra})" if extra else str(row["scenario"])

    out = table.copy()
    out.insert(0, "series", [label(r) for _, r in table.iterrows()])
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def _curve(table: pd.DataFrame, x: str, ys: list[str], swept: tuple[str, ...]) -> pd.DataFrame:
    """Columns series, run, x and ys of every run, sorted by series then x."""
    curve = with_series(table, swept)[["series", "run", x, *ys]]
    return curve.sort_values(["series", x], kind="stable").reset_index(drop=True)


def margin_vs_load(table: pd.DataFrame) -> pd.DataFrame:
    """Gross margin and profit per hour against the offered load (requests/s)."""
    ys = ["margin", "profit_usd_per_hour", "gpu_busy_fraction"]
    return _curve(table, "offered_rate_rps", ys, ("offered_rate_rps",))


def margin_vs_utilization(table: pd.DataFrame) -> pd.DataFrame:
    """Gross margin against the fleet's busy fraction and MFU (runs differing in load)."""
    ys = ["mfu", "margin", "offered_rate_rps"]
    return _curve(table, "gpu_busy_fraction", ys, ("offered_rate_rps",))


def cost_vs_batch_limit(table: pd.DataFrame) -> pd.DataFrame:
    """Cost per million output tokens against the batcher's max_num_seqs."""
    ys = ["cost_per_million_output_tokens_usd", "output_tokens_per_s"]
    return _curve(table, "max_num_seqs", ys, ("max_num_seqs",))


def latency_vs_load(table: pd.DataFrame) -> pd.DataFrame:
    """TTFT and TPOT percentiles (s) and the classes' tightest SLOs against the offered load."""
    ys = [f"{m}_{p}_s" for m in ("ttft", "tpot") for p in ("p50", "p90", "p99")]
    return _curve(
        table, "offered_rate_rps", [*ys, "slo_ttft_s", "slo_tpot_s"], ("offered_rate_rps",)
    )


def utilization_timeline(run: Run, window_s: float | None = None) -> pd.DataFrame:
    """The fleet's utilization per time window (columns of :func:`fleet_timeline`)."""
    return fleet_timeline(replica_timeline(run.data, window_s))


def pool_utilization_timeline(run: Run, window_s: float | None = None) -> pd.DataFrame:
    """Each pool's utilization per time window: a `pool` column and those of
    :func:`fleet_timeline`, over the pool's replicas."""
    per_replica = replica_timeline(run.data, window_s)
    frames = [
        fleet_timeline(per_replica[per_replica["pool"] == p.name]).assign(pool=p.name)
        for p in run.data.spec.pools
    ]
    return pd.concat(frames, ignore_index=True)


def pool_table(runs: list[Run]) -> pd.DataFrame:
    """One row per pool of each run: what it is, its requests, throughput, utilization, cost,
    revenue and margin (the `pools` block of summary.json)."""
    rows = []
    for run in runs:
        for name, p in run.summary["pools"].items():
            rows.append(
                {
                    "run": run.label,
                    "pool": name,
                    "gpu": p["gpu"],
                    "tp": p["tp"],
                    "replicas": p["replicas"],
                    "model": p["model"],
                    "completed": p["requests"]["completed"],
                    "requests_per_s": p["throughput"]["requests_per_s"],
                    "output_tokens_per_s": p["throughput"]["output_tokens_per_s"],
                    "gpu_busy_fraction": p["utilization"]["gpu_busy_fraction"],
                    "kv_occupancy_mean": p["utilization"]["kv_occupancy_mean"],
                    "gpu_hours": p["gpu_hours"],
                    "cost_usd": p["cost_usd"],
                    "revenue_usd": p["revenue_usd"],
                    "margin": p["margin"],
                }
            )
    return pd.DataFrame(rows)


def latency_cdfs(runs: list[Run]) -> pd.DataFrame:
    """Per run and metric (ttft, tpot, e2e of measured completed requests): the latency in
    seconds at each quantile level of CDF_LEVELS."""
    frames = []
    for run in runs:
        lat = latencies(run.data.measured)
        for metric in ("ttft", "tpot", "e2e"):
            values = lat[metric].dropna().to_numpy()
            if values.size == 0:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "run": run.label,
                        "metric": metric,
                        "cdf": CDF_LEVELS,
                        "latency_s": np.quantile(values, CDF_LEVELS),
                    }
                )
            )
    columns = ["run", "metric", "cdf", "latency_s"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def swept_values(curve: pd.DataFrame, x: str) -> int:
    """The most distinct x values any one series of `curve` has (a line needs two)."""
    if curve.empty:
        return 0
    return int(curve.groupby("series")[x].nunique().max())
