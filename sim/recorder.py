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
# the states of a replica in fleet.parquet (docs/fleet.md): `none` before its first row
STATE_NAMES = (
    "none",
    "provisioning",
    "loading",
    "serving",
    "background",
    "standby",
    "draining",
    "failed",
    "gone",
)
# why a replica changed state
CAUSE_NAMES = (
    "initial",  # the fleet at the start of the run
    "scale_up",  # the autoscaler wants more serving replicas
    "scale_down",  # ... fewer
    "replace",  # a spot replica was reclaimed: a fixed pool replaces it
    "spare",  # restore the pool's standby replicas
    "provisioned",  # provisioning ended: loading starts
    "loaded",  # loading ended
    "drained",  # a draining replica's last request left
    "failure",
    "repaired",
    "reclaim_notice",  # the spot provider takes the replica back after a notice
    "reclaimed",
    "idle",  # lent to background work: no request for the threshold
    "request",  # a request reached a replica lent to background work
    "surplus",  # loaded, but the pool has all the replicas it wants
)


class Recorder:
    """Per-request columns (sized once) and per-interval step columns (growing arrays).

    The columns are ``array.array`` buffers: the event loop reads and writes single elements as
    plain Python ints and floats (cheaper than numpy scalars), and the tables view them without
    copying. `pools`: each replica's pool name, for the `pool` column of both tables when the
    fleet has more than one pool (None: no such column). With `longest_context` (padded decode
    attention) the steps table has one more column, ``decode_max_context``: the longest context
    a decoding sequence attends in the interval's first iteration. With `disaggregated` (a
    fleet with prefill and decode pools) the requests table has four more columns: the
    ``prefill_replica`` and ``decode_replica`` of each request (-1: none), and when its KV-cache
    transfer started and ended (``kv_transfer_start_s``, ``kv_transfer_end_s``); its `replica`
    is then the last replica it reached.
    """

    def __init__(
        self,
        workload: Workload,
        pools: list[str] | None = None,
        longest_context: bool = False,
        disaggregated: bool = False,
        retries: bool = False,
    ) -> None:
        n = len(workload)
        self.workload = workload
        self.pools = pools
        self.replica = array("i", [-1]) * n
        self.first_scheduled_s = array("d", [np.nan]) * n
        self.first_token_s = array("d", [np.nan]) * n
        self.finish_s = array("d", [np.nan]) * n
        self.preemptions = array("i", [0]) * n
        self.cached_prompt_tokens = array("q", [0]) * n
        self.status = array("b", [IN_FLIGHT]) * n
        self.num_completed = 0
        self.num_rejected = 0
        self.rejection_ids = array("q")
        self.rejection_reasons: list[str] = []
        self.disaggregated = disaggregated
        if disaggregated:
            self.prefill_replica = array("i", [-1]) * n
            self.decode_replica = array("i", [-1]) * n
            self.kv_transfer_start_s = array("d", [np.nan]) * n
            self.kv_transfer_end_s = array("d", [np.nan]) * n
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
        self._appends = tuple(column.append for column in self._steps.values())
        self._append_longest = None
        if longest_context:
            self._steps["decode_max_context"] = array("q")
            self._append_longest = self._steps["decode_max_context"].append
        self.retries = array("i", [0]) * n if retries else None
        self._fleet = {
            "time_s": array("d"),
            "pool": array("i"),
            "replica": array("i"),
            "from": array("b"),
            "to": array("b"),
            "cause": array("b"),
        }

    # --------------------------------------------------------------- engine side
    def completed(self, rid: int, finish_s: float) -> None:
        self.finish_s[rid] = finish_s
        self.status[rid] = COMPLETED
        self.num_completed += 1

    def rejected(self, rid: int, reason: str) -> None:
        """Request `rid` is refused for `reason` (a key of ``REJECTION_REASONS``), by its
        replica or, before routing (replica -1), at the front door."""
        self.status[rid] = REJECTED
        self.num_rejected += 1
        self.rejection_ids.append(rid)
        self.rejection_reasons.append(reason)

    def restarted(self, rid: int) -> None:
        """Request `rid` lost its replica and starts over: the times of the attempt that
        completes are the ones kept (a run with retries has the `retries` column)."""
        assert self.retries is not None, "Recorder(retries=True) counts restarts"
        self.retries[rid] += 1
        self.replica[rid] = -1
        self.first_scheduled_s[rid] = np.nan
        self.first_token_s[rid] = np.nan
        self.cached_prompt_tokens[rid] = 0

    def transition(
        self, time_s: float, pool: int, replica: int, from_state: int, to_state: int, cause: int
    ) -> None:
        """A replica of pool index `pool` changed state (codes into STATE_NAMES, CAUSE_NAMES)."""
        for column, value in zip(
            self._fleet.values(), (time_s, pool, replica, from_state, to_state, cause), strict=True
        ):
            column.append(value)

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
        decode_max_context: int = 0,
    ) -> None:
        """One executed interval: `iterations` identical iterations from start_s to end_s.

        decode_context: positions attended by the decoding sequences in the interval's first
        iteration (each later iteration of the interval attends `decode_seqs` more);
        decode_max_context: the longest of them (kept only with `longest_context`).
        """
        r, t0, t1, it, ps, pf, ds, dc, kv = self._appends
        r(replica)
        t0(start_s)
        t1(end_s)
        it(iterations)
        ps(prefill_seqs)
        pf(prefill_tokens)
        ds(decode_seqs)
        dc(decode_context)
        kv(kv_blocks_used)
        if self._append_longest is not None:
            self._append_longest(decode_max_context)

    # --------------------------------------------------------------- tables
    def requests_table(self) -> pa.Table:
        """One row per request (the columns of requests.parquet)."""
        w = self.workload
        replica = self._last_replica()
        return pa.table(
            {
                "request_id": np.arange(len(w), dtype=np.int64),
                "class": _decoded(w.class_index, w.class_names),
                "arrival_s": w.arrival_s,
                "prompt_tokens": w.prompt_tokens,
                "output_tokens": w.output_tokens,
                "replica": replica,
                **self._pool_column(replica),
                **self._handoff_columns("prefill_replica", "decode_replica"),
                "first_scheduled_s": _view(self.first_scheduled_s),
                "first_token_s": _view(self.first_token_s),
                **self._handoff_columns("kv_transfer_start_s", "kv_transfer_end_s"),
                "finish_s": _view(self.finish_s),
                "preemptions": _view(self.preemptions),
                **({} if self.retries is None else {"retries": _view(self.retries)}),
                "cached_prompt_tokens": _view(self.cached_prompt_tokens),
                "status": _decoded(_view(self.status), STATUS_NAMES),
            }
        )

    def _last_replica(self) -> np.ndarray:
        """Each request's replica: in a disaggregated fleet its decode replica once it has one,
        else its prefill replica (colocated models' requests keep the replica they were on)."""
        replica = _view(self.replica)
        if not self.disaggregated:
            return replica
        prefill, decode = _view(self.prefill_replica), _view(self.decode_replica)
        return np.where(decode >= 0, decode, np.where(prefill >= 0, prefill, replica))

    def _handoff_columns(self, *names: str) -> dict[str, np.ndarray]:
        """The named columns of a disaggregated run (nothing otherwise)."""
        return {name: _view(getattr(self, name)) for name in names} if self.disaggregated else {}

    def fleet_table(self, pool_names: list[str]) -> pa.Table:
        """One row per change of a replica's state (the columns of fleet.parquet)."""
        f = {k: _view(v) for k, v in self._fleet.items()}
        return pa.table(
            {
                "time_s": f["time_s"],
                "pool": _decoded(f["pool"], tuple(pool_names)),
                "replica": f["replica"],
                "from": _decoded(f["from"], STATE_NAMES),
                "to": _decoded(f["to"], STATE_NAMES),
                "cause": _decoded(f["cause"], CAUSE_NAMES),
            }
        )

    def rejections_table(self) -> pa.Table | None:
        """One row per rejected request: request_id, reason (rejections.parquet); None when
        no request was rejected."""
        if not self.rejection_reasons:
            return None
        order = np.argsort(_view(self.rejection_ids), kind="stable")
        return pa.table(
            {
                "request_id": _view(self.rejection_ids)[order],
                "reason": pa.array(self.rejection_reasons).take(pa.array(order)),
            }
        )

    def steps_table(self) -> pa.Table:
        """One row per executed interval of a replica (the columns of steps.parquet)."""
        columns = {k: _view(v) for k, v in self._steps.items()}
        replica = columns.pop("replica")
        return pa.table({"replica": replica, **self._pool_column(replica), **columns})

    def _pool_column(self, replica: np.ndarray) -> dict[str, pa.Array]:
        """The `pool` column (each row's replica's pool; null where no replica) or nothing."""
        if self.pools is None:
            return {}
        unrouted = replica < 0
        codes = pa.array(np.where(unrouted, 0, replica), mask=unrouted, type=pa.int32())
        return {
            "pool": pa.DictionaryArray.from_arrays(codes, pa.array(self.pools)).dictionary_decode()
        }


def _decoded(indices: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """A string column from small integer codes into `names`."""
    dictionary = pa.array(list(names), pa.string())
    return pa.DictionaryArray.from_arrays(indices, dictionary).dictionary_decode()


def _view(buffer: array) -> np.ndarray:
    """A numpy view of an ``array.array`` column (no copy)."""
    return np.frombuffer(buffer, dtype=buffer.typecode)


def write_table(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a trace table as Parquet, with optional key/value metadata."""
    if metadata:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, **metadata})
    pq.write_table(table, path)
