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
* replicas work only while up: every interval of the steps trace, and every request's first
  scheduling and finish, lies within a time its replica was serving or draining (fleet.parquet):
  none while provisioning, loading, standing by, failed, gone or lent to background work.

A fleet that changes over time changes some laws (docs/fleet.md): a replica is idle only while
serving or draining, so work conservation looks at those times only, and a request that started
over after its replica failed (or was reclaimed) waits from that moment, not from its arrival;
a request routed to a replica lent to background work may wait the preemption time. When any
request started over, the work of its lost attempts is in the steps trace but not in its own
columns, so the token laws become bounds (>=) and Little's law a bound too (>=; not checked when
requests were also preempted, which bounds it the other way).

The laws of a replica's work (work conservation, tokens, Little's law, KV cache) are checked
pool by pool, each with its pool's batcher and KV capacity. On a prefill or decode pool
(docs/disaggregation.md) they read:

* prefill replicas: a request waits on an idle replica only while KV caches that wait to
  leave it (from their first token to the end of their transfer) fill it; they never decode;
  their prefill tokens are their requests' prompts, as above;
* decode replicas: a replica is never idle between the arrival of a KV cache and the finish of
  its request (not preempted); decode tokens lie between sum(output_tokens - 1 - preemptions)
  and sum(output_tokens - 1) of its completed requests (a preemption on the prefill side emits
  no token); they prefill only to recompute preempted requests; Little's law is <=, as a
  request decodes from the first iteration boundary after its KV cache arrived.

A disaggregated run has two more laws. Prefill, transfer, decode: a request of a disaggregated
model is prefilled on a prefill replica of its model, then, if it needs more than one token,
its KV cache moves once to a decode replica of its model, which then decodes it: first token
<= transfer start <= transfer end <= finish, and each transfer takes latency + bytes /
(bandwidth x lanes) exactly. KV links one at a time: a prefill replica's transfers never
overlap.

Times are compared with a tolerance of 1e-9 relative to the run's length, for float sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.disaggregation import expected_transfer_s, pool_requests
from analysis.fleet import state_intervals
from analysis.rundata import RunData
from sim.fleet_config import COLOCATED, DECODE, PREFILL
from sim.runspec import PoolSpec

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


@dataclass(frozen=True)
class Lifecycle:
    """What the laws need of the fleet trace.

    working: per replica, the (start, end) times of its stretches of serving or draining;
    restarts_s: the times at which replicas failed or were reclaimed, increasing (requests
    inside started over then); lent_s: the longest a request may wait for a replica lent to
    background work (its preemption time); restarted: whether any request started over.
    """

    working: dict[int, tuple[np.ndarray, np.ndarray]]
    restarts_s: np.ndarray
    lent_s: float
    restarted: bool

    @classmethod
    def of(cls, data: RunData) -> Lifecycle:
        iv = state_intervals(data)
        iv = iv[iv["state"].isin(WORKING)]
        working = {}
        for replica, mine in iv.groupby("replica"):
            start, end = mine["start_s"].to_numpy(), mine["end_s"].to_numpy()
            joined = np.append(True, start[1:] > end[:-1])  # a new stretch, not a continuation
            stop = np.append(np.flatnonzero(joined[1:]), len(start) - 1)
            working[int(replica)] = (start[joined], end[stop])
        assert data.fleet is not None
        restarts = data.fleet[data.fleet["cause"].isin(("failure", "reclaimed"))]["time_s"]
        background = data.scenario.fleet.background
        retries = data.requests.get("retries")
        return cls(
            working,
            np.sort(restarts.to_numpy()),
            0.0 if background is None else background.preemption_s,
            retries is not None and bool((retries > 0).any()),
        )


WORKING = ("serving", "draining")  # the states in which a replica runs iterations


