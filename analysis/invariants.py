"""Invariants that every run must satisfy, checked from its traces alone.

`check_run` takes a :class:`RunData` (from a run directory or an in-memory result) and returns
one :class:`Invariant` per law, each with the number of violations and an example:

* conservation: every request is completed, rejected or in flight (none in flight after a
  drained run); completed ones have a finish time, rejected ones were never scheduled.
* timestamps: arrival <= first scheduled <= first token <= finish for every request.
* steps: a replica's intervals have end >= start, at least one iteration, and never overlap.
* work conservation: no request waits (arrival to first scheduled) on its replica while that
  replica is idle. A request that arrives at an idle replica starts at once; one that could
  never fit is rejected, so every waiting request fits an empty replica. A run stopped at
  duration_s (drain = false) records no interval still running then, so the time after a
  replica's last recorded interval is not known to be idle and is not checked.
* tokens: on each replica, the decode tokens of the steps trace (sum of iterations x
  decode_seqs) equal the output tokens of its completed requests minus the one token that each
  prefill (first or recomputing) emits: sum(output_tokens - 1 - preemptions) under recompute
  preemption, sum(output_tokens - 1) under swap (a swapped-in request resumes decoding without
  a prefill). Prefill tokens
  equal the prompt tokens of the scheduled requests, less those found in the prefix cache, when
  nothing was preempted (recomputations add prompt + generated tokens, which the traces do not
  hold, so then only >= is checked).
* Little's law on the decode stage: the time integral of decode_seqs over the steps trace
  (mean number decoding x time) equals the sum over completed requests of finish - first
  token (throughput x mean decode time), when nothing was preempted (<= otherwise, as a
  preempted request leaves the decoding set while it waits and recomputes).
* KV cache: blocks in use never exceed the replica's capacity.
* pools serve their models: every routed request is on a replica of a pool that serves the
  model its class needs.

The laws of a replica's work (work conservation, tokens, Little's law, KV cache) are checked
pool by pool, each with its pool's batcher and KV capacity.

Times are compared with a tolerance of 1e-9 relative to the run's length, for float sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.rundata import RunData
from sim.runspec import PoolSpec, RunSpec

STATUSES = ("completed", "rejected", "in_flight")


@dataclass(frozen=True)
class Invariant:
    """One law checked on a run: how many violations, and one of them in words."""

    name: str
    violations: int
    example: str = ""

    @property
    def passed(self) -> bool:
        return self.violations == 0


def check_run(data: RunData) -> list[Invariant]:
    """Every invariant of one run; the laws of one replica are checked pool by pool, each
    with its pool's batcher and KV capacity."""
    req, steps, spec = data.requests, data.steps, data.spec
    span = max(data.simulated_s, float(steps["end_s"].max()) if len(steps) else 0.0, 1.0)
    tol = 1e-9 * span
    drained = data.scenario.sim.drain
    per_pool = [
        _replica_laws(*_of_pool(req, steps, pool, spec), pool, tol, drained) for pool in spec.pools
    ]
    laws = [_merged(invariants) for invariants in zip(*per_pool, strict=True)]
    return [
        conservation(req, data.scenario.sim.drain, spec.num_replicas),
        timestamps_ordered(req, tol),
        steps_disjoint(steps, tol),
        *laws,
        pools_serve_their_models(data),
    ]


