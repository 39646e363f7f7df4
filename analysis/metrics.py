"""Latency, throughput and SLOs, computed from the trace tables alone (utilization:
utilization.py). Rates are per second of the measurement window (analysis.window)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.rundata import RunData
from analysis.window import Window, completed_in, measurement_window
from sim.request import REJECTION_REASONS
from sim.scenario import Scenario

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}
TRACE_CLASS = "trace"  # class name of replayed requests when the scenario defines no classes


def distribution(values: pd.Series | np.ndarray) -> dict[str, float | None]:
    """Mean and p50/p90/p99 of finite values (None for all when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, **{k: None for k in PERCENTILES}}
    stats = {"mean": float(v.mean())}
    stats.update({k: float(np.percentile(v, q)) for k, q in PERCENTILES.items()})
    return stats


def latencies(requests: pd.DataFrame) -> dict[str, pd.Series]:
    """Per-request latencies in seconds: ttft, tpot, e2e (completed) and queue (scheduled)."""
    return {
        **completed_latencies(requests),
        "queue": (requests["first_scheduled_s"] - requests["arrival_s"]).dropna(),
    }


def completed_latencies(requests: pd.DataFrame) -> dict[str, pd.Series]:
    """ttft, tpot and e2e of the completed requests, in seconds (tpot: of those with 2+ tokens).

    Needs the columns status, arrival_s, first_token_s, finish_s and output_tokens.
    """
    done = requests[requests["status"] == "completed"]
    multi = done[done["output_tokens"] > 1]
    return {
        "ttft": done["first_token_s"] - done["arrival_s"],
        "tpot": (multi["finish_s"] - multi["first_token_s"]) / (multi["output_tokens"] - 1),
        "e2e": done["finish_s"] - done["arrival_s"],
    }


def request_counts(requests: pd.DataFrame) -> dict[str, int]:
    """arrived, completed, rejected, in_flight and total preemptions."""
    status = requests["status"].value_counts()
    return {
        "arrived": int(len(requests)),
        "completed": int(status.get("completed", 0)),
        "rejected": int(status.get("rejected", 0)),
        "in_flight": int(status.get("in_flight", 0)),
        "preemptions": int(requests["preemptions"].sum()),
    }


def rejected_by_reason(requests: pd.DataFrame, rejections: pd.DataFrame) -> dict[str, int]:
    """How many of the rejected `requests` each reason refused: every key of
    ``sim.request.REJECTION_REASONS`` (0 when none), and "unrecorded" for rejections of a run
    written before reasons were recorded."""
    rejected = requests.loc[requests["status"] == "rejected", "request_id"]
    reasons = rejections.set_index("request_id")["reason"].reindex(rejected.to_numpy())
    counts = {reason: 0 for reason in REJECTION_REASONS}
    for reason, n in reasons.fillna("unrecorded").value_counts().items():
        counts[str(reason)] = int(n)
    return counts


def throughput(
    data: RunData, window: Window | None = None, requests: pd.DataFrame | None = None
) -> dict[str, float | int]:
    """Requests completed inside the window (default: the measurement window), whenever they
    arrived, and their prompt and output tokens, per second of the window: the work the fleet
    served, never more than it can. `requests`: a subset (one pool's, ...); default all."""
    window = window or measurement_window(data)
    done = completed_in(data, window)
    if requests is not None:
        done = done[done.index.isin(requests.index)]
    seconds = window.duration_s
    if seconds <= 0:
        return {
            "completed": 0,
            "requests_per_s": 0.0,
            "input_tokens_per_s": 0.0,
            "output_tokens_per_s": 0.0,
        }
    return {
        "completed": int(len(done)),
        "requests_per_s": len(done) / seconds,
        "input_tokens_per_s": float(done["prompt_tokens"].sum()) / seconds,
        "output_tokens_per_s": float(done["output_tokens"].sum()) / seconds,
    }


def class_slos(scenario: Scenario) -> pd.DataFrame:
    """Per class name: slo_ttft_s and slo_tpot_s (inf where the class sets none); replayed
    requests without classes are the class 'trace', without SLOs."""
    rows = {c.name: (c.slo_ttft_s, c.slo_tpot_s) for c in scenario.workload.classes}
    rows.setdefault(TRACE_CLASS, (None, None))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["slo_ttft_s", "slo_tpot_s"])
    return table.astype(np.float64).fillna(np.inf)


def slo_missed(done: pd.DataFrame, scenario: Scenario) -> pd.Series:
    """Completed requests whose TTFT or TPOT exceeds their class SLO (no SLO never misses)."""
    slos = class_slos(scenario).loc[done["class"]].set_axis(done.index)
    ttft = done["first_token_s"] - done["arrival_s"]
    steps = done["output_tokens"] - 1
    tpot = (done["finish_s"] - done["first_token_s"]) / steps.where(steps > 0)
    return (ttft > slos["slo_ttft_s"]) | (tpot.fillna(0.0) > slos["slo_tpot_s"])


def number_in_system(requests: pd.DataFrame, t0: float, t1: float) -> float:
    """Time-average number of requests inside the fleet (arrived, not finished) over [t0, t1]."""
    return _time_average(requests, "finish_s", t0, t1)


def number_waiting(requests: pd.DataFrame, t0: float, t1: float) -> float:
    """Time-average number of requests waiting to be admitted (arrived, not yet scheduled for
    the first time) over [t0, t1]."""
    return _time_average(requests, "first_scheduled_s", t0, t1)


def _time_average(requests: pd.DataFrame, until: str, t0: float, t1: float) -> float:
    """Time-average number of routed requests between their arrival and `until` (never: inf)."""
    served = requests[requests["status"] != "rejected"]
    start = served["arrival_s"].to_numpy()
    end = served[until].fillna(np.inf).to_numpy()
    overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0.0, None)
    return float(overlap.sum() / (t1 - t0))


def batching(data: RunData, window: Window | None = None) -> dict[str, float | int | None]:
    """Iteration-weighted batch size and tokens per iteration of the intervals that start in the
    window (default: the measurement window), preemptions and prefix hits of the measured
    requests.

    mean_batch_size: sequences per iteration (decoding plus those with a prompt chunk);
    mean_tokens_per_iteration: decode tokens plus prompt tokens per iteration;
    prefix_cache_hit_rate: prompt tokens served from the prefix cache at admission over all
    prompt tokens of the measured admitted requests (None when no pool caches prefixes).
    """
    window = window or measurement_window(data)
    steps = data.steps[window.holds(data.steps["start_s"])]
    iterations = steps["iterations"].sum()
    measured = data.measured
    admitted = measured[measured["first_scheduled_s"].notna()]
    caching = any(getattr(p.batcher, "prefix_caching", False) for p in data.spec.pools)
    prompt_tokens = admitted["prompt_tokens"].sum()
    seqs = (steps["iterations"] * steps["decode_seqs"] + steps["prefill_seqs"]).sum()
    tokens = (steps["iterations"] * steps["decode_seqs"] + steps["prefill_tokens"]).sum()
    return {
        "mean_batch_size": float(seqs / iterations) if iterations else 0.0,
        "mean_tokens_per_iteration": float(tokens / iterations) if iterations else 0.0,
        "preemptions": int(measured["preemptions"].sum()),
        "prefix_cache_hit_rate": float(admitted["cached_prompt_tokens"].sum() / prompt_tokens)
        if caching and prompt_tokens
        else None,
    }
