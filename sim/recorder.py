"""Trace recording: preallocated columnar buffers, written to Parquet at the end of a run.

The engine only appends flat typed values here; every statistic is computed by ``analysis``.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.workload import Workload

STATUS_NAMES = ("in_flight", "completed", "rejected")
IN_FLIGHT, COMPLETED, REJECTED = 0, 1, 2


class Recorder:
    """Per-request columns (sized once) and per-interval step columns (growing arrays)."""

    def __init__(self, workload: Workload) -> None:
        n = len(workload)
        self.workload = workload
        self.replica = np.full(n, -1, dtype=np.int32)
        self.first_scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.cached_prompt_tokens = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.num_completed = 0
        self.num_rejected = 0
        self._steps = {
            "replica": array("i"),
            "start_s": array("d"),
            "end_s": array("d"),
            "iterations": array("q"),
            "prefill_seqs": array("q"),
            "prefill_tokens": array("q"),
            "decode_seqs": array("q"),
            "decode_context": array("q"),
            "kv_blocks_used": array("q"),
        }

    # --------------------------------------------------------------- engine side
    def completed(self, rid: int, finish_s: float) -> None:
        self.finish_s[rid] = finish_s
        self.status[rid] = COMPLETED
        self.num_completed += 1

    def rejected(self, rid: int) -> None:
        self.status[rid] = REJECTED
        self.num_rejected += 1

    def step(
        self,
        replica: int,
        start_s: float,
        end_s: float,
        iterations: int,
        prefill_seqs: int,
        prefill_tokens: int,
        decode_seqs: int,
        decode_context: int,
        kv_blocks_used: int,
    ) -> None:
        """One executed interval: `iterations` identical iterations from start_s to end_s.

        decode_context: positions attended by the decoding sequences in the interval's first
        iteration (each later iteration of the interval attends `decode_seqs` more).
        """
        s = self._steps
        s["replica"].append(replica)
        s["start_s"].append(start_s)
        s["end_s"].append(end_s)
        s["iterations"].append(iterations)
        s["prefill_seqs"].append(prefill_seqs)
        s["prefill_tokens"].append(prefill_tokens)
        s["decode_seqs"].append(decode_seqs)
        s["decode_context"].append(decode_context)
        s["kv_blocks_used"].append(kv_blocks_used)

    # --------------------------------------------------------------- tables
    def requests_table(self) -> pa.Table:
        """One row per request (the columns of requests.parquet)."""
        w = self.workload
        names = np.array(w.class_names, dtype=object)
        return pa.table(
            {
                "request_id": np.arange(len(w), dtype=np.int64),
                "class": pa.array(names[w.class_index].tolist(), pa.string()),
                "arrival_s": w.arrival_s,
                "prompt_tokens": w.prompt_tokens,
                "output_tokens": w.output_tokens,
                "replica": self.replica,
                "first_scheduled_s": self.first_scheduled_s,
                "first_token_s": self.first_token_s,
                "finish_s": self.finish_s,
                "preemptions": self.preemptions,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "status": pa.array(np.array(STATUS_NAMES, dtype=object)[self.status].tolist()),
            }
        )

    def steps_table(self) -> pa.Table:
        """One row per executed interval of a replica (the columns of steps.parquet)."""
        return pa.table({k: np.frombuffer(v, dtype=v.typecode) for k, v in self._steps.items()})


def write_table(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a trace table as Parquet, with optional key/value metadata."""
    if metadata:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, **metadata})
    pq.write_table(table, path)
