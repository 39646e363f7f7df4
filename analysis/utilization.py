"""Utilization from the traces: per replica and fleet, over the measurement window or over time
windows of the whole run.

Capacity utilization: requests served per second over the capacity of a replica kept full for
the run's own workload mix (``analysis.capacity``): the planner's "running at 20% of capacity".
Over the measurement window, served = completed inside it (as the throughput counts); over the
time windows of a timeline, a completed request counts as served evenly over its time in service
(first scheduled to finish), which is smoother and equal in the steady state. Non-idle fraction:
time running any iteration / provisioned time; it reads near 1 from low loads on, since one
request keeps a replica non-idle.
A fleet that changes over time (fleet.parquet) counts each replica only while it is *up* for
serving (serving, draining or lent to background work, which a request takes back): the
fractions of a replica are over its up time, the fleet's are up-time weighted means, and the
fleet's capacity is each replica's capacity times its share of the window it was up. Standby,
starting and failed replicas add no capacity (they are billed: analysis.fleet). For a fixed
fleet every replica is up for the whole run, so nothing changes.
MFU: FLOPs the recorded iterations imply, counted from the model shape, over the replica's dense
peak FLOP/s, both against the bf16 peak (comparable across weight dtypes) and against the peak of
the weight dtype (the units the GEMMs run on). MBU: bytes over HBM bandwidth. Peaks are per GPU
times tp. KV occupancy: blocks in use / capacity (0 while idle). Queue length: requests routed to
the replica, arrived and not yet scheduled. Running: scheduled and not finished (a preempted
request stays counted). On a prefill replica a request runs until its KV cache has left; on a
decode replica it queues from its hand-off until its KV cache has arrived (analysis.
disaggregation). Decode batch: sequences decoding per iteration, averaged over non-idle
time.

Counting (docs/economics.md): linear layers 2 FLOPs per active parameter per token, LM head for
each decode token; attention 4 x layers x heads x head_dim FLOPs per attended position of a
decode token. Bytes: weights once per iteration (experts touched for MoE), the KV read by decode
tokens, the KV written for every token. The steps trace does not record the attention pairs,
cached context or finishing prompts of prefill chunks, so their attention FLOPs, context reads
and logits are left out: MFU and MBU are slight lower bounds when prefill is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.disaggregation import stays
from analysis.fleet import PROVISIONED, UP_FOR_SERVING, state_intervals
from analysis.rundata import RunData
from analysis.window import Window, completed_in
from sim.catalog import BYTES_PER_DTYPE
from sim.runspec import PoolSpec

FRACTIONS = (
    "capacity_utilization",
    "nonidle_fraction",
    "mfu_bf16_peak",
    "mfu_weight_dtype_peak",
    "mbu",
    "kv_occupancy",
)
COUNTS = ("queue_length", "running_requests")
UTILIZATION_KEYS = (  # of the summary's utilization block
    "capacity_utilization",
    "capacity_per_s",
    "nonidle_fraction",
    "kv_occupancy_mean",
    "mfu_bf16_peak",
    "mfu_weight_dtype_peak",
    "memory_bandwidth_utilization",
    "queue_length_mean",
    "running_requests_mean",
    "decode_batch_mean",
)


@dataclass(frozen=True)
class ShapeCounts:
    """Per-token and per-iteration coefficients of one replica's model (FLOPs, bytes)."""

    linear_flops_per_token: float
    head_flops_per_logit: float
    attention_flops_per_position: float
    dense_weight_bytes: float
    expert_bytes: float
    kv_bytes_per_token: float
    experts: int
    experts_per_token: int
    peak_bf16_flops: float
    peak_weight_dtype_flops: float
    peak_bytes_per_s: float

    @classmethod
    def of(cls, pool: PoolSpec) -> ShapeCounts:
        """From the model shape, dtypes and accelerator of a pool's replicas."""
        m, gpu, tp = pool.model_shape, pool.accelerator, pool.tp
        w = BYTES_PER_DTYPE[pool.weight_dtype]
        head_params = m.vocab * m.hidden
        dense_params = m.layers * (m.attn_params_per_layer + m.router_params_per_layer)
        return cls(
            linear_flops_per_token=2.0 * (m.active_params - head_params),
            head_flops_per_logit=2.0 * head_params,
            attention_flops_per_position=4.0 * m.layers * m.heads * m.head_dim,
            dense_weight_bytes=w * (dense_params + head_params),
            expert_bytes=w * m.layers * m.expert_params,
            kv_bytes_per_token=m.kv_values_per_token * BYTES_PER_DTYPE[pool.kv_dtype],
            experts=m.experts,
            experts_per_token=m.experts_per_token,
            peak_bf16_flops=gpu.peak_flops("bf16") * tp,
            peak_weight_dtype_flops=gpu.peak_flops(pool.weight_dtype) * tp,
            peak_bytes_per_s=gpu.mem_bw_gb_s * 1e9 * tp,
        )

    def experts_touched(self, tokens: np.ndarray) -> np.ndarray:
        """Expected experts per layer that `tokens` tokens route to (uniform top-k routing)."""
        if self.experts == 1:
            return np.ones_like(tokens, dtype=np.float64)
        return self.experts * (1.0 - (1.0 - self.experts_per_token / self.experts) ** tokens)


