"""Curves over run directories: margin and cost per million tokens against capacity utilization
and load, latency against load, cost against the batch limit, a run's utilization timeline and
its latency CDFs. Each curve is a pandas DataFrame (the CSV written beside its figure); every
number comes from the runs' traces and resolved scenarios.

Runs are grouped into series by every scenario field that differs between them (GPU, tp, dtypes,
prices, ...) except the swept variable of the curve and the seed; a series is labelled with the
scenario name and the values of those fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.capacity import pool_capacities
from analysis.economics import request_revenue, span_cost
from analysis.fleet import PROVISIONED
from analysis.metrics import latencies
from analysis.rundata import RunData, load_run
from analysis.summary import summarize
from analysis.utilization import (
    default_window_s,
    fleet_timeline,
    replica_timeline,
    replicas_by_state,
    window_edges,
)
from analysis.window import Window, measurement_window
from sim.fleet_config import COLOCATED, DECODE, PREFILL

IDENTITY = ("scenario", "gpu", "tp", "replicas", "pricing", "offered_rate_rps", "max_num_seqs")
NOT_IDENTITY = ("base_dir", "sim.seed")  # differ between copies and seeds of one series
LOAD_FIELDS = ("workload.rate", "workload.load_scale", "workload.schedule")  # what sets the load
BATCH_LIMIT_FIELDS = ("batcher.max_num_seqs",)
FIELD_PREFIX = "field:"  # run-table columns holding the scenario fields that differ between runs
CDF_LEVELS = np.linspace(0.0, 1.0, 201)  # quantile levels stored for each latency CDF


@dataclass
class Run:
    """One run directory: its traces and its summary (recomputed from the traces)."""

    label: str
    run_dir: Path
    data: RunData
    summary: dict


def load_runs(run_dirs: list[str | Path], target_margin: float = 0.0) -> list[Run]:
    """Load run directories (no simulation); each is labelled by the shortest tail of its path
    that tells it apart from the others."""
    paths = [Path(d) for d in run_dirs]
    runs = []
    for label, path in zip(unique_labels(paths), paths, strict=True):
        data = load_run(path)
        runs.append(Run(label, path, data, summarize(data, target_margin)))
    return runs


def unique_labels(paths: list[Path]) -> list[str]:
    """For each path the fewest trailing parts that no other path ends with."""
    parts = [p.resolve().parts for p in paths]
    labels = []
    for mine in parts:
        for n in range(1, len(mine) + 1):
            tail = mine[-n:]
            if sum(other[-n:] == tail for other in parts) == 1 or n == len(mine):
                labels.append("/".join(tail))
                break
    return labels


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
    value joined by '+' where they differ (replicas: the fleet's total; with prefill and decode
    pools each pool's count with its role's letter, e.g. 11P+3D)."""
    pools = data.spec.pools

    def joined(values: list) -> object:
        return values[0] if len(set(values)) == 1 else "+".join(map(str, values))

    letter = {PREFILL: "P", DECODE: "D", COLOCATED: ""}
    split = "+".join(f"{p.replicas}{letter[p.role]}" for p in pools)
    return {
        "gpu": joined([p.gpu for p in pools]),
        "tp": joined([p.tp for p in pools]),
        "replicas": split if data.spec.disaggregated else data.spec.num_replicas,
        "max_num_seqs": joined([getattr(p.batcher, "max_num_seqs", None) for p in pools]),
    }


