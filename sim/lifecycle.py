"""A pool's replicas over time: provisioning, loading, serving, draining, gone; failed.

:class:`PoolReplicas` holds the state of every replica of one pool and makes each change of
state, recording it as a row of ``fleet.parquet`` (time, pool, replica, from, to, cause). Only
``serving`` replicas (and idle ones lent to background work, which a request takes back) are
routable. Rules, in the order a replica meets them (docs/fleet.md, "Over time"):

* A new replica (the next fleet-wide index) is ``provisioning`` for the pool's ``provision_s``,
  then ``loading`` for its ``load_s``, then ``serving`` if the pool has fewer serving replicas
  than it wants, else ``standby`` if it has fewer than its ``spare``, else ``gone``.
* Scale-out (:meth:`PoolReplicas.scale_to`) first takes back replicas that are draining for a
  scale-in, then promotes standby replicas, then provisions; scale-in first cancels replicas
  still starting, then drains the serving replicas with the fewest requests inside (ties: the
  newest). A draining replica takes no request and is ``gone`` when its last one leaves.
* A failure stops the replica at once: its running and queued requests start over on other
  replicas (:meth:`sim.fleet.RouteGroup.resubmit`), a standby replica (if any) is promoted, and
  after its repair time the replica (same index, empty KV cache) loads again.
* A spot reclaim notice drains the replica for the notice time; what is still inside when the
  time is up starts over elsewhere. A pool without autoscaling provisions a replacement at the
  notice.

Failures and reclaims apply to replicas that are up (loaded: serving, lent, standing by or
draining). Every change is an URGENT event, so at one simulated time it comes before any
iteration boundary; nothing changes once every request of the run has left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from sim.events import schedule_urgent
from sim.recorder import CAUSE_NAMES, STATE_NAMES

if TYPE_CHECKING:
    from sim.failures import Clocks
    from sim.fleet import Fleet, RouteGroup
    from sim.runspec import PoolSpec

NONE, PROVISIONING, LOADING, SERVING, BACKGROUND, STANDBY, DRAINING, FAILED, GONE = range(
    len(STATE_NAMES)
)
CAUSE = {name: code for code, name in enumerate(CAUSE_NAMES)}
LIVE = frozenset((SERVING, BACKGROUND))  # routable
UP = frozenset((SERVING, BACKGROUND, STANDBY, DRAINING))  # loaded: can fail or be reclaimed
STARTING = (PROVISIONING, LOADING)


class PoolReplicas:
    """The replicas of one pool and their states; `target`: the serving replicas it wants.

    `clocks` draws failure, repair and reclaim times (None: the pool has neither).
    """

    def __init__(
        self, fleet: Fleet, pool: PoolSpec, group: RouteGroup, clocks: Clocks | None
    ) -> None:
        self.env: simpy.Environment = fleet.env
        self.fleet, self.pool, self.group, self.clocks = fleet, pool, group, clocks
        self.life = pool.lifecycle
        self.target = pool.replicas
        self.state: dict[int, int] = {}
        self._version: dict[int, int] = {}  # changes with every state: stale timers see it
        self._epoch: dict[int, int] = {}  # changes when a replica goes down: stale clocks see it
        self._reclaiming: set[int] = set()
        self.autoscaled = pool.lifecycle.autoscale is not None

    # ------------------------------------------------------------------ queries
    def members(self, *states: int) -> list[int]:
        """Indices of the replicas in any of `states`, increasing."""
        return sorted(i for i, s in self.state.items() if s in states)

    def count(self, *states: int) -> int:
        return sum(1 for s in self.state.values() if s in states)

    @property
    def live(self) -> int:
        """Replicas taking requests."""
        return self.count(SERVING, BACKGROUND)

    # ------------------------------------------------------------------ the start
    def start(self) -> None:
        """The pool at time 0: its replicas serving (routable since the router was built) and
        its spares standing by."""
        for index in self.pool.replica_indices:
            self._enter(index, SERVING, "initial", routing=False)
        for _ in range(self.life.spare):
            self._enter(self.fleet.add_replica(self.pool).index, STANDBY, "initial")

    # ------------------------------------------------------------------ changes
    def _enter(self, index: int, to: int, cause: str, routing: bool = True) -> None:
        """Move replica `index` to state `to`: record it, update routing and the clocks."""
        was = self.state.get(index, NONE)
        self.state[index] = to
        self._version[index] = self._version.get(index, 0) + 1
        self.fleet.recorder.transition(self.env.now, self.pool.index, index, was, to, CAUSE[cause])
        if routing and (was in LIVE) != (to in LIVE):
            self.group.set_routable(self.fleet.position(index), to in LIVE)
        if was in UP and to not in UP:
            self._epoch[index] = self._epoch.get(index, 0) + 1
        elif to in UP and was not in UP:
            self._start_clocks(index)

    def _after(self, delay_s: float, index: int, then: Callable[[int], None]) -> None:
        """Call `then(index)` in `delay_s` seconds unless the replica changed state meanwhile."""
        version = self._version[index]

        def fire(_event: simpy.Event) -> None:
            if self._version[index] == version and not self.fleet.finished():
                then(index)

        schedule_urgent(self.env, self.env.now + delay_s, fire)

    def _provision(self, cause: str) -> None:
        """A new replica of the pool, provisioning."""
        index = self.fleet.add_replica(self.pool).index
        self._enter(index, PROVISIONING, cause)
        self._after(self.life.provision_s, index, self._provisioned)

    def _provisioned(self, index: int) -> None:
        self._enter(index, LOADING, "provisioned")
        self._after(self.life.load_s, index, self._loaded)

    def _loaded(self, index: int) -> None:
        """Serve if the pool wants more serving replicas, else stand by or go."""
        if self.live < self.target:
            self._enter(index, SERVING, "loaded")
        elif self.count(STANDBY) < self.life.spare:
            self._enter(index, STANDBY, "loaded")
        else:
            self._enter(index, GONE, "surplus")

    def _drain(self, index: int, cause: str) -> None:
        """Take no more requests; go when the last one inside leaves (at once if none)."""
        replica = self.fleet.replicas[index]
        if not replica.batcher.outstanding:
            self._enter(index, GONE, cause)
            return
        self._enter(index, DRAINING, cause)
        position = self.fleet.position(index)
        left = self.group.left

        def departed(rid: int) -> None:
            left(position, rid)
            if not replica.batcher.outstanding and self.state[index] == DRAINING:
                replica.set_departed(self.fleet.departure_hook(index))
                self._enter(index, GONE, "drained")

        replica.set_departed(departed)

    def _undrain(self, index: int) -> None:
        self.fleet.replicas[index].set_departed(self.fleet.departure_hook(index))
        self._enter(index, SERVING, "scale_up")

    def _promote_standby(self, cause: str) -> None:
        """A standby replica (the oldest) serves at once, if there is one."""
        standby = self.members(STANDBY)
        if standby:
            self._enter(standby[0], SERVING, cause)

    # ------------------------------------------------------------------ scaling
    def scale_to(self, serving: int) -> None:
        """Want `serving` serving replicas (and the pool's spares); act on the difference."""
        self.target = serving
        live = self.members(SERVING, BACKGROUND)
        if len(live) < serving:
            need = serving - len(live)
            draining = [i for i in self.members(DRAINING) if i not in self._reclaiming]
            for index in reversed(draining[-need:] if need else []):
                self._undrain(index)
                need -= 1
            for index in self.members(STANDBY)[:need]:
                self._enter(index, SERVING, "scale_up")
                need -= 1
            coming = self.count(*STARTING)
            for _ in range(need - coming):
                self._provision("scale_up")
            spares_coming = max(0, coming - need)
            for _ in range(self.life.spare - self.count(STANDBY) - spares_coming):
                self._provision("spare")
        elif len(live) > serving:
            spares_short = max(0, self.life.spare - self.count(STANDBY))
            for index in reversed(self.members(*STARTING)[spares_short:]):
                self._enter(index, GONE, "scale_down")  # cancelled while starting
            load = self.fleet.replicas
            victims = sorted(live, key=lambda i: (load[i].batcher.outstanding, -i))
            for index in victims[: len(live) - serving]:
                self._drain(index, "scale_down")

    # ------------------------------------------------------------------ failures, reclaims
    def _start_clocks(self, index: int) -> None:
        if self.clocks is None:
            return
        epoch = self._epoch.get(index, 0)
        failure_s = self.clocks.time_to_failure(index)
        if failure_s is not None:
            self._on_clock(failure_s, index, epoch, self.fail)
        reclaim_s = self.clocks.time_to_reclaim(index)
        if reclaim_s is not None:
            self._on_clock(reclaim_s, index, epoch, self.reclaim_notice)

    def _on_clock(
        self, delay_s: float, index: int, epoch: int, then: Callable[[int], None]
    ) -> None:
        """Call `then(index)` in `delay_s` seconds if the replica stays up until then."""

        def fire(_event: simpy.Event) -> None:
            if self._epoch.get(index, 0) == epoch and not self.fleet.finished():
                then(index)

        schedule_urgent(self.env, self.env.now + delay_s, fire)

    def fail(self, index: int) -> None:
        """Replica `index` fails: its requests start over elsewhere, a spare takes its place,
        and it is repaired, then loads again."""
        assert self.clocks is not None
        was = self.state[index]
        requests = self.group.evict(self.fleet.position(index), self.fleet.replicas[index])
        self._reclaiming.discard(index)
        self._enter(index, FAILED, "failure")
        self.group.resubmit(requests)
        if was in LIVE:
            self._promote_standby("failure")
        self._after(self.clocks.time_to_repair(index), index, self._repaired)

    def _repaired(self, index: int) -> None:
        self.fleet.rebuild(index)
        self._enter(index, LOADING, "repaired")
        self._after(self.life.load_s, index, self._loaded)

    def reclaim_notice(self, index: int) -> None:
        """The provider takes replica `index` back after the notice: it drains meanwhile."""
        assert self.life.reclaim is not None
        was = self.state[index]
        if was == STANDBY:
            self._enter(index, GONE, "reclaim_notice")
        else:
            self._reclaiming.add(index)
            if was in LIVE:
                self._drain(index, "reclaim_notice")
            epoch = self._epoch.get(index, 0)
            self._on_clock(self.life.reclaim.notice_s, index, epoch, self._reclaimed)
        if was in LIVE:
            self._promote_standby("reclaim_notice")
        if not self.autoscaled:
            self._provision("replace")

    def _reclaimed(self, index: int) -> None:
        """The notice is up: what is still inside starts over elsewhere."""
        requests = self.group.evict(self.fleet.position(index), self.fleet.replicas[index])
        self._reclaiming.discard(index)
        self._enter(index, GONE, "reclaimed")
        self.group.resubmit(requests)

    # ------------------------------------------------------------------ background work
    def lend(self, index: int) -> bool:
        """An idle serving replica starts background work; False if it is not serving."""
        if self.state[index] != SERVING or self.fleet.finished():
            return False
        self._enter(index, BACKGROUND, "idle")
        return True

    def take_back(self, index: int) -> None:
        """A request reached a replica lent to background work: it serves again."""
        if self.state[index] == BACKGROUND:
            self._enter(index, SERVING, "request")
