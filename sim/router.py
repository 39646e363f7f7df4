"""Routers: which replica gets an arriving request.

The fleet gives each group of replicas that serve one model its own router, built over
read-only views of those replicas (:class:`~sim.replica.ReplicaView`, in pool order), the
fleet's ``router`` random stream and the tokens each prefix hash of a request stands for. A
router has ``choose(req) -> position`` (the position in its views of the replica that takes
`req`, or None to hold `req` in the group's queue) and ``left(position, rid)`` (request `rid`
left that replica: it finished or was rejected; the fleet calls it). `ROUTERS` maps the
scenario's ``fleet.router`` names to them; docs/fleet.md says when to use which.

Work is counted in predicted seconds of a replica's time: a request of ``p`` prompt and ``o``
output tokens costs ``p x prefill_s_per_token + o x decode_s_per_token`` of its pool (from the
pool's step-time model, ``sim.resolve``), from when it is routed until it leaves, as a router
that knows each request's ``max_tokens`` would count it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import Protocol

import numpy as np

from sim.replica import ReplicaView
from sim.request import Request

# prefix_affinity assumes a replica still holds a prefix block this long after it last took a
# request with that block: the block TTL of the NVIDIA Dynamo KV router's approximation mode
# (--router-ttl-secs, default 120 s; docs.nvidia.com/dynamo, frontend configuration reference).
AFFINITY_TTL_S = 120.0
RANDOM_BLOCK = 4096  # power_of_two draws its pairs this many at a time


class Router(Protocol):
    def choose(self, req: Request) -> int | None:
        """Position of the replica that takes `req`; None: hold it in the group's queue."""
        ...

    def left(self, index: int, rid: int) -> None:
        """Request `rid` left the replica at position `index` (finished or rejected)."""
        ...


class RoundRobin:
    """Replicas in turn, whatever their load or speed."""

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._count = len(replicas)
        self._next = 0

    def choose(self, req: Request) -> int:
        index = self._next
        self._next = (index + 1) % self._count
        return index

    def left(self, index: int, rid: int) -> None:
        """Round robin ignores load."""


class LeastOutstanding:
    """The replica with the fewest requests inside it (join the shortest queue).

    Ties go to the lowest position. The router counts each replica's outstanding requests
    itself (routed minus left, which equals the batcher's waiting + running count) and keeps
    them in a min-heap of keys ``load * replicas + position``, whose order is (load, position).
    A replica's current key is ``self._keys[position]``; a heap entry that differs from it is
    stale and is dropped when it reaches the top, and the heap is rebuilt when stale entries
    outnumber live ones. Both operations cost O(log replicas) amortised.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._count = len(replicas)
        self._keys = [self._load(r) * self._count + i for i, r in enumerate(replicas)]
        self._heap = self._keys.copy()
        heapify(self._heap)

    def _load(self, replica: ReplicaView) -> int:
        """The load a replica starts with."""
        return replica.outstanding

    def choose(self, req: Request) -> int | None:  # int here; CentralQueue may hold
        top = self._top()
        index = top % self._count
        self._keys[index] = top + self._count
        heapreplace(self._heap, top + self._count)
        return index

    def _top(self) -> int:
        """The smallest live key (stale entries above it are dropped)."""
        heap, keys, n = self._heap, self._keys, self._count
        top = heap[0]
        while keys[top % n] != top:
            heappop(heap)
            top = heap[0]
        return top

    def left(self, index: int, rid: int) -> None:
        key = self._keys[index] - self._count
        self._keys[index] = key
        heap = self._heap
        heappush(heap, key)
        if len(heap) > 2 * self._count + 64:
            self._heap = self._keys.copy()
            heapify(self._heap)

    def loads(self) -> list[int]:
        """Outstanding requests per replica, as the router counts them."""
        return [key // self._count for key in self._keys]


class CentralQueue(LeastOutstanding):
    """One FCFS queue per model: a request goes to a replica only when one has a free slot.

    A replica has a free slot while it holds fewer requests than its batcher runs at once
    (``max_num_seqs``, or ``max_batch``); the replica with the most free slots takes the request
    (ties to the lowest position; with equal slots, the least loaded). When every replica is
    full the request waits in the fleet's queue (``choose`` returns None) and the fleet
    dispatches it, in arrival order, as soon as a request leaves. With c replicas of one slot
    each and exponential service times the fleet is the M/M/c queue of Erlang C. A request still
    in the fleet's queue when an undrained run stops has no replica (-1 in requests.parquet) and
    is in no replica's queue statistics.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._max_slots = max(r.slots for r in replicas)
        self._slots = [r.slots for r in replicas]
        super().__init__(replicas, rng, prefix_block_tokens)

    def _load(self, replica: ReplicaView) -> int:
        """Slots taken, counted from the largest replica's: outstanding + max slots - slots."""
        return replica.outstanding + self._max_slots - replica.slots

    def choose(self, req: Request) -> int | None:
        if self._top() // self._count >= self._max_slots:
            return None
        return super().choose(req)


