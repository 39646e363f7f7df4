"""Routers: which replica gets an arriving request.

The fleet gives each group of replicas that serve one model its own router, built over
read-only views of those replicas (:class:`~sim.replica.ReplicaView`, in pool order), the
fleet's ``router`` random stream and the tokens each prefix hash of a request stands for. A
router has ``choose(req) -> position`` (the position in its views of the replica that takes
`req`, or None to hold `req` in the group's queue) and ``left(position, rid)`` (request `rid`
left that replica: it finished, was rejected, or its replica failed; the fleet calls it). A
fleet that changes over time also calls ``add(view)`` (a new replica takes the next position,
not yet routable) and ``set_routable(position, routable)`` (a replica starts or stops taking
requests: it serves, or it is loading, draining, standing by or down); a router only chooses
routable replicas, and the fleet asks it only while one is. `ROUTERS` maps the scenario's
``fleet.router`` names to them; docs/fleet.md says when to use which.

Work is counted in predicted seconds of a replica's time: a request of ``p`` prompt and ``o``
output tokens costs ``p x prefill_s_per_token + o x decode_s_per_token`` of its pool (from the
pool's step-time model, ``sim.resolve``), from when it is routed until it leaves, as a router
that knows each request's ``max_tokens`` would count it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
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
# least_outstanding and central_queue add this to the load of a replica that is not routable, so
# that it never has the fewest outstanding requests nor a free slot
NOT_ROUTABLE_LOAD = 1 << 40


class Router(Protocol):
    def choose(self, req: Request) -> int | None:
        """Position of the replica that takes `req`; None: hold it in the group's queue."""
        ...

    def left(self, index: int, rid: int) -> None:
        """Request `rid` left the replica at position `index` (finished, rejected, or its
        replica failed)."""
        ...

    def add(self, replica: ReplicaView) -> None:
        """A new replica takes the next position; it is not routable until told."""
        ...

    def set_routable(self, index: int, routable: bool) -> None:
        """The replica at position `index` starts (True) or stops (False) taking requests."""
        ...


class Routable:
    """The routable positions of a router, increasing; by pool for routers that weigh pools.

    pools: routable positions of each pool index, in the order the pools first appear.
    """

    def __init__(self, replicas: Sequence[ReplicaView], by_pool: bool = False) -> None:
        self.all = list(range(len(replicas)))
        self._pool_of: list[int] | None = [r.pool for r in replicas] if by_pool else None
        self.pools: dict[int, list[int]] = {}
        for i, pool in enumerate(self._pool_of or []):
            self.pools.setdefault(pool, []).append(i)

    def add(self, replica: ReplicaView) -> None:
        """A new position (the next), not routable."""
        if self._pool_of is not None:
            self._pool_of.append(replica.pool)
            self.pools.setdefault(replica.pool, [])

    def set(self, index: int, routable: bool) -> None:
        """Position `index` becomes routable (True) or not (False)."""
        lists = [self.all]
        if self._pool_of is not None:
            lists.append(self.pools[self._pool_of[index]])
        for positions in lists:
            present = index in positions
            if routable and not present:
                insort(positions, index)
            elif not routable and present:
                positions.remove(index)