def check_run(data: RunData) -> list[Invariant]:
    """Every invariant of one run; the laws of one replica are checked pool by pool, each
    with its pool's batcher and KV capacity."""
    req, steps, spec = data.requests, data.steps, data.spec
    span = max(data.simulated_s, float(steps["end_s"].max()) if len(steps) else 0.0, 1.0)
    tol = 1e-9 * span
    life, drained = Lifecycle.of(data), data.scenario.sim.drain
    per_pool = [_pool_laws(data, pool, tol, life, drained) for pool in spec.pools]
    laws = [_merged(invariants) for invariants in zip(*per_pool, strict=True)]
    checked = [
        conservation(req, drained, data.num_replicas),
        timestamps_ordered(req, tol),
        steps_disjoint(steps, tol),
        *laws,
        pools_serve_their_models(data),
        replicas_work_only_while_up(req, steps, life, tol),
    ]
    if spec.disaggregated:
        checked += [prefill_transfer_decode(data, tol), links_one_at_a_time(req, tol)]
    return checked


def _pool_laws(
    data: RunData, pool: PoolSpec, tol: float, life: Lifecycle, drained: bool
) -> list[Invariant]:
    """The laws of the replicas of one pool, as its role has them (`drained`: the run went on
    until every request was done). A prefill or decode pool keeps its replicas for the whole
    run (the scenario refuses fields over time on it), so `life` is a colocated pool's only."""
    if pool.role == COLOCATED:
        return _replica_laws(*_of_pool(data, pool), pool, tol, life, drained)
    req, steps, own = data.requests, data.steps, pool.replica_indices
    mine, mine_steps = (
        pool_requests(data, req, pool),
        steps[steps["replica"].between(own.start, own.stop - 1)],
    )
    if pool.role == PREFILL:
        return _prefill_laws(mine, mine_steps, pool, tol, drained)
    return _decode_laws(mine, mine_steps, pool, tol, drained)


def _prefill_laws(
    req: pd.DataFrame, steps: pd.DataFrame, pool: PoolSpec, tol: float, drained: bool
) -> list[Invariant]:
    """The laws of prefill replicas (`req`: the requests they prefilled)."""
    handed = req[req["first_token_s"].notna() & (req["output_tokens"] > 1)]
    held = pd.DataFrame(
        {
            "replica": handed["replica"],
            "start_s": handed["first_token_s"],
            "end_s": handed["kv_transfer_end_s"].fillna(np.inf),
        }
    )
    never_decoded = req.assign(output_tokens=1, preemptions=0, finish_s=req["first_token_s"])
    return [
        work_conserving(req, steps, tol, drained=drained, held=held),
        decode_tokens(never_decoded, steps),
        prefill_tokens(req, steps),
        littles_law_decode(never_decoded, steps, tol),
        kv_within_capacity(steps, pool.kv_capacity_blocks),
    ]


def _decode_laws(
    req: pd.DataFrame, steps: pd.DataFrame, pool: PoolSpec, tol: float, drained: bool
) -> list[Invariant]:
    """The laws of decode replicas (`req`: the requests handed to them)."""
    whole = req[(req["status"] == "completed") & (req["preemptions"] == 0)]
    decoding = whole.assign(
        arrival_s=whole["kv_transfer_end_s"], first_scheduled_s=whole["finish_s"]
    )
    return [
        work_conserving(decoding, steps, tol, drained=drained),
        decode_tokens(req, steps, preemption=pool.batcher.preemption, bounded=True),
        prefill_tokens(req.assign(prompt_tokens=0, cached_prompt_tokens=0), steps),
        littles_law_decode(
            req.assign(first_token_s=req["kv_transfer_end_s"]), steps, tol, paused=True
        ),
        kv_within_capacity(steps, pool.kv_capacity_blocks),
    ]