def pool_spans(replicas: Sequence[ReplicaView]) -> list[range]:
    """The positions of each pool's replicas (the fleet lists them pool by pool)."""
    starts = [i for i, r in enumerate(replicas) if i == 0 or r.pool != replicas[i - 1].pool]
    return [range(a, b) for a, b in zip(starts, [*starts[1:], len(replicas)], strict=True)]


class _WorkCounter:
    """Outstanding work of each replica in predicted seconds, and each pool's cost per token.

    pools: (first position, end position, prefill s per token, decode s per token) of each
    pool's contiguous run of views.
    """

    def __init__(self, replicas: Sequence[ReplicaView]) -> None:
        self._count = len(replicas)
        self.work = [0.0] * self._count
        self.requests = [0] * self._count
        self.cost = [(r.prefill_s_per_token, r.decode_s_per_token) for r in replicas]
        self.pools = [(s.start, s.stop, *self.cost[s.start]) for s in pool_spans(replicas)]
        self._routed: dict[int, tuple[int, float]] = {}

    def seconds(self, req: Request, index: int) -> float:
        """Predicted seconds of `req` on the replica at `index`."""
        prefill_s, decode_s = self.cost[index]
        return req.prompt_tokens * prefill_s + req.output_tokens * decode_s

    def add(self, req: Request, index: int, seconds: float) -> int:
        self.work[index] += seconds
        self.requests[index] += 1
        self._routed[req.rid] = (index, seconds)
        return index

    def left(self, index: int, rid: int) -> None:
        _, seconds = self._routed.pop(rid)
        self.requests[index] -= 1
        # an empty replica has no work: no rounding residue of the sums survives it
        self.work[index] = self.work[index] - seconds if self.requests[index] else 0.0


class LeastWork:
    """Speed-weighted least work left: the replica with the least outstanding work.

    Each replica's outstanding work is counted in predicted seconds of its own pool, so an
    H200 replica counts the same requests as less work than an H100 one and takes more of
    them. Ties (idle replicas) go to the pool where the request itself is quickest, then to the
    lowest position. (Adding the request's own seconds to the comparison instead would steer
    long requests to fast pools and short ones to slow pools, so that the fast pool takes
    fewer requests, not more.)
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._work = _WorkCounter(replicas)

    def choose(self, req: Request) -> int:
        work = self._work.work
        best, best_key = 0, (float("inf"), 0.0)
        for start, end, prefill_s, decode_s in self._work.pools:
            pool = work[start:end]
            least = min(pool)
            key = (least, req.prompt_tokens * prefill_s + req.output_tokens * decode_s)
            if key < best_key:
                best, best_key = start + pool.index(least), key
        return self._work.add(req, best, best_key[1])

    def left(self, index: int, rid: int) -> None:
        self._work.left(index, rid)


class PowerOfTwo:
    """Two replicas drawn at random (the ``router`` stream), the one with less work wins.

    Work as in :class:`LeastWork`: outstanding predicted seconds; ties go to the replica where
    the request is quicker, then to the lower position. Costs O(1) per request whatever the
    fleet's size.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._work = _WorkCounter(replicas)
        self._count = len(replicas)
        self._rng = rng
        self._pairs: list[tuple[int, int]] = []

    def _pair(self) -> tuple[int, int]:
        """Two distinct positions, uniformly at random."""
        if not self._pairs:
            n = self._count
            first = self._rng.integers(0, n, RANDOM_BLOCK)
            second = self._rng.integers(0, n - 1, RANDOM_BLOCK)
            second += second >= first  # skip the first: distinct, still uniform
            self._pairs = list(zip(first.tolist(), second.tolist(), strict=True))[::-1]
        return self._pairs.pop()

    def choose(self, req: Request) -> int:
        work = self._work
        if self._count == 1:
            return work.add(req, 0, work.seconds(req, 0))
        a, b = sorted(self._pair())
        seconds_a, seconds_b = work.seconds(req, a), work.seconds(req, b)
        if (work.work[b], seconds_b) < (work.work[a], seconds_a):
            return work.add(req, b, seconds_b)
        return work.add(req, a, seconds_a)

    def left(self, index: int, rid: int) -> None:
        self._work.left(index, rid)