def run_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what identifies it, the scenario fields that differ between the runs
    (columns ``field:<dotted name>``) and its headline numbers (seconds, USD)."""
    fields = _differing_fields(runs)
    rows = []
    for run, differing in zip(runs, fields, strict=True):
        s, sc = run.summary, run.data.scenario
        eco, util, lat = s["economics"], s["utilization"], s["latency_s"]
        row = {
            "run": run.label,
            "scenario": sc.name,
            **fleet_identity(run.data),
            "pricing": eco["pricing"],
            "offered_rate_rps": offered_rate_rps(run.data),
            **{f"{FIELD_PREFIX}{k}": v for k, v in differing.items()},
            "completed": s["requests"]["completed"],
            "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
            "capacity_utilization": util.get("capacity_utilization"),
            "nonidle_fraction": util.get("nonidle_fraction"),
            "mfu_bf16_peak": util.get("mfu_bf16_peak"),
            "kv_occupancy_mean": util.get("kv_occupancy_mean"),
            "saturated": s["saturation"]["saturated"],
            "slo_ttft_s": _slo(run.data, "slo_ttft_s"),
            "slo_tpot_s": _slo(run.data, "slo_tpot_s"),
        }
        for metric in ("ttft", "tpot", "e2e"):
            for p in ("p50", "p90", "p99"):
                row[f"{metric}_{p}_s"] = lat[metric][p]
        row["slo_missed"] = _slo_missed(row)
        for key in MONEY_COLUMNS:
            row[key] = eco[key]
        rows.append(row)
    return pd.DataFrame(rows)


MONEY_COLUMNS = (
    "gpu_hours",
    "cost_usd",
    "revenue_usd",
    "margin",
    "profit_usd_per_hour",
    "cost_per_million_input_tokens_usd",
    "cost_per_million_output_tokens_usd",
    "cost_per_million_tokens_usd",
    "revenue_per_gpu_hour_usd",
    "break_even_price_multiplier",
    "price_cut_headroom",
)


def _slo_missed(row: dict) -> bool:
    """Whether the run's TTFT or TPOT p99 exceeds the tightest SLO of its classes."""
    missed = [
        row[f"{m}_p99_s"] is not None and row[f"{m}_p99_s"] > row[f"slo_{m}_s"]
        for m in ("ttft", "tpot")
    ]
    return any(missed)


def _differing_fields(runs: list[Run]) -> list[dict[str, object]]:
    """Per run, the flattened scenario fields whose values are not the same in every run."""
    flat = []
    for run in runs:
        dump = run.data.scenario.model_dump(mode="json")
        fields = pd.json_normalize(dump, sep=".").iloc[0].to_dict()
        flat.append({k: _scalar(v) for k, v in fields.items() if k not in NOT_IDENTITY})
    keys = list(dict.fromkeys(k for f in flat for k in f))
    differing = [k for k in keys if len({f.get(k) for f in flat}) > 1]
    return [{k: f.get(k) for k in differing} for f in flat]


def _scalar(value: object) -> object:
    """Lists (classes, schedules) as JSON text, so that they compare and group."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def with_series(table: pd.DataFrame, swept: tuple[str, ...]) -> pd.DataFrame:
    """`table` with a `series` label: the scenario name, plus the values of the scenario fields
    that differ between its runs, except the `swept` fields (dotted names)."""
    fixed = [
        c
        for c in table.columns
        if c.startswith(FIELD_PREFIX) and c.removeprefix(FIELD_PREFIX) not in swept
    ]
    fixed = [c for c in fixed if c != f"{FIELD_PREFIX}name"]
    by_name = table.groupby("scenario")
    varying = [c for c in fixed if by_name[c].nunique(dropna=False).max() > 1]
    short = {c: c.rsplit(".", 1)[-1] for c in varying}
    if len(set(short.values())) < len(short):  # two fields of one name: keep their paths
        short = {c: c.removeprefix(FIELD_PREFIX) for c in varying}

    def label(row: pd.Series) -> str:
        extra = ", ".join(
            f"{short[c]}={row[c]:g}" if _is_number(row[c]) else f"{row[c]}" for c in varying
        )
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
    ys = ["margin", "profit_usd_per_hour", "capacity_utilization"]
    return _curve(table, "offered_rate_rps", ys, LOAD_FIELDS)


def margin_vs_utilization(table: pd.DataFrame) -> pd.DataFrame:
    """Gross margin and cost per million input, output and all tokens against capacity
    utilization (runs differing in load), with whether each run missed its SLOs."""
    ys = [
        "margin",
        "cost_per_million_input_tokens_usd",
        "cost_per_million_output_tokens_usd",
        "cost_per_million_tokens_usd",
        "slo_missed",
        "saturated",
        "offered_rate_rps",
    ]
    return _curve(table, "capacity_utilization", ys, LOAD_FIELDS)


def cost_vs_batch_limit(table: pd.DataFrame) -> pd.DataFrame:
    """Cost per million output tokens against the batcher's max_num_seqs."""
    ys = ["cost_per_million_output_tokens_usd", "output_tokens_per_s"]
    return _curve(table, "max_num_seqs", ys, BATCH_LIMIT_FIELDS)


