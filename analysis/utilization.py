"""Utilization from the traces: per replica and fleet, over the run or over time windows.

Busy fraction: time running iterations / provisioned time. MFU and memory-bandwidth utilization
(MBU): FLOPs and bytes the recorded iterations imply, counted from the model shape, over the
replica's peak (datasheet FLOP/s of the weight dtype, and HBM bandwidth, times tp GPUs). KV
occupancy: blocks in use / capacity (0 while idle). Queue length: requests routed to the
replica, arrived and not yet scheduled. Running: scheduled and not finished (a preempted
request stays counted). Decode batch: sequences decoding per iteration, averaged over busy time.

Counting (docs/economics.md): linear layers 2 FLOPs per active parameter per token, LM head for
each decode token; attention 4 x layers x heads x head_dim FLOPs per attended position of a
decode token. Bytes: weights once per iteration (experts touched for MoE), the KV read by decode
tokens, the KV written for every token. The steps trace does not record the attention pairs,
cached context or finishing prompts of prefill chunks, so their attention FLOPs, context reads
and logits are left out: MFU and MBU are slight lower bounds when prefill is present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fleet import PROVISIONED, provisioned_s, state_intervals
from analysis.rundata import RunData
from sim.catalog import BYTES_PER_DTYPE
from sim.runspec import PoolSpec


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
    peak_flops: float
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
            peak_flops=gpu.peak_flops(pool.weight_dtype) * tp,
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
    """Per routed request: its queued span and its running span (open spans end with the run)."""
    r = data.requests[data.requests["status"] != "rejected"]
    end = data.simulated_s
    scheduled = r["first_scheduled_s"].fillna(end)
    return {
        "queue_length": pd.DataFrame(
            {"replica": r["replica"], "start_s": r["arrival_s"], "end_s": scheduled}
        ),
        "running_requests": pd.DataFrame(
            {"replica": r["replica"], "start_s": scheduled, "end_s": r["finish_s"].fillna(end)}
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


def replica_timeline(data: RunData, window_s: float | None = None) -> pd.DataFrame:
    """Per replica (and its pool's name) and window: busy_fraction, mfu, mbu, kv_occupancy,
    queue_length, running_requests (time averages) and decode_batch (mean over busy time; NaN
    when idle)."""
    window_s = window_s or default_window_s(data.simulated_s)
    edges = window_edges(data.simulated_s, window_s)
    length = np.diff(edges)
    counts = {p.index: ShapeCounts.of(p) for p in data.spec.pools}
    work = step_work(data)
    spans = _request_spans(data)
    frames = []
    for replica, pool in enumerate(data.replica_pool):
        w = work[work["replica"] == replica]
        start, end = w["start_s"].to_numpy(), w["end_s"].to_numpy()
        duration = end - start
        rate = {
            "busy": np.ones(len(w)),
            "flops": _per_second(w["flops"].to_numpy(), duration),
            "bytes": _per_second(w["bytes"].to_numpy(), duration),
            "kv": w["kv_blocks_used"].to_numpy(np.float64),
            "batch": w["decode_seqs"].to_numpy(np.float64),
        }
        area = {k: integrate_windows(start, end, v, edges) for k, v in rate.items()}
        for name, span in spans.items():
            mine = span[span["replica"] == replica]
            area[name] = integrate_windows(
                mine["start_s"].to_numpy(), mine["end_s"].to_numpy(), np.ones(len(mine)), edges
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            batch = np.where(area["busy"] > 0, area["batch"] / area["busy"], np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "replica": replica,
                    "pool": pool.name,
                    "window_start_s": edges[:-1],
                    "window_end_s": edges[1:],
                    "busy_fraction": area["busy"] / length,
                    "mfu": area["flops"] / (length * counts[pool.index].peak_flops),
                    "mbu": area["bytes"] / (length * counts[pool.index].peak_bytes_per_s),
                    "kv_occupancy": area["kv"] / (length * pool.kv_capacity_blocks),
                    "queue_length": area["queue_length"] / length,
                    "running_requests": area["running_requests"] / length,
                    "decode_batch": batch,
                    "busy_s": area["busy"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _per_second(total: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Rate of `total` spread evenly over each interval (0 for empty intervals)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(duration > 0, total / duration, 0.0)


def fleet_timeline(per_replica: pd.DataFrame) -> pd.DataFrame:
    """The fleet per window: means over replicas of fractions, sums of counts."""
    g = per_replica.groupby(["window_start_s", "window_end_s"], sort=True)
    fleet = g[["busy_fraction", "mfu", "mbu", "kv_occupancy"]].mean()
    fleet[["queue_length", "running_requests"]] = g[["queue_length", "running_requests"]].sum()
    weighted = (per_replica["decode_batch"].fillna(0.0) * per_replica["busy_s"]).groupby(
        [per_replica["window_start_s"], per_replica["window_end_s"]]
    )
    busy = g["busy_s"].sum()
    fleet["decode_batch"] = (weighted.sum() / busy).where(busy > 0)
    return fleet.reset_index()


def busy_s_per_replica(data: RunData) -> np.ndarray:
    """Seconds each replica spent running iterations (index = replica)."""
    steps = data.steps
    busy = (steps["end_s"] - steps["start_s"]).groupby(steps["replica"]).sum()
    return busy.reindex(range(data.num_replicas), fill_value=0.0).to_numpy()


def replica_totals(data: RunData) -> pd.DataFrame:
    """Per replica over the whole run: busy_s, busy_fraction, mfu, mbu, kv_occupancy,
    queue_length, running_requests and decode_batch (as in :func:`replica_timeline`)."""
    timeline = replica_timeline(data, window_s=data.simulated_s)
    busy_s = busy_s_per_replica(data)
    totals = timeline.set_index("replica").drop(columns=["window_start_s", "window_end_s"])
    totals["busy_s"] = busy_s
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN for a replica never provisioned
        totals["busy_fraction"] = busy_s / provisioned_s(data)
    return totals


def fleet_utilization(data: RunData) -> dict[str, float | None]:
    """The utilization block of summary.json: fleet means over the whole run."""
    return _utilization(replica_totals(data))


def pool_utilization(data: RunData) -> dict[str, dict[str, float | None]]:
    """The utilization block of each pool (means over its replicas), by pool name."""
    totals = replica_totals(data)
    return {p.name: _utilization(totals[totals["pool"] == p.name]) for p in data.spec.pools}


def _utilization(totals: pd.DataFrame) -> dict[str, float | None]:
    """Means over the replicas of `totals` (sums for queue and running counts)."""
    busy = float(totals["busy_s"].sum())
    batch = (totals["decode_batch"].fillna(0.0) * totals["busy_s"]).sum()
    return {
        "gpu_busy_fraction": float(totals["busy_fraction"].mean()),
        "kv_occupancy_mean": float(totals["kv_occupancy"].mean()),
        "mfu": float(totals["mfu"].mean()),
        "memory_bandwidth_utilization": float(totals["mbu"].mean()),
        "queue_length_mean": float(totals["queue_length"].sum()),
        "running_requests_mean": float(totals["running_requests"].sum()),
        "decode_batch_mean": float(batch / busy) if busy > 0 else None,
    }


def replicas_by_state(data: RunData, edges: np.ndarray) -> pd.DataFrame:
    """Mean replicas in each provisioned state per window of `edges` and pool: columns pool,
    window_start_s, window_end_s and one per state."""
    iv = state_intervals(data)
    length = np.diff(edges)
    frames = []
    for pool in data.spec.pools:
        mine = iv[iv["pool"] == pool.name]
        columns = {
            state: integrate_windows(
                mine.loc[mine["state"] == state, "start_s"].to_numpy(),
                mine.loc[mine["state"] == state, "end_s"].to_numpy(),
                np.ones(int((mine["state"] == state).sum())),
                edges,
            )
            / length
            for state in PROVISIONED
        }
        frames.append(
            pd.DataFrame(
                {"pool": pool.name, "window_start_s": edges[:-1], "window_end_s": edges[1:]}
                | columns
            )
        )
    return pd.concat(frames, ignore_index=True)
