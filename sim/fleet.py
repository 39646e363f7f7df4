"""The fleet: every pool's replicas, the routers that spread requests over them, held queues.

The arrival feed hands each request to :meth:`Fleet.submit`, which passes it to the group of
replicas that serve the model its class needs; that group's router picks a replica or holds the
request in the group's FIFO queue (a model served by prefill and decode pools goes through
:mod:`sim.disaggregation` first). Each time a request leaves a replica (finished or rejected)
the replica's batcher calls the group's departure hook: the group tells its router and, while
requests are held, dispatches them at the same simulated time through an URGENT event (an
event rather than a direct call, so that no request enters a batcher in the middle of its own
bookkeeping). The recorder only records.

Over time (:mod:`sim.lifecycle`) each pool's replicas come and go: the fleet makes new
replicas (the next fleet-wide index, the next position in their group's router), rebuilds a
repaired one, and its groups take routable replicas in and out and restart the requests of a
failed one. A fleet whose pools never change does none of this.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy

from sim.background import Lender
from sim.batching import Batcher, make_batcher
from sim.disaggregation import Disaggregation, split_pools
from sim.events import schedule_urgent
from sim.failures import Clocks
from sim.fleet_config import COLOCATED
from sim.lifecycle import PoolReplicas
from sim.perf import StepTimeModel, make_step_time_model
from sim.recorder import Recorder
from sim.replica import Replica, ReplicaView
from sim.request import Request
from sim.router import Router, make_router
from sim.runspec import PoolSpec, RunSpec

__all__ = ["Fleet", "RouteGroup", "schedule_urgent"]

# makes the batcher of replica `index` of a pool, given its departure hook
BatcherFactory = Callable[[PoolSpec, int, Callable[[int], None]], Batcher]
Place = tuple[PoolSpec, "RouteGroup", int]  # a replica's pool, route group and position in it


class Fleet:
    """The replicas of every pool of `spec`, numbered across pools, in one group per model.

    Each group (the pools that serve one model) has its own router and held queue; a request
    goes to the group of its class's model, so it reaches only a pool that serves that model.
    A model served by prefill and decode pools has one group of each, joined by a
    :class:`~sim.disaggregation.Disaggregation`.
    perf_seed: the ``perf`` stream, one child per replica (fleet-wide index) for its step-time
    model; router_seed: the ``router`` stream, split into one generator per model (a
    disaggregated model's split again, for its prefill and its decode router);
    prefix_block_tokens: the block size of the workload's prefix hashes; failure_seed and
    reclaim_seed: the ``failures`` and ``reclaims`` streams (:mod:`sim.failures`).
    """

    def __init__(
        self,
        env: simpy.Environment,
        spec: RunSpec,
        recorder: Recorder,
        perf_seed: np.random.SeedSequence,
        router_seed: np.random.SeedSequence,
        prefix_block_tokens: int,
        failure_seed: np.random.SeedSequence | None = None,
        reclaim_seed: np.random.SeedSequence | None = None,
    ) -> None:
        self.env, self.spec, self.recorder = env, spec, recorder
        self._perf_seed, self._prefix_block_tokens = perf_seed, prefix_block_tokens
        background = spec.scenario.fleet.background
        self.lender = Lender(env, background, self) if background is not None else None
        models = spec.models()
        self._perf_seeds = perf_seed.spawn(spec.num_replicas)
        self._batchers: dict[int, BatcherFactory] = {}  # by pool index
        self._places: dict[int, Place] = {}  # by replica index
        self.replicas: list[Replica] = []
        self.groups: list[RouteGroup | Disaggregation] = []
        for model, seed in zip(models, router_seed.spawn(len(models)), strict=True):
            pools = [p for p in spec.pools if p.model == model]
            if pools[0].role == COLOCATED:
                rng = np.random.default_rng(seed)
                self.groups.append(self._group(pools, rng, recorder.replica, self._batcher))
            else:
                self.groups.append(self._disaggregated(pools, seed))
        self.replicas.sort(key=lambda r: r.index)
        self._class_groups = [self.groups[models.index(m)] for m in spec.class_models]
        groups = {p.index: self._places[p.first_replica][1] for p in spec.pools if p.replicas}
        for pool in spec.pools:  # a pool without replicas at the start: its model's group
            groups.setdefault(pool.index, self.groups[models.index(pool.model)])
        self.pools = [
            PoolReplicas(self, p, groups[p.index], _clocks(p, failure_seed, reclaim_seed))
            for p in spec.pools
        ]
        self.total_requests = len(recorder.workload)
        self._drain = spec.scenario.sim.drain
        if len(self.groups) == 1:  # one model: every request goes straight to its group
            self.submit = self.groups[0].submit  # type: ignore[method-assign]

    def submit(self, req: Request) -> None:
        """An arrived request: to the group that serves its class's model."""
        self._class_groups[req.class_index].submit(req)

    def _batcher(self, pool: PoolSpec, index: int, departed: Callable[[int], None]) -> Batcher:
        """The batcher of a colocated replica."""
        return make_batcher(pool, self.recorder, departed, self._prefix_block_tokens)

    def _group(
        self,
        pools: list[PoolSpec],
        rng: np.random.Generator,
        placed: array,
        batcher: BatcherFactory,
    ) -> RouteGroup:
        """The replicas of `pools` (batchers from `batcher(pool, index, departed)`) under one
        router; each routed request's replica is written to `placed`, a recorder column."""
        group = RouteGroup(self.env, self.recorder, placed)
        views = []
        for pool in pools:
            self._batchers[pool.index] = batcher
            for index in pool.replica_indices:
                position = len(group.replicas)
                self._places[index] = (pool, group, position)
                perf = make_step_time_model(pool, np.random.default_rng(self._perf_seeds[index]))
                group.replicas.append(self._make(pool, index, group, position, perf))
                views.append(ReplicaView(group.replicas[-1], pool))
        group.router = make_router(self.spec.router, views, rng, self._prefix_block_tokens)
        group.routable = len(views)
        self.replicas += group.replicas
        return group

    def _disaggregated(self, pools: list[PoolSpec], seed: np.random.SeedSequence) -> Disaggregation:
        """A model's prefill and decode pools, each under its own router, joined."""
        assert self.spec.interconnect is not None  # resolved for fleets with prefill pools
        split = Disaggregation(
            self.env, self.recorder, self.spec.interconnect, pools, self._prefix_block_tokens
        )
        prefill_rng, decode_rng = (np.random.default_rng(s) for s in seed.spawn(2))
        prefill_pools, decode_pools = split_pools(pools)
        rec = self.recorder
        split.connect(
            self._group(prefill_pools, prefill_rng, rec.prefill_replica, split.prefill_batcher),
            self._group(decode_pools, decode_rng, rec.decode_replica, split.decode_batcher),
        )
        return split

    def start(self) -> None:
        """Record the fleet at time 0 (every pool's replicas and spares)."""
        for pool in self.pools:
            pool.start()

    def finished(self) -> bool:
        """Whether a drained run is over: every request has completed or been rejected. (Then
        the fleet changes no more, so that the run ends; an undrained run goes on changing
        until its horizon.)"""
        rec = self.recorder
        return self._drain and rec.num_completed + rec.num_rejected == self.total_requests

    # ------------------------------------------------------------------ replicas over time
    def _make(
        self, pool: PoolSpec, index: int, group: RouteGroup, position: int, perf: StepTimeModel
    ) -> Replica:
        """Replica `index` of `pool` at `position` of its group, with step-time model `perf`."""
        departed = partial(group.left, position)
        replica = Replica(
            self.env,
            index,
            self._batchers[pool.index](pool, index, departed),
            perf,
            self.recorder,
            self.spec.scenario.sim.step_compression,
            departed,
        )
        replica.lender = self.lender
        return replica

    def position(self, index: int) -> int:
        """Replica `index`'s position in its group's router."""
        return self._places[index][2]

    def pool_of(self, index: int) -> PoolReplicas:
        """The pool of replica `index`."""
        return self.pools[self._places[index][0].index]

    def departure_hook(self, index: int) -> Callable[[int], None]:
        """What replica `index` calls when a request leaves it (its group's hook)."""
        _, group, position = self._places[index]
        return partial(group.left, position)

    def add_replica(self, pool: PoolSpec) -> Replica:
        """A new replica of `pool`: the next fleet-wide index and router position, not routable."""
        group = self.pools[pool.index].group
        index, position = len(self.replicas), len(group.replicas)
        rng = np.random.default_rng(self._perf_seed.spawn(1)[0])
        replica = self._make(pool, index, group, position, make_step_time_model(pool, rng))
        self._places[index] = (pool, group, position)
        self.replicas.append(replica)
        group.replicas.append(replica)
        group.router.add(ReplicaView(replica, pool))
        if self.recorder.pools is not None:
            self.recorder.pools.append(pool.name)
        return replica

    def rebuild(self, index: int) -> Replica:
        """Replica `index` after a repair: an empty batcher and KV cache, its step-time model
        (and random stream) kept."""
        pool, group, position = self._places[index]
        replica = self._make(pool, index, group, position, self.replicas[index].perf)
        self.replicas[index] = group.replicas[position] = replica
        return replica


def _clocks(
    pool: PoolSpec,
    failure_seed: np.random.SeedSequence | None,
    reclaim_seed: np.random.SeedSequence | None,
) -> Clocks | None:
    """The failure and reclaim clocks of a pool that has either (None otherwise)."""
    life = pool.lifecycle
    if life.failures is None and life.reclaim is None:
        return None
    assert failure_seed is not None and reclaim_seed is not None
    return Clocks(life.failures, life.reclaim, failure_seed, reclaim_seed)


class RouteGroup:
    """Replicas under one router, with its held FIFO queue: the pools that serve one model (or
    a disaggregated model's prefill or decode pools).

    placed: the recorder column that gets each routed request's replica; routable: how many
    of the replicas take requests (while none does, arrivals are held).
    """

    def __init__(self, env: simpy.Environment, recorder: Recorder, placed: array) -> None:
        self.env, self.recorder, self.placed = env, recorder, placed
        self.replicas: list[Replica] = []
        self.router: Router
        self.routable = 0
        self.held: deque[Request] = deque()
        self._dispatch_pending = False

    def submit(self, req: Request) -> None:
        """Route a request to a replica, or hold it behind those already held."""
        # nobody overtakes a held one
        index = None if self.held or not self.routable else self.router.choose(req)
        if index is None:
            self.held.append(req)
        else:
            replica = self.replicas[index]
            self.placed[req.rid] = replica.index
            replica.submit(req)

    def left(self, index: int, rid: int) -> None:
        """Request `rid` left the replica at `index`: tell the router; dispatch held ones soon."""
        self.router.left(index, rid)
        if self.held and not self._dispatch_pending:
            self._dispatch_soon()

    def _dispatch_soon(self) -> None:
        self._dispatch_pending = True
        schedule_urgent(self.env, self.env.now, self._dispatch_held)

    def _dispatch_held(self, _event: simpy.Event) -> None:
        """Route held requests, oldest first, while the router finds them a replica."""
        self._dispatch_pending = False
        held, choose = self.held, self.router.choose
        while held and self.routable and (index := choose(held[0])) is not None:
            req = held.popleft()
            replica = self.replicas[index]
            self.placed[req.rid] = replica.index
            replica.submit(req)

    # ------------------------------------------------------------------ replicas over time
    def set_routable(self, position: int, routable: bool) -> None:
        """The replica at `position` starts or stops taking requests; held ones go to it."""
        self.router.set_routable(position, routable)
        self.routable += 1 if routable else -1
        if routable and self.held and not self._dispatch_pending:
            self._dispatch_soon()

    def evict(self, position: int, replica: Replica) -> list[Request]:
        """Stop the replica at `position` (failed, or reclaimed): the requests inside, which
        have left it for its router."""
        requests = replica.stop()
        for req in requests:
            self.router.left(position, req.rid)
        return requests

    def resubmit(self, requests: list[Request]) -> None:
        """Requests whose replica stopped start over (prefill again), in arrival order among
        those held."""
        if not requests:
            return
        for req in requests:
            self.recorder.restarted(req.rid)
        restarted = [req.restarted() for req in requests]
        self.held = deque(sorted([*self.held, *restarted], key=lambda r: r.rid))
        self._dispatch_held(None)  # type: ignore[arg-type]
