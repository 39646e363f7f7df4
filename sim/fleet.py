"""The fleet: every pool's replicas, the routers that spread requests over them, held queues.

The arrival feed hands each request to :meth:`Fleet.submit`, which passes it to the group of
replicas that serve the model its class needs; that group's router picks a replica or holds the
request in the group's FIFO queue. Each time a request leaves a replica (finished or rejected)
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

from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy

from sim.background import Lender
from sim.batching import make_batcher
from sim.events import schedule_urgent
from sim.failures import Clocks
from sim.lifecycle import PoolReplicas
from sim.perf import StepTimeModel, make_step_time_model
from sim.recorder import Recorder
from sim.replica import Replica, ReplicaView
from sim.request import Request
from sim.router import Router, make_router
from sim.runspec import PoolSpec, RunSpec

__all__ = ["Fleet", "RouteGroup", "schedule_urgent"]


class Fleet:
    """The replicas of every pool of `spec`, numbered across pools, in one group per model.

    Each group (the pools that serve one model) has its own router and held queue; a request
    goes to the group of its class's model, so it reaches only a pool that serves that model.
    perf_seed: the ``perf`` stream, one child per replica (fleet-wide index) for its step-time
    model; router_seed: the ``router`` stream, split into one generator per group;
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
        router_rngs = [np.random.default_rng(s) for s in router_seed.spawn(len(models))]
        perf_seeds = perf_seed.spawn(spec.num_replicas)
        self.replicas: list[Replica] = []
        self.groups: list[RouteGroup] = []
        self._places: list[tuple[PoolSpec, RouteGroup, int]] = []  # by index: pool, group, position
        places: dict[int, tuple[PoolSpec, RouteGroup, int]] = {}
        for model, rng in zip(models, router_rngs, strict=True):
            group = RouteGroup(env, recorder)
            views = []
            for pool in (p for p in spec.pools if p.model == model):
                for index in pool.replica_indices:
                    places[index] = (pool, group, len(group.replicas))
                    perf = make_step_time_model(pool, np.random.default_rng(perf_seeds[index]))
                    replica = self._make(pool, index, group, len(group.replicas), perf)
                    group.replicas.append(replica)
                    views.append(ReplicaView(replica, pool))
            group.router = make_router(spec.router, views, rng, prefix_block_tokens)
            group.routable = len(views)
            self.groups.append(group)
            self.replicas += group.replicas
        self.replicas.sort(key=lambda r: r.index)
        self._places = [places[i] for i in range(len(self.replicas))]
        self._class_groups = [self.groups[models.index(m)] for m in spec.class_models]
        groups = {p.index: places[p.first_replica][1] for p in spec.pools if p.replicas}
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
            make_batcher(pool, self.recorder, departed, self._prefix_block_tokens),
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
        self._places.append((pool, group, position))
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
    """The replicas that serve one model, their router and their held FIFO queue.

    routable: how many of them take requests; while none does, arrivals are held.
    """

    def __init__(self, env: simpy.Environment, recorder: Recorder) -> None:
        self.env, self.recorder = env, recorder
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
            self.recorder.replica[req.rid] = replica.index
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
            self.recorder.replica[req.rid] = replica.index
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
