"""The fleet over time, from fleet.parquet: replicas by state, billed GPU time, failures and
background work.

Every row of the fleet trace is one change of one replica's state; a replica stays in a state
until its next row, or the end of the run. A replica is *provisioned* (its GPUs are held and
billed) while provisioning, loading, serving, lent to background work, standing by, draining or
failed (a failed replica's GPUs stay allocated while it is repaired). Reserved and owned pools
are billed for their whole commitment (the most replicas they can hold: autoscale ``max`` or
``replicas``, plus ``spare``) for the whole run, whether provisioned or not. Times in seconds,
GPU time in GPU-hours, money in USD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.rundata import RunData
from analysis.window import Window
from sim.runspec import PoolSpec

SECONDS_PER_HOUR = 3600.0
PROVISIONED = ("provisioning", "loading", "serving", "background", "standby", "draining", "failed")
UP_FOR_SERVING = ("serving", "background", "draining")  # capacity: takes or finishes requests


def state_intervals(data: RunData) -> pd.DataFrame:
    """One row per stretch of a replica in one state: replica, pool, state, start_s, end_s
    (clipped to the run), what started it and what ended it (``end``: the run did). Computed
    once per run; shared, not to be modified."""
    return data.derived("state_intervals", lambda: _state_intervals(data))


def _state_intervals(data: RunData) -> pd.DataFrame:
    assert data.fleet is not None
    f = data.fleet.sort_values("replica", kind="stable")  # rows are in time order
    same = f["replica"].to_numpy()[1:] == f["replica"].to_numpy()[:-1]
    end = np.append(np.where(same, f["time_s"].to_numpy()[1:], np.inf), np.inf)
    ended_by = np.append(np.where(same, f["cause"].to_numpy()[1:], "end"), "end")
    run_end = data.simulated_s
    out = pd.DataFrame(
        {
            "replica": f["replica"].to_numpy(),
            "pool": f["pool"].to_numpy(),
            "state": f["to"].to_numpy(),
            "start_s": np.minimum(f["time_s"].to_numpy(), run_end),
            "end_s": np.minimum(end, run_end),
            "started_by": f["cause"].to_numpy(),
            "ended_by": ended_by,
        }
    )
    return out[out["state"] != "gone"].reset_index(drop=True)


def seconds_by_state(data: RunData, span: Window | None = None) -> pd.DataFrame:
    """Seconds each replica spent in each provisioned state (rows: replica; columns: state),
    inside `span` if given. Computed once per run and span; shared, not to be modified."""
    return data.derived(("seconds_by_state", span), lambda: _seconds_by_state(data, span))


def _seconds_by_state(data: RunData, span: Window | None) -> pd.DataFrame:
    iv = state_intervals(data)
    iv = iv[iv["state"].isin(PROVISIONED)]
    start, end = iv["start_s"].to_numpy(), iv["end_s"].to_numpy()
    seconds = pd.Series(end - start if span is None else span.clip(start, end), index=iv.index)
    table = seconds.groupby([iv["replica"], iv["state"]]).sum().unstack()
    table = table.reindex(index=range(data.num_replicas), columns=list(PROVISIONED))
    return table.fillna(0.0)


def provisioned_s(data: RunData, span: Window | None = None) -> np.ndarray:
    """Seconds each replica was provisioned (index = replica), inside `span` if given."""
    return seconds_by_state(data, span).sum(axis=1).to_numpy()


def commitment(pool: PoolSpec) -> int:
    """Replicas a reserved or owned pool pays for: the most it can hold at once."""
    scale = pool.lifecycle.autoscale
    return (scale.bounds[1] if scale is not None else pool.replicas) + pool.lifecycle.spare


def billed_gpu_hours(data: RunData, pool: PoolSpec, span: Window) -> float:
    """GPU-hours a pool is billed for over `span`: its whole commitment (reserved, owned), or
    every provisioned second of its replicas inside `span`."""
    if pool.lifecycle.billed_always:
        return commitment(pool) * pool.tp * span.duration_s / SECONDS_PER_HOUR
    seconds = provisioned_s(data, span)[data.pool_replicas(pool)].sum()
    return float(seconds) * pool.tp / SECONDS_PER_HOUR


def background_work(data: RunData) -> dict[str, float]:
    """Background GPU-hours, the useful part (each period ended before the run's end loses
    ``restart_loss_s`` since its last checkpoint), jobs completed and their value (USD)."""
    cfg = data.scenario.fleet.background
    iv = state_intervals(data)
    iv = iv[iv["state"] == "background"]
    tp = np.array([data.replica_pool[r].tp for r in iv["replica"]], dtype=np.float64)
    seconds = (iv["end_s"] - iv["start_s"]).to_numpy()
    loss = 0.0 if cfg is None else cfg.restart_loss_s
    useful = np.where(iv["ended_by"].to_numpy() == "end", seconds, np.maximum(seconds - loss, 0))
    hours = float((seconds * tp).sum()) / SECONDS_PER_HOUR
    useful_hours = float((useful * tp).sum()) / SECONDS_PER_HOUR
    return {
        "gpu_hours": hours,
        "useful_gpu_hours": useful_hours,
        "jobs_completed": 0.0 if cfg is None else float(np.floor(useful_hours / cfg.job_gpu_hours)),
        "value_usd": 0.0 if cfg is None else useful_hours * cfg.usd_per_gpu_hour,
    }


def fleet_summary(data: RunData) -> dict:
    """The fleet block of summary.json (docs/fleet.md, "What a fleet run writes")."""
    seconds = seconds_by_state(data)
    tp = np.array([p.tp for p in data.replica_pool], dtype=np.float64)
    hours_by_state = {s: float((seconds[s] * tp).sum()) / SECONDS_PER_HOUR for s in PROVISIONED}
    f = data.fleet
    assert f is not None
    causes = f["cause"].value_counts()
    iv = state_intervals(data)
    live = iv[iv["state"].isin(("serving", "background"))]
    run_s = max(data.simulated_s, 1e-9)
    retries = data.requests.get("retries")
    return {
        "replicas_started": int(((f["from"] == "none") & (f["cause"] != "initial")).sum()),
        "serving_replicas_mean": float((live["end_s"] - live["start_s"]).sum() / run_s),
        "serving_replicas_max": _most_at_once(live),
        "gpu_hours_by_state": hours_by_state,
        "scale_ups": int(causes.get("scale_up", 0)),
        "scale_downs": int(causes.get("scale_down", 0)),
        "failures": int(causes.get("failure", 0)),
        "reclaims": int(causes.get("reclaim_notice", 0)),
        "retried_requests": 0 if retries is None else int((retries > 0).sum()),
        "retries": 0 if retries is None else int(retries.sum()),
        "lost_gpu_hours": _lost_gpu_hours(iv, tp),
        "background": background_work(data),
    }


def _lost_gpu_hours(iv: pd.DataFrame, tp: np.ndarray) -> float:
    """GPU-hours of replicas down after a failure: failed, then loading again."""
    lost = (iv["state"] == "failed") | (
        (iv["state"] == "loading") & (iv["started_by"] == "repaired")
    )
    seconds = (iv["end_s"] - iv["start_s"])[lost].to_numpy()
    return float((seconds * tp[iv["replica"][lost].to_numpy()]).sum()) / SECONDS_PER_HOUR


def _most_at_once(iv: pd.DataFrame) -> int:
    """The most intervals of `iv` open at one time."""
    if iv.empty:
        return 0
    times = np.concatenate([iv["start_s"].to_numpy(), iv["end_s"].to_numpy()])
    steps = np.concatenate([np.ones(len(iv)), -np.ones(len(iv))])
    order = np.lexsort((steps, times))  # at equal times, ends before starts
    return int(np.cumsum(steps[order]).max())
