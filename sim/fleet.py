"""The fleet: every pool's replicas, the router that spreads requests over them, the held queue.

The arrival feed hands each request to :meth:`Fleet.submit`; the router picks a replica or
holds the request in the fleet's FIFO queue. Each time a request leaves a replica (finished or
rejected) the replica's batcher calls the fleet's departure hook: the fleet tells the router and,
while requests are held, dispatches them at the same simulated time through an URGENT event
(an event rather than a direct call, so that no request enters a batcher in the middle of its
own bookkeeping). The recorder only records.
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
from sim.router import make_router
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
    """The replicas of every pool of `spec`, numbered across pools, with the router.

    perf_seeds: one seed sequence per replica (fleet-wide index) for its step-time model;
    prefix_block_tokens: the block size of the workload's prefix hashes.
    """

    def __init__(
        self,
        env: simpy.Environment,
        spec: RunSpec,
        recorder: Recorder,
        perf_seeds: list[np.random.SeedSequence],
        prefix_block_tokens: int,
    ) -> None:
        self.env, self.recorder = env, recorder
        compress = spec.scenario.sim.step_compression
        self.replicas: list[Replica] = []
        views: list[ReplicaView] = []
        for pool in spec.pools:
            for index in pool.replica_indices:
                departed = partial(self.left, index)
                replica = Replica(
                    env,
                    index,
                    make_batcher(pool, recorder, departed, prefix_block_tokens),
                    make_step_time_model(pool, np.random.default_rng(perf_seeds[index])),
                    recorder,
                    compress,
                    departed,
                )
                self.replicas.append(replica)
                views.append(ReplicaView(replica, pool.index))
        self.router = make_router(spec.router, views)
        self.held: deque[Request] = deque()
        self._dispatch_pending = False

    def submit(self, req: Request) -> None:
        """An arrived request: route it to a replica, or hold it behind those already held."""
        index = None if self.held else self.router.choose(req)  # nobody overtakes a held one
        if index is None:
            self.held.append(req)
        else:
            self.recorder.replica[req.rid] = index
            self.replicas[index].submit(req)

    def left(self, index: int) -> None:
        """A request left replica `index`: tell the router; dispatch held requests soon."""
        self.router.left(index)
        if self.held and not self._dispatch_pending:
            self._dispatch_pending = True
            schedule_urgent(self.env, self.env.now, self._dispatch_held)

    def _dispatch_held(self, _event: simpy.Event) -> None:
        """Route held requests, oldest first, while the router finds them a replica."""
        self._dispatch_pending = False
        held, choose = self.held, self.router.choose
        while held and (index := choose(held[0])) is not None:
            req = held.popleft()
            self.recorder.replica[req.rid] = index
            self.replicas[index].submit(req)
