"""The fleet: every pool's replicas, the routers that spread requests over them, held queues.

The arrival feed hands each request to :meth:`Fleet.submit`, which passes it to the group of
replicas that serve the model its class needs; that group's router picks a replica or holds the
request in the group's FIFO queue (a model served by prefill and decode pools goes through
:mod:`sim.disaggregation` first). Each time a request leaves a replica (finished or rejected)
the replica's batcher calls the group's departure hook: the group tells its router and, while
requests are held, dispatches them at the same simulated time through an URGENT event (an
event rather than a direct call, so that no request enters a batcher in the middle of its own
bookkeeping). The recorder only records.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy

from sim.batching import Batcher, make_batcher
from sim.disaggregation import Disaggregation, split_pools
from sim.events import urgent_after
from sim.perf import make_step_time_model
from sim.recorder import Recorder
from sim.replica import Replica, ReplicaView
from sim.request import Request
from sim.router import Router, make_router
from sim.runspec import PoolSpec, RunSpec
from sim.scenario import COLOCATED


def schedule_urgent(
    env: simpy.Environment, at_s: float, callback: Callable[[simpy.Event], None]
) -> None:
    """Call `callback` at `at_s` from an URGENT event (before NORMAL events at that time)."""
    urgent_after(env, at_s - env.now, callback)


class Fleet:
    """The replicas of every pool of `spec`, numbered across pools, in one group per model.

    Each group (the pools that serve one model) has its own router and held queue; a request
    goes to the group of its class's model, so it reaches only a pool that serves that model.
    A model served by prefill and decode pools has one group of each, joined by a
    :class:`~sim.disaggregation.Disaggregation`.
    perf_seeds: one seed sequence per replica (fleet-wide index) for its step-time model;
    router_seed: the ``router`` stream, split into one generator per model (a disaggregated
    model's split again, for its prefill and its decode router);
    prefix_block_tokens: the block size of the workload's prefix hashes.
    """

    def __init__(
        self,
        env: simpy.Environment,
        spec: RunSpec,
        recorder: Recorder,
        perf_seeds: list[np.random.SeedSequence],
        router_seed: np.random.SeedSequence,
        prefix_block_tokens: int,
    ) -> None:
        self.env, self.spec, self.recorder = env, spec, recorder
        self._perf_seeds, self._prefix_block_tokens = perf_seeds, prefix_block_tokens
        models = spec.models()
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
        batcher: Callable[[PoolSpec, int, Callable[[int], None]], Batcher],
    ) -> RouteGroup:
        """The replicas of `pools` (batchers from `batcher(pool, index, departed)`) under one
        router; each routed request's replica is written to `placed`, a recorder column."""
        group = RouteGroup(self.env, placed)
        views = []
        for pool in pools:
            for index in pool.replica_indices:
                departed = partial(group.left, len(group.replicas))
                replica = Replica(
                    self.env,
                    index,
                    batcher(pool, index, departed),
                    make_step_time_model(pool, np.random.default_rng(self._perf_seeds[index])),
                    self.recorder,
                    self.spec.scenario.sim.step_compression,
                    departed,
                )
                group.replicas.append(replica)
                views.append(ReplicaView(replica, pool))
        group.router = make_router(self.spec.router, views, rng, self._prefix_block_tokens)
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


class RouteGroup:
    """Replicas under one router, with its held FIFO queue: the pools that serve one model (or
    a disaggregated model's prefill or decode pools). `placed`: the recorder column that gets
    each routed request's replica."""

    def __init__(self, env: simpy.Environment, placed: array) -> None:
        self.env, self.placed = env, placed
        self.replicas: list[Replica] = []
        self.router: Router
        self.held: deque[Request] = deque()
        self._dispatch_pending = False

    def submit(self, req: Request) -> None:
        """Route a request to a replica, or hold it behind those already held."""
        index = None if self.held else self.router.choose(req)  # nobody overtakes a held one
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
            self._dispatch_pending = True
            schedule_urgent(self.env, self.env.now, self._dispatch_held)

    def _dispatch_held(self, _event: simpy.Event) -> None:
        """Route held requests, oldest first, while the router finds them a replica."""
        self._dispatch_pending = False
        held, choose = self.held, self.router.choose
        while held and (index := choose(held[0])) is not None:
            req = held.popleft()
            replica = self.replicas[index]
            self.placed[req.rid] = replica.index
            replica.submit(req)
