"""The fleet: every pool's replicas, the routers that spread requests over them, held queues.

The arrival feed hands each request to :meth:`Fleet.submit`, which passes it to the group of
replicas that serve the model its class needs; that group's router picks a replica or holds the
request in the group's FIFO queue. Each time a request leaves a replica (finished or rejected)
the replica's batcher calls the group's departure hook: the group tells its router and, while
requests are held, dispatches them at the same simulated time through an URGENT event (an
event rather than a direct call, so that no request enters a batcher in the middle of its own
bookkeeping). The recorder only records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy
from simpy.core import URGENT

from sim.batching import make_batcher
from sim.perf import make_step_time_model
from sim.recorder import Recorder
from sim.replica import Replica, ReplicaView
from sim.request import Request
from sim.router import Router, make_router
from sim.runspec import RunSpec


def schedule_urgent(
    env: simpy.Environment, at_s: float, callback: Callable[[simpy.Event], None]
) -> None:
    """Call `callback` at `at_s` from an URGENT event (before NORMAL events at that time).

    A bare event with a callback rather than a SimPy process: it skips the generator resumption.
    """
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(callback)
    env.schedule(event, URGENT, at_s - env.now)


class Fleet:
    """The replicas of every pool of `spec`, numbered across pools, in one group per model.

    Each group (the pools that serve one model) has its own router and held queue; a request
    goes to the group of its class's model, so it reaches only a pool that serves that model.
    perf_seeds: one seed sequence per replica (fleet-wide index) for its step-time model;
    router_seed: the ``router`` stream, split into one generator per group;
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
        models = spec.models()
        router_rngs = [np.random.default_rng(s) for s in router_seed.spawn(len(models))]
        self.replicas: list[Replica] = []
        self.groups: list[RouteGroup] = []
        for model, rng in zip(models, router_rngs, strict=True):
            group = RouteGroup(env, recorder)
            views = []
            for pool in (p for p in spec.pools if p.model == model):
                for index in pool.replica_indices:
                    departed = partial(group.left, len(group.replicas))
                    replica = Replica(
                        env,
                        index,
                        make_batcher(pool, recorder, departed, prefix_block_tokens),
                        make_step_time_model(pool, np.random.default_rng(perf_seeds[index])),
                        recorder,
                        spec.scenario.sim.step_compression,
                        departed,
                    )
                    group.replicas.append(replica)
                    views.append(ReplicaView(replica, pool))
            group.router = make_router(spec.router, views, rng, prefix_block_tokens)
            self.groups.append(group)
            self.replicas += group.replicas
        self.replicas.sort(key=lambda r: r.index)
        self._class_groups = [self.groups[models.index(m)] for m in spec.class_models]
        if len(self.groups) == 1:  # one model: every request goes straight to its group
            self.submit = self.groups[0].submit  # type: ignore[method-assign]

    def submit(self, req: Request) -> None:
        """An arrived request: to the group that serves its class's model."""
        self._class_groups[req.class_index].submit(req)


class RouteGroup:
    """The replicas that serve one model, their router and their held FIFO queue."""

    def __init__(self, env: simpy.Environment, recorder: Recorder) -> None:
        self.env, self.recorder = env, recorder
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
            self.recorder.replica[req.rid] = replica.index
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
            self.recorder.replica[req.rid] = replica.index
            replica.submit(req)
