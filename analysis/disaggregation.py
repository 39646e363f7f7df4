"""Runs with prefill and decode pools (docs/disaggregation.md), from their traces.

A request of a disaggregated model stays on two replicas: its prefill replica from its arrival
until its KV cache has left (``kv_transfer_end_s``), its decode replica from its hand-off (its
first token, ``first_token_s``) until it finishes. A colocated model's request stays on one
replica, its `replica`, from arrival to finish. The requests table of a disaggregated run
holds ``prefill_replica`` and ``decode_replica`` (-1: none) and the transfer's start and end;
`replica` is the last replica a request reached.

This module gives each replica's view of the requests (:func:`stays`, :func:`pool_requests`),
the bytes and expected duration of each KV transfer, and the ``kv_transfer`` block of the
summary (:func:`kv_transfer`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.metrics import distribution
from analysis.rundata import RunData
from sim.catalog import BYTES_PER_DTYPE
from sim.fleet_config import COLOCATED, DECODE, PREFILL
from sim.runspec import PoolSpec


def first_replica(requests: pd.DataFrame) -> pd.Series:
    """Each request's first replica: its prefill replica in a disaggregated run, else `replica`."""
    if "prefill_replica" not in requests:
        return requests["replica"]
    prefill = requests["prefill_replica"]
    return prefill.where(prefill >= 0, requests["replica"])


def stays(data: RunData) -> pd.DataFrame:
    """Every stay of a request on a replica: replica, arrived_s (routed there), started_s (first
    scheduled there, NaN: not yet), left_s (gone from there, NaN: not yet), request_id.

    Rejected requests stay nowhere. A disaggregated request has a prefill stay (arrival, first
    scheduled, end of its transfer or its finish when it needed no decode replica) and a decode
    stay (its first token, end of its transfer, finish)."""
    r = data.requests[data.requests["status"] != "rejected"]
    if "prefill_replica" not in r:
        return _stay(r, r["replica"], r["arrival_s"], r["first_scheduled_s"], r["finish_s"])
    handed = r["decode_replica"] >= 0
    return pd.concat(
        [
            _stay(
                r,
                first_replica(r),
                r["arrival_s"],
                r["first_scheduled_s"],
                r["kv_transfer_end_s"].where(handed, r["finish_s"]),
            ),
            _stay(
                r[handed],
                r["decode_replica"][handed],
                r["first_token_s"][handed],
                r["kv_transfer_end_s"][handed],
                r["finish_s"][handed],
            ),
        ],
        ignore_index=True,
    )


def _stay(r: pd.DataFrame, replica, arrived, started, left) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "replica": replica.to_numpy(),
            "arrived_s": arrived.to_numpy(),
            "started_s": started.to_numpy(),
            "left_s": left.to_numpy(),
            "request_id": r["request_id"].to_numpy(),
        }
    )


def kv_bytes(data: RunData, requests: pd.DataFrame) -> pd.Series:
    """Bytes of each request's KV cache that its transfer moves: prompt tokens x K and V values
    per token x bytes per value of its prefill pool's kv_dtype (each KV head once)."""
    per_token = np.zeros(data.spec.num_replicas)
    for pool in data.spec.pools:
        shape = pool.model_shape
        per_token[pool.replica_indices] = shape.kv_values_per_token * BYTES_PER_DTYPE[pool.kv_dtype]
    return requests["prompt_tokens"] * per_token[requests["prefill_replica"].to_numpy()]


def expected_transfer_s(data: RunData, requests: pd.DataFrame) -> pd.Series:
    """The duration of each request's transfer (to its decode replica, which it must have):
    latency + bytes / (bandwidth per GPU x lanes), lanes = the smaller tp of its two replicas,
    at most the model's KV heads."""
    link = data.spec.interconnect
    assert link is not None
    pools = data.replica_pool
    tp = np.array([p.tp for p in pools])
    kv_heads = np.array([p.model_shape.kv_heads for p in pools])
    prefill = requests["prefill_replica"].to_numpy()
    lanes = np.minimum(
        np.minimum(tp[prefill], kv_heads[prefill]), tp[requests["decode_replica"].to_numpy()]
    )
    return link.latency_s + kv_bytes(data, requests) / (link.bandwidth_gb_s * 1e9 * lanes)


def kv_transfer(data: RunData) -> dict:
    """The kv_transfer block of summary.json, over the measured requests whose transfer ended:
    transfers, bytes_moved, transfer_s (start to end) and wait_s (first token to start: waiting
    for the decode replica's blocks and for the link), each {mean, p50, p90, p99}; and
    link_busy_fraction: the prefill replicas' links' mean busy share of the whole run."""
    measured = data.measured
    moved = measured[measured["kv_transfer_end_s"].notna()]
    r = data.requests
    busy = (r["kv_transfer_end_s"] - r["kv_transfer_start_s"]).fillna(0.0).sum()
    prefill_replicas = sum(p.replicas for p in data.spec.pools if p.role == PREFILL)
    return {
        "transfers": int(len(moved)),
        "bytes_moved": float(kv_bytes(data, moved).sum()),
        "transfer_s": distribution(moved["kv_transfer_end_s"] - moved["kv_transfer_start_s"]),
        "wait_s": distribution(moved["kv_transfer_start_s"] - moved["first_token_s"]),
        "link_busy_fraction": float(busy / (prefill_replicas * data.simulated_s)),
    }


def pool_requests(data: RunData, requests: pd.DataFrame, pool: PoolSpec) -> pd.DataFrame:
    """The requests (some of `data`'s) a pool served, with `replica` their replica in it: a
    prefill pool's are those it prefilled, a decode pool's those it decoded, a colocated
    pool's those on its replicas (every one that existed during the run)."""
    column = {COLOCATED: "replica", PREFILL: "prefill_replica", DECODE: "decode_replica"}[pool.role]
    mine = requests[requests[column].isin(data.pool_replicas(pool))]
    return mine if column == "replica" else mine.assign(replica=mine[column])