def step_work(data: RunData) -> pd.DataFrame:
    """The steps trace with the FLOPs and bytes of each interval (all its iterations), each
    counted with its replica's pool's model and dtypes."""
    s = data.steps
    flops = np.zeros(len(s))
    moved = np.zeros(len(s))
    replica = s["replica"].to_numpy()
    for pool in data.spec.pools:
        mine = np.isin(replica, data.pool_replicas(pool))
        flops[mine], moved[mine] = _interval_work(s[mine], ShapeCounts.of(pool))
    return s.assign(flops=flops, bytes=moved)


def _interval_work(s: pd.DataFrame, c: ShapeCounts) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of each interval of `s`, all on replicas of one shape."""
    k = s["iterations"].to_numpy(np.float64)
    d = s["decode_seqs"].to_numpy(np.float64)
    tokens_per_iteration = s["prefill_tokens"].to_numpy(np.float64) + d
    # positions attended over the k iterations: k x context + d x (0 + 1 + ... + k-1)
    positions = k * s["decode_context"].to_numpy(np.float64) + d * k * (k - 1) / 2.0
    flops = (
        k * tokens_per_iteration * c.linear_flops_per_token
        + k * d * c.head_flops_per_logit
        + positions * c.attention_flops_per_position
    )
    weights = c.dense_weight_bytes + c.experts_touched(tokens_per_iteration) * c.expert_bytes
    kv = (positions + k * tokens_per_iteration) * c.kv_bytes_per_token
    return flops, k * weights + kv


def integrate_windows(
    start_s: np.ndarray, end_s: np.ndarray, value: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Integral over each window [edges[i], edges[i+1]) of sum_j value_j on [start_j, end_j).

    Intervals may overlap; the sum of all values is piecewise constant, so its running integral
    is piecewise linear between change points and exact at the window edges.
    """
    if len(start_s) == 0:
        return np.zeros(len(edges) - 1)
    times = np.concatenate([start_s, end_s])
    steps = np.concatenate([value, -value])
    order = np.argsort(times, kind="stable")
    times, level = times[order], np.cumsum(steps[order])
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))])
    return np.diff(np.interp(edges, times, area, left=0.0, right=area[-1]))