class PrefixAffinity:
    """Prefix-aware: the replica with the least prompt work, counting cached prefixes as done.

    The cost function of the NVIDIA Dynamo KV router, with its default weight 1: a replica's
    cost is the prompt tokens of the requests it holds plus the tokens of this request's prompt
    it would have to compute, i.e. its prompt less the leading prefix blocks the replica holds.
    The router remembers which replica took which prefix block and when (without events from
    the replicas, as Dynamo's approximation mode does); a block counts as held for
    `AFFINITY_TTL_S` after the replica last took it. Ties go to the lowest position. Requests
    with a shared prefix so go where that prefix is, unless that replica's extra load
    outweighs the prompt work the prefix saves.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._count = len(replicas)
        self._block_tokens = prefix_block_tokens
        self._load = [0] * self._count  # prompt tokens of the requests each replica holds
        self._held: dict[int, dict[int, float]] = {}  # block hash -> {position: last taken, s}
        self._routed: dict[int, int] = {}  # request id -> its prompt tokens

    def choose(self, req: Request) -> int:
        cached = self._cached_tokens(req)
        costs = [load - saved for load, saved in zip(self._load, cached, strict=True)]
        index = costs.index(min(costs))
        self._load[index] += req.prompt_tokens
        self._routed[req.rid] = req.prompt_tokens
        for block in req.prefix_hashes:
            self._held.setdefault(block, {})[index] = req.arrival_s
        return index

    def _cached_tokens(self, req: Request) -> list[int]:
        """Prompt tokens of `req` each replica probably holds: its leading prefix blocks."""
        cached = [0] * self._count
        live = range(self._count)
        oldest = req.arrival_s - AFFINITY_TTL_S
        for depth, block in enumerate(req.prefix_hashes, start=1):
            held = self._held.get(block, {})
            live = [i for i in live if held.get(i, -math.inf) >= oldest]
            if not live:
                break
            for i in live:
                cached[i] = min(depth * self._block_tokens, req.prompt_tokens)
        return cached

    def left(self, index: int, rid: int) -> None:
        self._load[index] -= self._routed.pop(rid)


class CheapestFirst:
    """Fill the pool with the lowest cost per token first; spill when its replicas are full.

    A pool's cost per output token is its replicas' price per hour times the predicted seconds
    per output token of a full batch. The cheapest pool whose least loaded replica has a free
    slot (fewer outstanding requests than its batcher's slots) takes the request, on that
    replica. When every replica is full, the replica with the fewest requests beyond its slots
    takes it (ties to the cheaper pool). Pools of equal cost keep their order.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._loads = [r.outstanding for r in replicas]
        self._slots = [r.slots for r in replicas]

        def usd_per_token(span: range) -> float:
            view = replicas[span.start]
            assert view.usd_per_hour is not None  # the schema asks [economics] of this router
            return view.usd_per_hour * view.decode_s_per_token

        self._pools = [(s.start, s.stop) for s in sorted(pool_spans(replicas), key=usd_per_token)]

    def choose(self, req: Request) -> int:
        loads = self._loads
        best, best_excess = 0, None
        for start, end in self._pools:
            pool = loads[start:end]
            least = min(pool)
            index = start + pool.index(least)
            excess = least - self._slots[index]
            if excess < 0:
                best = index
                break
            if best_excess is None or excess < best_excess:
                best, best_excess = index, excess
        loads[best] += 1
        return best

    def left(self, index: int, rid: int) -> None:
        self._loads[index] -= 1


ROUTERS: dict[str, type] = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "central_queue": CentralQueue,
    "least_work": LeastWork,
    "power_of_two": PowerOfTwo,
    "prefix_affinity": PrefixAffinity,
    "cheapest_first": CheapestFirst,
}


def make_router(
    name: str, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
) -> Router:
    """The router registered under `name`, over `replicas` (`rng`: its random stream;
    `prefix_block_tokens`: the tokens each of a request's prefix hashes stands for)."""
    return ROUTERS[name](replicas, rng, prefix_block_tokens)