def _of_pool(data: RunData, pool: PoolSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The requests and steps of one pool's replicas (everything, for a single pool)."""
    req, steps = data.requests, data.steps
    if len(data.spec.pools) == 1:
        return req, steps
    replicas = data.pool_replicas(pool)
    return req[req["replica"].isin(replicas)], steps[steps["replica"].isin(replicas)]


def _replica_laws(
    req: pd.DataFrame,
    steps: pd.DataFrame,
    pool: PoolSpec,
    tol: float,
    life: Lifecycle,
    drained: bool,
) -> list[Invariant]:
    """The laws of a replica's work, for the replicas of one pool (`drained`: the run went on
    until every request was done)."""
    batcher = pool.batcher
    # static batches compute padding (longest prompt, finished rows): token laws become bounds
    padded = batcher.kind == "static"
    # a dynamic batcher may hold a request on an idle replica up to its queue delay
    hold_s = getattr(batcher, "max_queue_delay_s", 0.0) + life.lent_s
    # vLLM-v0 iterations that prefill pause the decodes, as preemption does
    paused = not getattr(batcher, "mix_prefill_decode", True)
    bound = padded or life.restarted  # lost attempts or padding in the steps: lower bounds
    return [
        work_conserving(req, steps, tol, hold_s, life, drained),
        decode_tokens(req, steps, bound, getattr(batcher, "preemption", "recompute")),
        prefill_tokens(req, steps, bound),
        littles_law_decode(req, steps, tol, padded, paused, life.restarted),
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
    serves = np.array([p.model for p in data.replica_pool], dtype=object)
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
    req: pd.DataFrame,
    steps: pd.DataFrame,
    tol: float,
    hold_s: float = 0.0,
    life: Lifecycle | None = None,
    drained: bool = True,
    held: pd.DataFrame | None = None,
) -> Invariant:
    """No request waits on its replica during an idle gap of that replica.

    `hold_s`: how long after its arrival a request may be held on an idle replica on purpose
    (a dynamic batcher's queue delay, a lent replica's preemption time). With `life`, a replica
    is idle only while serving or draining without an iteration, and a request that started
    over waits from the latest failure or reclaim before its scheduling. `drained`: false for
    a run stopped at its horizon, whose replicas may have been busy after their last recorded
    interval (not checked). `held`: spans (replica, start_s, end_s) in which a replica keeps
    KV caches that wait to leave it (a prefill replica under backpressure); a request may wait
    on an idle replica while such spans cover the wait.
    """
    waiting = req[(req["status"] != "rejected") & (req["replica"] >= 0)]
    bad_ids: list[int] = []
    for replica, group in waiting.groupby("replica"):
        periods = None if life is None else life.working.get(int(replica))
        gap_start, gap_end = _idle_gaps(steps[steps["replica"] == replica], tol, periods)
        if not drained and len(gap_start):  # the open gap after the last recorded interval
            gap_start, gap_end = gap_start[:-1], gap_end[:-1]
        arrival = group["arrival_s"].to_numpy()
        scheduled = group["first_scheduled_s"].fillna(np.inf).to_numpy()
        if life is not None and "retries" in group:
            again = group["retries"].to_numpy() > 0
            last = np.searchsorted(life.restarts_s, scheduled[again] + tol, side="right") - 1
            restarted_s = np.where(last >= 0, life.restarts_s[np.maximum(last, 0)], -np.inf)
            arrival = arrival.copy()
            arrival[again] = np.maximum(arrival[again], restarted_s)
        # the last gap that starts before the request is scheduled is the one that could overlap
        idx = np.searchsorted(gap_start, scheduled - tol, side="left") - 1
        has = idx >= 0
        overlaps = np.zeros(len(group), dtype=bool)
        overlaps[has] = gap_end[idx[has]] > arrival[has] + hold_s + tol
        if held is not None:
            spans = held[held["replica"] == replica].sort_values("start_s", kind="stable")
            for i in np.flatnonzero(overlaps):
                wait = (max(gap_start[idx[i]], arrival[i]), min(gap_end[idx[i]], scheduled[i]))
                overlaps[i] = not _covered(*wait, spans, tol)
        bad_ids += group["request_id"].to_numpy()[overlaps].tolist()
    return Invariant(
        "work conserving",
        len(bad_ids),
        f"request {bad_ids[0]} waited while its replica was idle" if bad_ids else "",
    )


def _covered(t0: float, t1: float, spans: pd.DataFrame, tol: float) -> bool:
    """Whether the union of `spans` (sorted by start_s) covers [t0, t1]."""
    t = t0
    for start, end in zip(spans["start_s"].to_numpy(), spans["end_s"].to_numpy(), strict=True):
        if t >= t1 - tol or start > t + tol:
            break
        t = max(t, end)
    return t >= t1 - tol


def _idle_gaps(
    steps: pd.DataFrame, tol: float, periods: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of the idle periods of one replica: between its intervals, within
    its working `periods` (start and end times; None: from time 0 to infinity)."""
    if periods is None:
        periods = (np.array([0.0]), np.array([np.inf]))
    s = steps.sort_values("start_s", kind="stable")
    starts_all, ends_all = s["start_s"].to_numpy(), s["end_s"].to_numpy()
    gap_start, gap_end = [], []
    for begin, finish in zip(*periods, strict=True):
        inside = (starts_all >= begin - tol) & (ends_all <= finish + tol)
        ends = np.concatenate([[begin], ends_all[inside]])
        starts = np.concatenate([starts_all[inside], [finish]])
        idle = starts > ends + tol
        gap_start.append(ends[idle])
        gap_end.append(starts[idle])
    if not gap_start:
        return np.array([]), np.array([])
    return np.concatenate(gap_start), np.concatenate(gap_end)


def _per_replica(values: pd.Series, replica: pd.Series, replicas: np.ndarray) -> np.ndarray:
    return values.groupby(replica).sum().reindex(replicas, fill_value=0).to_numpy()


def decode_tokens(
    req: pd.DataFrame,
    steps: pd.DataFrame,
    padded: bool = False,
    preemption: str = "recompute",
    bounded: bool = False,
) -> Invariant:
    """Decode tokens of the steps trace = output tokens of completed requests minus prefills.

    Every prefill emits one token: the first, and under `preemption` = "recompute" one per
    preemption (a swapped-out request resumes decoding instead). Exact when no request is left
    in flight and batches are not padded; otherwise the steps also hold tokens of unfinished
    requests or padding rows, so then only >= is required. `bounded` (preemptions some of which
    emitted no token): between that count and sum(output - 1).
    """
    replicas = np.union1d(steps["replica"].unique(), req["replica"][req["replica"] >= 0].unique())
    decoded = _per_replica(steps["iterations"] * steps["decode_seqs"], steps["replica"], replicas)
    done = req[req["status"] == "completed"]
    prefills = 1 + (done["preemptions"] if preemption == "recompute" else 0)
    owed = _per_replica(done["output_tokens"] - prefills, done["replica"], replicas)
    settled = bool((req["status"] != "in_flight").all()) and not padded
    if settled and bounded:
        most = _per_replica(done["output_tokens"] - 1, done["replica"], replicas)
        bad = replicas[(decoded < owed) | (decoded > most)]
    elif settled:
        bad = replicas[decoded != owed]
    else:
        bad = replicas[decoded < owed]
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
    restarted: bool = False,
) -> Invariant:
    """Integral of decode_seqs over time = sum of (finish - first token) of completed requests.

    <= when requests were preempted or decodes `paused` for prefills (both stop decoding for a
    while); >= with padded batches (finished rows keep decoding) or `restarted` requests (their
    lost attempts decoded too); not checked when both bounds apply.
    """
    if (req["status"] == "in_flight").any():
        return Invariant("little's law (decode stage)", 0, "")
    area = float(((steps["end_s"] - steps["start_s"]) * steps["decode_seqs"]).sum())
    decode_time = float((req["finish_s"] - req["first_token_s"]).sum())  # NaN rows skipped
    slack = tol * max(len(steps), 1) + 1e-9 * max(area, decode_time)
    preempted = bool(req["preemptions"].sum() > 0) or paused
    if restarted and preempted:
        return Invariant("little's law (decode stage)", 0, "")
    if padded or restarted:
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


def prefill_transfer_decode(data: RunData, tol: float) -> Invariant:
    """A disaggregated model's request: prefilled on a prefill replica of its model, then (with
    more than one output token) one transfer to a decode replica of its model, then decoded
    there, in time order; every transfer lasts latency + bytes / (bandwidth x lanes)."""
    req = data.requests
    split = req[(req["prefill_replica"] >= 0) | (req["decode_replica"] >= 0)]
    pools = data.replica_pool
    roles = np.array([p.role for p in pools] + [""], dtype=object)
    models = np.array([p.model for p in pools] + [""], dtype=object)
    classes = [c.name for c in data.scenario.workload.classes] or ["trace"]
    needs = split["class"].map(dict(zip(classes, data.spec.class_models, strict=True))).to_numpy()
    prefill, decode = split["prefill_replica"].to_numpy(), split["decode_replica"].to_numpy()
    first, finish = split["first_token_s"], split["finish_s"]
    start, end = split["kv_transfer_start_s"], split["kv_transfer_end_s"]
    handed, started, ended = decode >= 0, start.notna().to_numpy(), end.notna().to_numpy()
    done = (split["status"] == "completed").to_numpy()
    output = split["output_tokens"].to_numpy()
    bad = (roles[prefill] != PREFILL) | (models[prefill] != needs)
    bad |= handed & ((roles[decode] != DECODE) | (models[decode] != needs))
    bad |= started & (~handed | first.isna().to_numpy() | (start < first - tol).to_numpy())
    bad |= ended & (~started | (end < start - tol).to_numpy())
    bad |= (finish < end - tol).to_numpy()  # NaN compares False
    bad |= done & (output > 1) & ~ended
    bad |= done & (output == 1) & (handed | started)
    took = (end - start)[ended]
    expected = expected_transfer_s(data, split[ended])
    bad[ended] |= ((took - expected).abs() > tol + 1e-9 * expected).to_numpy()
    return _result(
        "prefill, transfer, decode",
        split[bad],
        lambda b: (
            f"request {int(b['request_id'].iloc[0])}: prefill replica "
            f"{int(b['prefill_replica'].iloc[0])}, decode replica "
            f"{int(b['decode_replica'].iloc[0])}, first token {b['first_token_s'].iloc[0]}, "
            f"transfer {b['kv_transfer_start_s'].iloc[0]} to {b['kv_transfer_end_s'].iloc[0]}, "
            f"finish {b['finish_s'].iloc[0]}"
        ),
    )


def links_one_at_a_time(req: pd.DataFrame, tol: float) -> Invariant:
    """The transfers from one prefill replica never overlap (its link sends one at a time)."""
    sent = req[req["kv_transfer_start_s"].notna()].sort_values(
        ["prefill_replica", "kv_transfer_start_s"], kind="stable"
    )
    replica = sent["prefill_replica"].to_numpy()
    start = sent["kv_transfer_start_s"].to_numpy()
    end = sent["kv_transfer_end_s"].fillna(np.inf).to_numpy()
    overlap = np.zeros(len(sent), dtype=bool)
    overlap[1:] = (replica[1:] == replica[:-1]) & (start[1:] < end[:-1] - tol)
    return _result(
        "kv links one at a time",
        sent[overlap],
        lambda b: (
            f"request {int(b['request_id'].iloc[0])} started on the link of replica "
            f"{int(b['prefill_replica'].iloc[0])} before the transfer ahead of it ended"
        ),
    )


def replicas_work_only_while_up(
    req: pd.DataFrame, steps: pd.DataFrame, life: Lifecycle, tol: float
) -> Invariant:
    """Every interval of the steps trace, and every request's first scheduling and finish on
    its replica, lies within a stretch of that replica serving or draining."""
    bad: list[str] = []
    for replica, mine in steps.groupby("replica"):
        start, end = life.working.get(int(replica), (np.array([]), np.array([])))
        at = np.searchsorted(start, mine["start_s"].to_numpy() + tol, side="right") - 1
        inside = (at >= 0) & (mine["end_s"].to_numpy() <= end[np.maximum(at, 0)] + tol)
        bad += [f"replica {int(replica)} ran an interval at {t}" for t in mine["start_s"][~inside]]
    routed = req[req["replica"] >= 0]
    for column in ("first_scheduled_s", "finish_s"):
        for replica, mine in routed[routed[column].notna()].groupby("replica"):
            start, end = life.working.get(int(replica), (np.array([]), np.array([])))
            times = mine[column].to_numpy()
            at = np.searchsorted(start, times + tol, side="right") - 1
            inside = (at >= 0) & (times <= end[np.maximum(at, 0)] + tol)
            bad += [
                f"request {int(r)} {column} on replica {int(replica)} while it was not up"
                for r in mine["request_id"][~inside]
            ]
    return Invariant("replicas work only while up", len(bad), bad[0] if bad else "")