def _request_spans(data: RunData) -> dict[str, pd.DataFrame]:
    """Per stay of a routed request on a replica (a disaggregated request stays on two): its
    queued span and its running span (open spans end with the run); and the service span of a
    completed request on its last replica, valued 1 / its length (requests served per second)."""
    r = data.requests[data.requests["status"] != "rejected"]
    stay = stays(data)
    end = data.simulated_s
    scheduled = stay["started_s"].fillna(end)
    done = r[r["status"] == "completed"]
    service_s = (done["finish_s"] - done["first_scheduled_s"]).to_numpy()
    with np.errstate(divide="ignore"):
        rate = np.where(service_s > 0, 1.0 / service_s, 0.0)
    return {
        "queue_length": pd.DataFrame(
            {
                "replica": stay["replica"],
                "start_s": stay["arrived_s"],
                "end_s": scheduled,
                "value": 1.0,
            }
        ),
        "running_requests": pd.DataFrame(
            {
                "replica": stay["replica"],
                "start_s": scheduled,
                "end_s": stay["left_s"].fillna(end),
                "value": 1.0,
            }
        ),
        "served": pd.DataFrame(
            {
                "replica": done["replica"],
                "start_s": done["first_scheduled_s"],
                "end_s": done["finish_s"],
                "value": rate,
            }
        ),
    }


def window_edges(simulated_s: float, window_s: float) -> np.ndarray:
    """Window boundaries from 0 to the end of the run (the last window may be shorter)."""
    edges = np.arange(0.0, simulated_s, window_s)
    return np.append(edges, simulated_s)


def default_window_s(simulated_s: float, windows: int = 100) -> float:
    """A round window length (1, 2 or 5 x 10^k s) giving about `windows` windows."""
    target = max(simulated_s / windows, 1e-9)
    exponent = np.floor(np.log10(target))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10**exponent >= target:
            return float(m * 10**exponent)
    raise AssertionError("unreachable")


def replica_timeline(
    data: RunData, capacity_per_s: Mapping[str, float], window_s: float | None = None
) -> pd.DataFrame:
    """Per replica (and its pool's name) and time window of the whole run: the fractions of
    FRACTIONS and the counts of COUNTS (time averages), decode_batch (mean over non-idle time;
    NaN when idle) and nonidle_s. `capacity_per_s`: one replica's capacity (requests/s) by pool
    name (``analysis.capacity.pool_capacities``)."""
    window_s = window_s or default_window_s(data.simulated_s)
    return _replica_windows(data, window_edges(data.simulated_s, window_s), capacity_per_s)


def replica_totals(
    data: RunData, window: Window, capacity_per_s: Mapping[str, float]
) -> pd.DataFrame:
    """Per replica over the measurement `window` (the columns of :func:`replica_timeline`, and
    `completed` and `capacity_per_s`); capacity utilization counts the requests each replica
    completed inside the window."""
    edges = np.array([window.start_s, window.end_s])
    totals = _replica_windows(data, edges, capacity_per_s)
    totals = totals.set_index("replica").drop(columns=["window_start_s", "window_end_s"])
    done = completed_in(data, window).groupby("replica").size()
    totals["completed"] = done.reindex(totals.index, fill_value=0).to_numpy(np.float64)
    totals["capacity_per_s"] = totals["pool"].map(capacity_per_s).astype(np.float64)
    totals["capacity_utilization"] = totals["completed"] / (
        totals["up_s"] * totals["capacity_per_s"]
    )
    return totals