class RoundRobin:
    """Replicas in turn, whatever their load or speed."""

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._routable = Routable(replicas)
        self._next = 0

    def choose(self, req: Request) -> int:
        routable = self._routable.all
        at = bisect_left(routable, self._next)
        index = routable[at] if at < len(routable) else routable[0]
        self._next = index + 1
        return index

    def left(self, index: int, rid: int) -> None:
        """Round robin ignores load."""

    def add(self, replica: ReplicaView) -> None:
        self._routable.add(replica)

    def set_routable(self, index: int, routable: bool) -> None:
        self._routable.set(index, routable)


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

    def add(self, replica: ReplicaView) -> None:
        """Renumber every key for one replica more (loads kept), the new one not routable."""
        count = self._count + 1
        self._keys = [key // self._count * count + i for i, key in enumerate(self._keys)]
        self._keys.append((self._load(replica) + NOT_ROUTABLE_LOAD) * count + self._count)
        self._count = count
        self._heap = self._keys.copy()
        heapify(self._heap)

    def set_routable(self, index: int, routable: bool) -> None:
        step = NOT_ROUTABLE_LOAD * self._count
        self._keys[index] += -step if routable else step
        heappush(self._heap, self._keys[index])


class CentralQueue(LeastOutstanding):
    """One FCFS queue per model: a request goes to a replica only when one has a free slot.

    A replica has a free slot while it holds fewer requests than its batcher runs at once
    (``max_num_seqs``, or ``max_batch``); the replica with the most free slots takes the request
    (ties to the lowest position; with equal slots, the least loaded). When every replica is
    full the request waits in the fleet's queue (``choose`` returns None) and the fleet
    dispatches it, in arrival order, as soon as a request leaves. With c replicas of one slot
    each and exponential service times the fleet is the M/M/c queue of Erlang C. A request still
    in the fleet's queue when an undrained run stops has no replica (-1 in requests.parquet) and
    is in no replica's queue statistics. The router counts a replica's load as its outstanding
    requests less its slots, so a replica with a free slot has a negative load.
    """

    def _load(self, replica: ReplicaView) -> int:
        """Slots taken less slots: outstanding - slots (negative while a slot is free)."""
        return replica.outstanding - replica.slots

    def choose(self, req: Request) -> int | None:
        if self._top() // self._count >= 0:
            return None
        return super().choose(req)


class Pack(LeastOutstanding):
    """Fill replicas in order: the lowest-position routable replica with a free slot (fewer
    requests inside than its batcher runs at once); when every one is full, the least
    outstanding (ties to the lowest position).

    Packing leaves the last replicas idle at low load, for background work (docs/fleet.md) or
    a scale-in. It looks at the routable replicas in order: O(replicas) per request.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        super().__init__(replicas, rng, prefix_block_tokens)
        self._slots = [r.slots for r in replicas]
        self._routable = Routable(replicas)

    def choose(self, req: Request) -> int | None:
        keys, count = self._keys, self._count
        for index in self._routable.all:
            if keys[index] // count < self._slots[index]:
                keys[index] += count
                heappush(self._heap, keys[index])
                return index
        return super().choose(req)

    def add(self, replica: ReplicaView) -> None:
        super().add(replica)
        self._slots.append(replica.slots)
        self._routable.add(replica)

    def set_routable(self, index: int, routable: bool) -> None:
        super().set_routable(index, routable)
        self._routable.set(index, routable)


class _WorkCounter:
    """Outstanding work of each replica in predicted seconds, and each one's cost per token."""

    def __init__(self, replicas: Sequence[ReplicaView]) -> None:
        self.work = [0.0] * len(replicas)
        self.requests = [0] * len(replicas)
        self.cost = [(r.prefill_s_per_token, r.decode_s_per_token) for r in replicas]
        self._routed: dict[int, tuple[int, float]] = {}

    def grow(self, replica: ReplicaView) -> None:
        """One replica more, without work."""
        self.work.append(0.0)
        self.requests.append(0)
        self.cost.append((replica.prefill_s_per_token, replica.decode_s_per_token))

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


class _WorkRouter:
    """A router that counts each replica's outstanding predicted seconds (:class:`_WorkCounter`)
    over the replicas it may route to (:class:`Routable`)."""

    by_pool = False  # whether the routable positions are grouped by pool

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._work = _WorkCounter(replicas)
        self._routable = Routable(replicas, by_pool=self.by_pool)

    def left(self, index: int, rid: int) -> None:
        self._work.left(index, rid)

    def add(self, replica: ReplicaView) -> None:
        self._work.grow(replica)
        self._routable.add(replica)

    def set_routable(self, index: int, routable: bool) -> None:
        self._routable.set(index, routable)


class LeastWork(_WorkRouter):
    """Speed-weighted least work left: the replica with the least outstanding work.

    Each replica's outstanding work is counted in predicted seconds of its own pool, so an
    H200 replica counts the same requests as less work than an H100 one and takes more of
    them. Ties (idle replicas) go to the pool where the request itself is quickest, then to the
    lowest position. (Adding the request's own seconds to the comparison instead would steer
    long requests to fast pools and short ones to slow pools, so that the fast pool takes
    fewer requests, not more.)
    """

    by_pool = True

    def choose(self, req: Request) -> int:
        work, cost = self._work.work, self._work.cost
        best, best_key = 0, (float("inf"), 0.0)
        for positions in self._routable.pools.values():
            if not positions:
                continue
            index = min(positions, key=work.__getitem__)  # ties: the lowest position
            prefill_s, decode_s = cost[index]
            key = (work[index], req.prompt_tokens * prefill_s + req.output_tokens * decode_s)
            if key < best_key:
                best, best_key = index, key
        return self._work.add(req, best, best_key[1])


class PowerOfTwo(_WorkRouter):
    """Two replicas drawn at random (the ``router`` stream), the one with less work wins.

    Work as in :class:`LeastWork`: outstanding predicted seconds; ties go to the replica where
    the request is quicker, then to the lower position. Costs O(1) per request whatever the
    fleet's size.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        super().__init__(replicas, rng, prefix_block_tokens)
        self._rng = rng
        self._pairs: list[tuple[int, int]] = []

    def _pair(self) -> tuple[int, int]:
        """Two distinct routable positions, uniformly at random."""
        if not self._pairs:
            n = len(self._routable.all)
            first = self._rng.integers(0, n, RANDOM_BLOCK)
            second = self._rng.integers(0, n - 1, RANDOM_BLOCK)
            second += second >= first  # skip the first: distinct, still uniform
            self._pairs = list(zip(first.tolist(), second.tolist(), strict=True))[::-1]
        i, j = self._pairs.pop()
        routable = self._routable.all
        return routable[i], routable[j]

    def choose(self, req: Request) -> int:
        work = self._work
        if len(self._routable.all) == 1:
            index = self._routable.all[0]
            return work.add(req, index, work.seconds(req, index))
        a, b = sorted(self._pair())
        seconds_a, seconds_b = work.seconds(req, a), work.seconds(req, b)
        if (work.work[b], seconds_b) < (work.work[a], seconds_a):
            return work.add(req, b, seconds_b)
        return work.add(req, a, seconds_a)

    def set_routable(self, index: int, routable: bool) -> None:
        """Pairs drawn over the old routable set are dropped: they index it."""
        super().set_routable(index, routable)
        self._pairs = []


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
        self._block_tokens = prefix_block_tokens
        self._load = [0] * len(replicas)  # prompt tokens of the requests each replica holds
        self._held: dict[int, dict[int, float]] = {}  # block hash -> {position: last taken, s}
        self._routed: dict[int, int] = {}  # request id -> its prompt tokens
        self._routable = Routable(replicas)

    def choose(self, req: Request) -> int:
        cached = self._cached_tokens(req)
        costs = [load - saved for load, saved in zip(self._load, cached, strict=True)]
        routable = self._routable.all
        if len(routable) == len(costs):
            index = costs.index(min(costs))
        else:
            index = min(routable, key=costs.__getitem__)
        self._load[index] += req.prompt_tokens
        self._routed[req.rid] = req.prompt_tokens
        for block in req.prefix_hashes:
            self._held.setdefault(block, {})[index] = req.arrival_s
        return index

    def _cached_tokens(self, req: Request) -> list[int]:
        """Prompt tokens of `req` each replica probably holds: its leading prefix blocks."""
        cached = [0] * len(self._load)
        live = range(len(self._load))
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

    def add(self, replica: ReplicaView) -> None:
        """A new replica holds no prefix block yet."""
        self._load.append(0)
        self._routable.add(replica)

    def set_routable(self, index: int, routable: bool) -> None:
        self._routable.set(index, routable)


class CheapestFirst:
    """Fill the pool with the lowest cost per token first; spill when its replicas are full.

    A pool's cost per output token is its replicas' price per hour times the predicted seconds
    per output token of a full batch (prefill pools: per prompt token). The cheapest pool whose
    least loaded replica has a free slot (fewer outstanding requests than its batcher's slots)
    takes the request, on that replica. When every replica is full, the replica with the fewest
    requests beyond its slots takes it (ties to the cheaper pool). Pools of equal cost keep
    their order.
    """

    def __init__(
        self, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
    ) -> None:
        self._loads = [r.outstanding for r in replicas]
        self._slots = [r.slots for r in replicas]
        self._routable = Routable(replicas, by_pool=True)
        self._usd_per_token: dict[int, float] = {}
        for view in replicas:
            self._price(view)

    def _price(self, view: ReplicaView) -> None:
        """Rank the pools again by cost per output token (a prefill pool's replicas decode
        nothing: per prompt token), `view`'s pool included."""
        assert view.usd_per_hour is not None  # the schema asks [economics] of this router
        seconds = view.decode_s_per_token or view.prefill_s_per_token
        self._usd_per_token.setdefault(view.pool, view.usd_per_hour * seconds)
        self._order = sorted(self._usd_per_token, key=self._usd_per_token.__getitem__)

    def choose(self, req: Request) -> int:
        loads, pools = self._loads, self._routable.pools
        best, best_excess = 0, None
        for pool in self._order:
            positions = pools[pool]
            if not positions:
                continue
            index = min(positions, key=loads.__getitem__)  # ties: the lowest position
            excess = loads[index] - self._slots[index]
            if excess < 0:
                best = index
                break
            if best_excess is None or excess < best_excess:
                best, best_excess = index, excess
        loads[best] += 1
        return best

    def left(self, index: int, rid: int) -> None:
        self._loads[index] -= 1

    def add(self, replica: ReplicaView) -> None:
        self._loads.append(0)
        self._slots.append(replica.slots)
        self._routable.add(replica)
        self._price(replica)

    def set_routable(self, index: int, routable: bool) -> None:
        self._routable.set(index, routable)


ROUTERS: dict[str, type] = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "central_queue": CentralQueue,
    "least_work": LeastWork,
    "power_of_two": PowerOfTwo,
    "prefix_affinity": PrefixAffinity,
    "cheapest_first": CheapestFirst,
    "pack": Pack,
}


def make_router(
    name: str, replicas: Sequence[ReplicaView], rng: np.random.Generator, prefix_block_tokens: int
) -> Router:
    """The router registered under `name`, over `replicas` (`rng`: its random stream;
    `prefix_block_tokens`: the tokens each of a request's prefix hashes stands for)."""
    return ROUTERS[name](replicas, rng, prefix_block_tokens)