def _of_pool(
    req: pd.DataFrame, steps: pd.DataFrame, pool: PoolSpec, spec: RunSpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The requests and steps of one pool's replicas (everything, for a single pool)."""
    if len(spec.pools) == 1:
        return req, steps
    replicas = pool.replica_indices
    return (
        req[req["replica"].between(replicas.start, replicas.stop - 1)],
        steps[steps["replica"].between(replicas.start, replicas.stop - 1)],
    )


def _replica_laws(
    req: pd.DataFrame, steps: pd.DataFrame, pool: PoolSpec, tol: float, drained: bool
) -> list[Invariant]:
    """The laws of a replica's work, for the replicas of one pool (`drained`: the run went on
    until every request was done)."""
    batcher = pool.batcher
    # static batches compute padding (longest prompt, finished rows): token laws become bounds
    padded = batcher.kind == "static"
    # a dynamic batcher may hold a request on an idle replica up to its queue delay
    hold_s = getattr(batcher, "max_queue_delay_s", 0.0)
    # vLLM-v0 iterations that prefill pause the decodes, as preemption does
    paused = not getattr(batcher, "mix_prefill_decode", True)
    return [
        work_conserving(req, steps, tol, hold_s, drained),
        decode_tokens(req, steps, padded, getattr(batcher, "preemption", "recompute")),
        prefill_tokens(req, steps, padded),
        littles_law_decode(req, steps, tol, padded, paused),
        kv_within_capacity(steps, pool.kv_capacity_blocks),
    ]


def _merged(invariants: tuple[Invariant, ...]) -> Invariant:
    """One law over every pool: all violations, the first example."""
    examples = [inv.example for inv in invariants if not inv.passed]
    violations = sum(inv.violations for inv in invariants)
    return Invariant(invariants[0].name, violations, examples[0] if examples else "")


def pools_serve_their_models(data: RunData) -> Invariant:
    """Every routed request is on a replica of a pool that serves its class's model."""
    classes = [c.name for c in data.scenario.workload.classes] or ["trace"]
    needs = dict(zip(classes, data.spec.class_models, strict=True))
    serves = np.array([p.model for p in data.spec.replica_pools()], dtype=object)
    routed = data.requests[data.requests["replica"] >= 0]
    wrong = serves[routed["replica"].to_numpy()] != routed["class"].map(needs).to_numpy()
    bad = routed[wrong]
    return _result(
        "pools serve their models",
        bad,
        lambda b: (
            f"request {int(b['request_id'].iloc[0])} of class {b['class'].iloc[0]!r} "
            f"on replica {int(b['replica'].iloc[0])}"
        ),
    )


def failures(invariants: list[Invariant]) -> list[Invariant]:
    """The invariants that do not hold."""
    return [inv for inv in invariants if not inv.passed]


def _result(name: str, bad: pd.DataFrame | np.ndarray, describe) -> Invariant:
    count = int(len(bad))
    return Invariant(name, count, describe(bad) if count else "")


def conservation(req: pd.DataFrame, drained: bool, replicas: int) -> Invariant:
    """Each request has exactly one known status and the fields that status implies."""
    status = req["status"]
    bad_status = ~status.isin(STATUSES)
    done = status == "completed"
    bad_done = done & req["finish_s"].isna()
    bad_rejected = (status == "rejected") & req["first_scheduled_s"].notna()
    bad_unfinished = (status != "completed") & req["finish_s"].notna()
    bad_flight = (status == "in_flight") if drained else pd.Series(False, index=req.index)
    # -1: still in a central fleet queue when an undrained run stopped (never dispatched)
    unrouted = (status == "in_flight") & (req["replica"] == -1) & req["first_scheduled_s"].isna()
    bad_replica = (status != "rejected") & ~req["replica"].between(0, replicas - 1) & ~unrouted
    bad = req[bad_status | bad_done | bad_rejected | bad_unfinished | bad_flight | bad_replica]
    return _result(
        "conservation",
        bad,
        lambda b: f"request {int(b['request_id'].iloc[0])} status {b['status'].iloc[0]!r}",
    )


def timestamps_ordered(req: pd.DataFrame, tol: float) -> Invariant:
    """arrival <= first scheduled <= first token <= finish, wherever both are recorded."""
    cols = ["arrival_s", "first_scheduled_s", "first_token_s", "finish_s"]
    bad_mask = np.zeros(len(req), dtype=bool)
    for earlier, later in zip(cols, cols[1:], strict=False):
        a, b = req[earlier].to_numpy(), req[later].to_numpy()
        both = ~np.isnan(a) & ~np.isnan(b)
        bad_mask |= both & (b < a - tol)
    # a later stage cannot be recorded while an earlier one is missing
    present = req[cols].notna().to_numpy()
    bad_mask |= (present[:, 1:] & ~present[:, :-1]).any(axis=1)
    bad = req[bad_mask]
    return _result(
        "timestamps ordered",
        bad,
        lambda b: "request {}: {}".format(
            int(b["request_id"].iloc[0]), ", ".join(f"{c}={b[c].iloc[0]}" for c in cols)
        ),
    )


def steps_disjoint(steps: pd.DataFrame, tol: float) -> Invariant:
    """Each interval has end >= start and >= 1 iteration; a replica's intervals never overlap."""
    s = steps.sort_values(["replica", "start_s", "end_s"], kind="stable")
    rep, start, end = (s[c].to_numpy() for c in ("replica", "start_s", "end_s"))
    malformed = (end < start - tol) | (s["iterations"].to_numpy() < 1)
    overlap = np.zeros(len(s), dtype=bool)
    if len(s) > 1:
        same = rep[1:] == rep[:-1]
        overlap[1:] = same & (start[1:] < end[:-1] - tol)
    bad = s[malformed | overlap]
    return _result(
        "steps disjoint",
        bad,
        lambda b: f"replica {int(b['replica'].iloc[0])} interval at {b['start_s'].iloc[0]}",
    )


def work_conserving(
    req: pd.DataFrame, steps: pd.DataFrame, tol: float, hold_s: float = 0.0, drained: bool = True
) -> Invariant:
    """No request waits on its replica during an idle gap of that replica.

    `hold_s`: how long after its arrival a request may be held on an idle replica on purpose
    (a dynamic batcher's queue delay). `drained`: false for a run stopped at its horizon, whose
    replicas may have been busy after their last recorded interval (not checked).
    """
    waiting = req[(req["status"] != "rejected") & (req["replica"] >= 0)]
    bad_ids: list[int] = []
    for replica, group in waiting.groupby("replica"):
        gap_start, gap_end = _idle_gaps(steps[steps["replica"] == replica], tol)
        if not drained:  # drop the open gap after the last recorded interval
            gap_start, gap_end = gap_start[:-1], gap_end[:-1]
        arrival = group["arrival_s"].to_numpy()
        scheduled = group["first_scheduled_s"].fillna(np.inf).to_numpy()
        # the last gap that starts before the request is scheduled is the one that could overlap
        idx = np.searchsorted(gap_start, scheduled - tol, side="left") - 1
        has = idx >= 0
        overlaps = np.zeros(len(group), dtype=bool)
        overlaps[has] = gap_end[idx[has]] > arrival[has] + hold_s + tol
        bad_ids += group["request_id"].to_numpy()[overlaps].tolist()
    return Invariant(
        "work conserving",
        len(bad_ids),
        f"request {bad_ids[0]} waited while its replica was idle" if bad_ids else "",
    )


def _idle_gaps(steps: pd.DataFrame, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of the idle periods of one replica (from time 0 to infinity)."""
    s = steps.sort_values("start_s", kind="stable")
    ends = np.concatenate([[0.0], s["end_s"].to_numpy()])
    starts = np.concatenate([s["start_s"].to_numpy(), [np.inf]])
    idle = starts > ends + tol
    return ends[idle], starts[idle]


def _per_replica(values: pd.Series, replica: pd.Series, replicas: np.ndarray) -> np.ndarray:
    return values.groupby(replica).sum().reindex(replicas, fill_value=0).to_numpy()


def decode_tokens(
    req: pd.DataFrame, steps: pd.DataFrame, padded: bool = False, preemption: str = "recompute"
) -> Invariant:
    """Decode tokens of the steps trace = output tokens of completed requests minus prefills.

    Every prefill emits one token: the first, and under `preemption` = "recompute" one per
    preemption (a swapped-out request resumes decoding instead). Exact when no request is left
    in flight and batches are not padded; otherwise the steps also hold tokens of unfinished
    requests or padding rows, so then only >= is required.
    """
    replicas = np.union1d(steps["replica"].unique(), req["replica"][req["replica"] >= 0].unique())
    decoded = _per_replica(steps["iterations"] * steps["decode_seqs"], steps["replica"], replicas)
    done = req[req["status"] == "completed"]
    prefills = 1 + (done["preemptions"] if preemption == "recompute" else 0)
    owed = _per_replica(done["output_tokens"] - prefills, done["replica"], replicas)
    settled = bool((req["status"] != "in_flight").all()) and not padded
    bad = replicas[decoded != owed] if settled else replicas[decoded < owed]
    return _result(
        "decode tokens",
        bad,
        lambda b: (
            f"replica {int(b[0])}: steps decode {decoded[replicas == b[0]][0]} tokens, "
            f"completed requests need {owed[replicas == b[0]][0]}"
        ),
    )


def prefill_tokens(req: pd.DataFrame, steps: pd.DataFrame, padded: bool = False) -> Invariant:
    """Prefill tokens of the steps = prompt tokens of the scheduled requests.

    Only >= on preemption (recomputation) or padding (prompts padded to the batch's longest).
    """
    replicas = np.union1d(steps["replica"].unique(), req["replica"][req["replica"] >= 0].unique())
    done = steps["prefill_tokens"]
    prefilled = _per_replica(done, steps["replica"], replicas)
    computed = req["prompt_tokens"] - req["cached_prompt_tokens"]  # prefix-cache hits skip prefill
    scheduled = req["first_token_s"].notna()
    prompts = _per_replica(computed[scheduled], req["replica"][scheduled], replicas)
    preempted = _per_replica(req["preemptions"], req["replica"], replicas) > 0
    started = req["first_scheduled_s"].notna() & req["first_token_s"].isna()
    in_progress = _per_replica(computed[started], req["replica"][started], replicas)
    low_ok = prefilled >= prompts
    exact_ok = (prefilled >= prompts) & (prefilled <= prompts + in_progress)
    bad = replicas[~np.where(preempted | padded, low_ok, exact_ok)]
    return _result(
        "prefill tokens",
        bad,
        lambda b: (
            f"replica {int(b[0])}: steps prefill {prefilled[replicas == b[0]][0]} tokens, "
            f"scheduled prompts hold {prompts[replicas == b[0]][0]}"
        ),
    )


def littles_law_decode(
    req: pd.DataFrame,
    steps: pd.DataFrame,
    tol: float,
    padded: bool = False,
    paused: bool = False,
) -> Invariant:
    """Integral of decode_seqs over time = sum of (finish - first token) of completed requests.

    <= when requests were preempted or decodes `paused` for prefills (both stop decoding for a
    while); >= with padded batches (finished rows keep decoding).
    """
    if (req["status"] == "in_flight").any():
        return Invariant("little's law (decode stage)", 0, "")
    area = float(((steps["end_s"] - steps["start_s"]) * steps["decode_seqs"]).sum())
    decode_time = float((req["finish_s"] - req["first_token_s"]).sum())  # NaN rows skipped
    slack = tol * max(len(steps), 1) + 1e-9 * max(area, decode_time)
    preempted = bool(req["preemptions"].sum() > 0) or paused
    if padded:
        ok = area >= decode_time - slack
    elif preempted:
        ok = area <= decode_time + slack
    else:
        ok = abs(area - decode_time) <= slack
    return Invariant(
        "little's law (decode stage)",
        0 if ok else 1,
        "" if ok else f"steps hold {area:.9g} decoding seq-seconds, requests {decode_time:.9g}",
    )


def kv_within_capacity(steps: pd.DataFrame, capacity_blocks: int) -> Invariant:
    """KV-cache blocks in use never exceed a replica's capacity."""
    bad = steps[steps["kv_blocks_used"] > capacity_blocks]
    return _result(
        "kv within capacity",
        bad,
        lambda b: (
            f"replica {int(b['replica'].iloc[0])} used {int(b['kv_blocks_used'].iloc[0])}"
            f" of {capacity_blocks} blocks"
        ),
    )