def latency_vs_load(table: pd.DataFrame) -> pd.DataFrame:
    """TTFT and TPOT percentiles (s) and the classes' tightest SLOs against the offered load."""
    ys = [f"{m}_{p}_s" for m in ("ttft", "tpot") for p in ("p50", "p90", "p99")]
    return _curve(table, "offered_rate_rps", [*ys, "slo_ttft_s", "slo_tpot_s"], LOAD_FIELDS)


def replica_capacities(run: Run) -> dict[str, float]:
    """One replica's capacity (requests/s) of each pool, for the run's mix."""
    return pool_capacities(run.data, measurement_window(run.data))


def utilization_timeline(run: Run, window_s: float | None = None) -> pd.DataFrame:
    """The fleet's utilization per time window (columns of :func:`fleet_timeline`)."""
    return fleet_timeline(replica_timeline(run.data, replica_capacities(run), window_s))


def fleet_over_time(run: Run, window_s: float | None = None) -> pd.DataFrame:
    """Per time window (an hour for runs of two hours or more): offered load (arrivals per
    second), mean replicas in each provisioned state (summed over pools), the fleet's capacity
    utilization, and the revenue of the requests completed in it, the cost of the GPU time
    provisioned in it (USD) and their margin (NaN without [economics])."""
    data = run.data
    if window_s is None:
        window_s = 3600.0 if data.simulated_s >= 7200.0 else default_window_s(data.simulated_s)
    edges = window_edges(data.simulated_s, window_s)
    frame = (
        replicas_by_state(data, edges)
        .groupby(["window_start_s", "window_end_s"], sort=True)[list(PROVISIONED)]
        .sum()
        .reset_index()
    )
    arrivals = np.histogram(data.requests["arrival_s"].to_numpy(), edges)[0]
    frame.insert(2, "offered_rps", arrivals / np.diff(edges))
    utilization = fleet_timeline(replica_timeline(data, replica_capacities(run), window_s))
    frame["capacity_utilization"] = utilization["capacity_utilization"].to_numpy()
    frame["revenue_usd"], frame["cost_usd"] = _money_per_window(data, edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["margin"] = (frame["revenue_usd"] - frame["cost_usd"]) / frame["revenue_usd"]
    return frame


def _money_per_window(data: RunData, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Revenue of the requests completed in each window and cost of each window (USD; NaN
    without [economics])."""
    if data.scenario.economics is None:
        return np.full(len(edges) - 1, np.nan), np.full(len(edges) - 1, np.nan)
    req = data.requests
    done = req[req["status"] == "completed"]
    net = request_revenue(data, done)["net_usd"].to_numpy()
    revenue = np.histogram(done["finish_s"].to_numpy(), edges, weights=net)[0]
    cost = [
        span_cost(data, Window(a, b)).total_usd for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return revenue, np.array(cost)


def pool_utilization_timeline(run: Run, window_s: float | None = None) -> pd.DataFrame:
    """Each pool's utilization per time window: a `pool` column and those of
    :func:`fleet_timeline`, over the pool's replicas."""
    per_replica = replica_timeline(run.data, replica_capacities(run), window_s)
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
                    "role": p["role"],
                    "completed": p["requests"]["completed"],
                    "requests_per_s": p["throughput"]["requests_per_s"],
                    "output_tokens_per_s": p["throughput"]["output_tokens_per_s"],
                    "capacity_utilization": p["utilization"]["capacity_utilization"],
                    "nonidle_fraction": p["utilization"]["nonidle_fraction"],
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