def _replica_windows(
    data: RunData, edges: np.ndarray, capacity_per_s: Mapping[str, float]
) -> pd.DataFrame:
    length = np.diff(edges)
    counts = {p.index: ShapeCounts.of(p) for p in data.spec.pools}
    work = step_work(data)
    spans = _request_spans(data)
    frames = []
    up = state_intervals(data)
    up = up[up["state"].isin(UP_FOR_SERVING)]
    for replica, pool in enumerate(data.replica_pool):
        w = work[work["replica"] == replica]
        mine_up = up[up["replica"] == replica]
        up_s = integrate_windows(
            mine_up["start_s"].to_numpy(),
            mine_up["end_s"].to_numpy(),
            np.ones(len(mine_up)),
            edges,
        )
        start, end = w["start_s"].to_numpy(), w["end_s"].to_numpy()
        duration = end - start
        rate = {
            "nonidle": np.ones(len(w)),
            "flops": _per_second(w["flops"].to_numpy(), duration),
            "bytes": _per_second(w["bytes"].to_numpy(), duration),
            "kv": w["kv_blocks_used"].to_numpy(np.float64),
            "batch": w["decode_seqs"].to_numpy(np.float64),
        }
        area = {k: integrate_windows(start, end, v, edges) for k, v in rate.items()}
        for name, span in spans.items():
            mine = span[span["replica"] == replica]
            area[name] = integrate_windows(
                mine["start_s"].to_numpy(),
                mine["end_s"].to_numpy(),
                mine["value"].to_numpy(np.float64),
                edges,
            )
        c = counts[pool.index]
        with np.errstate(invalid="ignore", divide="ignore"):
            batch = np.where(area["nonidle"] > 0, area["batch"] / area["nonidle"], np.nan)
            served = area["served"] / (up_s * capacity_per_s[pool.name])
            fraction = {k: area[k] / up_s for k in ("nonidle", "flops", "bytes", "kv")}
        frames.append(
            pd.DataFrame(
                {
                    "replica": replica,
                    "pool": pool.name,
                    "window_start_s": edges[:-1],
                    "window_end_s": edges[1:],
                    "capacity_utilization": served,
                    "nonidle_fraction": fraction["nonidle"],
                    "mfu_bf16_peak": fraction["flops"] / c.peak_bf16_flops,
                    "mfu_weight_dtype_peak": fraction["flops"] / c.peak_weight_dtype_flops,
                    "mbu": fraction["bytes"] / c.peak_bytes_per_s,
                    "kv_occupancy": fraction["kv"] / pool.kv_capacity_blocks,
                    "queue_length": area["queue_length"] / length,
                    "running_requests": area["running_requests"] / length,
                    "decode_batch": batch,
                    "nonidle_s": area["nonidle"],
                    "up_s": up_s,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _per_second(total: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Rate of `total` spread evenly over each interval (0 for empty intervals)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(duration > 0, total / duration, 0.0)


def fleet_timeline(per_replica: pd.DataFrame) -> pd.DataFrame:
    """The fleet per window: means over replicas of fractions (weighted by their up time),
    sums of counts."""
    g = per_replica.groupby(["window_start_s", "window_end_s"], sort=True)
    fleet = (
        _up_weighted(per_replica, list(FRACTIONS))
        .groupby([per_replica["window_start_s"], per_replica["window_end_s"]], sort=True)
        .sum()
    )
    fleet = fleet.div(g["up_s"].sum().replace(0.0, np.nan), axis=0)
    fleet[list(COUNTS)] = g[list(COUNTS)].sum()
    weighted = (per_replica["decode_batch"].fillna(0.0) * per_replica["nonidle_s"]).groupby(
        [per_replica["window_start_s"], per_replica["window_end_s"]]
    )
    nonidle = g["nonidle_s"].sum()
    fleet["decode_batch"] = (weighted.sum() / nonidle).where(nonidle > 0)
    return fleet.reset_index()


def _up_weighted(per_replica: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` times each row's up time (NaN where the replica was not up: 0)."""
    return per_replica[columns].fillna(0.0).mul(per_replica["up_s"], axis=0)


def nonidle_s_per_replica(data: RunData, window: Window | None = None) -> np.ndarray:
    """Seconds each replica spent running iterations (index = replica), inside `window` if given."""
    steps = data.steps
    start, end = steps["start_s"].to_numpy(), steps["end_s"].to_numpy()
    seconds = end - start if window is None else window.clip(start, end)
    per = pd.Series(seconds).groupby(steps["replica"].to_numpy()).sum()
    return per.reindex(range(data.num_replicas), fill_value=0.0).to_numpy()


def fleet_utilization(
    data: RunData, window: Window, capacity_per_s: Mapping[str, float]
) -> dict[str, float | None]:
    """The utilization block of summary.json: the fleet over the measurement window.

    `capacity_per_s`: one replica's capacity (requests/s) by pool name.
    """
    if window.duration_s <= 0:  # the warm-up outlasted the arrivals: nothing was measured
        return _unmeasured(data.spec.pools, capacity_per_s)
    return _utilization(replica_totals(data, window, capacity_per_s), window)


def pool_utilization(
    data: RunData, window: Window, capacity_per_s: Mapping[str, float]
) -> dict[str, dict[str, float | None]]:
    """The utilization block of each pool (over its replicas), by pool name."""
    if window.duration_s <= 0:
        return {p.name: _unmeasured((p,), capacity_per_s) for p in data.spec.pools}
    totals = replica_totals(data, window, capacity_per_s)
    return {p.name: _utilization(totals[totals["pool"] == p.name], window) for p in data.spec.pools}


def _unmeasured(pools, capacity_per_s: Mapping[str, float]) -> dict[str, float | None]:
    capacity = sum(p.replicas * capacity_per_s[p.name] for p in pools)
    return {**dict.fromkeys(UTILIZATION_KEYS), "capacity_per_s": capacity}


def _utilization(totals: pd.DataFrame, window: Window) -> dict[str, float | None]:
    """Over the replicas of `totals`: capacity utilization (their completions over their
    capacity, each replica's for the share of the window it was up), up-time weighted means of
    the other fractions, sums of the queue and running counts."""
    # None when a replica has no capacity of its own (a prefill or decode replica: one role
    # alone completes no request), or none is known (no request was routed at all)
    known = totals["capacity_per_s"].notna().all()
    up_share = totals["up_s"] / window.duration_s
    capacity = float((totals["capacity_per_s"] * up_share).sum()) if known else None
    served = float(totals["completed"].sum()) / window.duration_s  # requests/s
    nonidle = float(totals["nonidle_s"].sum())
    batch = (totals["decode_batch"].fillna(0.0) * totals["nonidle_s"]).sum()
    up_s = float(totals["up_s"].sum())
    mean = _up_weighted(totals, list(FRACTIONS)).sum() / up_s if up_s > 0 else None
    return {
        "capacity_utilization": served / capacity if capacity else None,
        "capacity_per_s": capacity,
        "nonidle_fraction": None if mean is None else float(mean["nonidle_fraction"]),
        "kv_occupancy_mean": None if mean is None else float(mean["kv_occupancy"]),
        "mfu_bf16_peak": None if mean is None else float(mean["mfu_bf16_peak"]),
        "mfu_weight_dtype_peak": None if mean is None else float(mean["mfu_weight_dtype_peak"]),
        "memory_bandwidth_utilization": None if mean is None else float(mean["mbu"]),
        "queue_length_mean": float(totals["queue_length"].sum()),
        "running_requests_mean": float(totals["running_requests"].sum()),
        "decode_batch_mean": float(batch / nonidle) if nonidle > 0 else None,
    }


def replicas_by_state(data: RunData, edges: np.ndarray) -> pd.DataFrame:
    """Mean replicas in each provisioned state per window of `edges` and pool: columns pool,
    window_start_s, window_end_s and one per state."""
    iv = state_intervals(data)
    length = np.diff(edges)
    frames = []
    for pool in data.spec.pools:
        mine = iv[iv["pool"] == pool.name]
        columns = {}
        for state in PROVISIONED:
            rows = mine[mine["state"] == state]
            columns[state] = (
                integrate_windows(
                    rows["start_s"].to_numpy(), rows["end_s"].to_numpy(), np.ones(len(rows)), edges
                )
                / length
            )
        frames.append(
            pd.DataFrame(
                {"pool": pool.name, "window_start_s": edges[:-1], "window_end_s": edges[1:]}
                | columns
            )
        )
    return pd.concat(frames, ignore_index=True)
