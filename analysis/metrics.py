"""Latency and throughput, computed from the trace tables alone (utilization: utilization.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.rundata import RunData
from sim.request import REJECTION_REASONS

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}


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


def throughput(data: RunData, measured: pd.DataFrame | None = None) -> dict[str, float]:
    """Completed measured requests and their tokens per second of the measured window.

    measured: a subset of the measured requests (one pool's, ...); default all of them.
    """
    window = data.simulated_s - data.scenario.sim.warmup_s
    measured = data.measured if measured is None else measured
    done = measured[measured["status"] == "completed"]
    if window <= 0:
        return {"requests_per_s": 0.0, "input_tokens_per_s": 0.0, "output_tokens_per_s": 0.0}
    return {
        "requests_per_s": len(done) / window,
        "input_tokens_per_s": float(done["prompt_tokens"].sum()) / window,
        "output_tokens_per_s": float(done["output_tokens"].sum()) / window,
    }


def number_in_system(requests: pd.DataFrame, t0: float, t1: float) -> float:
    """Time-average number of requests inside the fleet (arrived, not finished) over [t0, t1]."""
    served = requests[requests["status"] != "rejected"]
    start = served["arrival_s"].to_numpy()
    end = served["finish_s"].fillna(np.inf).to_numpy()
    overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0.0, None)
    return float(overlap.sum() / (t1 - t0))


def batching(data: RunData) -> dict[str, float | int | None]:
    """Iteration-weighted batch size and tokens per iteration, preemptions, prefix hits.

    mean_batch_size: sequences per iteration (decoding plus those with a prompt chunk);
    mean_tokens_per_iteration: decode tokens plus prompt tokens per iteration;
    prefix_cache_hit_rate: prompt tokens served from the prefix cache at admission over all
    prompt tokens of the measured admitted requests (None when no pool caches prefixes).
    """
    steps = data.steps
    iterations = steps["iterations"].sum()
    measured = data.measured
    admitted = measured[measured["first_scheduled_s"].notna()]
    caching = any(getattr(p.batcher, "prefix_caching", False) for p in data.spec.pools)
    prompt_tokens = admitted["prompt_tokens"].sum()
    return {
        "mean_batch_size": float(
            (steps["iterations"] * steps["decode_seqs"] + steps["prefill_seqs"]).sum() / iterations
        )
        if iterations
        else 0.0,
        "mean_tokens_per_iteration": float(
            (steps["iterations"] * steps["decode_seqs"] + steps["prefill_tokens"]).sum()
            / iterations
        )
        if iterations
        else 0.0,
        "preemptions": int(measured["preemptions"].sum()),
        "prefix_cache_hit_rate": float(admitted["cached_prompt_tokens"].sum() / prompt_tokens)
        if caching and prompt_tokens
        else None,
    }
