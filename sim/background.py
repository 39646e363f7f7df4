"""Idle serving replicas lent to background work (training, batch jobs); serving comes first.

A serving replica that has held no request for ``idle_after_s`` seconds starts background work
(``serving -> background`` in fleet.parquet). It stays routable: the first request routed to it
takes it back (``background -> serving``, cause ``request``), and the replica hands its GPUs
back for ``preemption_s`` seconds before it schedules that request, so no request waits longer
than ``preemption_s`` for background work. Which replicas stay idle long enough is the router's
doing: ``pack`` fills each replica's slots before the next one's, so at low load the last
replicas stay idle; routers that spread the load (least_outstanding, least_work) leave a
replica idle only when the fleet holds fewer requests than it has replicas. The value of the
work done is computed by ``analysis.fleet`` from the background periods (each ended by
anything but the end of the run loses ``restart_loss_s`` of work since its last checkpoint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from sim.fleet_config import BackgroundConfig

if TYPE_CHECKING:
    from sim.fleet import Fleet
    from sim.replica import Replica


class Lender:
    """Lends idle replicas of `fleet` to background work as `cfg` says."""

    def __init__(self, env: simpy.Environment, cfg: BackgroundConfig, fleet: Fleet) -> None:
        self.env, self.cfg, self.fleet = env, cfg, fleet

    def lend(self, replica: Replica, wake: simpy.Event):
        """Wait for `wake` (a request); an idle serving replica runs background work meanwhile
        and takes `preemption_s` to give its GPUs back."""
        env, pool = self.env, self.fleet.pool_of(replica.index)
        while True:
            if self.fleet.finished():
                yield wake
                return
            yield wake | env.timeout(self.cfg.idle_after_s)
            if wake.triggered:
                return
            if pool.lend(replica.index):
                break
        yield wake
        pool.take_back(replica.index)
        yield env.timeout(self.cfg.preemption_s)
