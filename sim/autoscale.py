"""Autoscaling: every evaluation period, each autoscaled pool's serving replicas from a signal.

One URGENT event per period per autoscaled pool (none per request). A signal recommends the
serving replicas the pool should have, clamped to ``min..max``. A scale-out follows the
recommendation (only ``scale_up_cooldown_s`` after the last change; the run's start counts as
one), at most doubling the replicas or adding 4 per evaluation (the Kubernetes HPA's default
scale-up policy). A scale-in drains one replica, and only when every recommendation of the last
``scale_down_cooldown_s`` was below the replicas the pool has (the HPA's scale-down
stabilization window) and that long after the last change: a queue that is empty, or a TTFT
far below its SLO, says the pool has too many replicas but not how many, so the pool steps down
and looks again rather than draining to ``min`` at the first quiet moment. A schedule is
followed as it is. Otherwise the autoscaler only restores replicas lost to failures or
reclaims. Scaling itself (cold starts, draining) is :meth:`sim.lifecycle.PoolReplicas.scale_to`.

Signals look at the group of pools that serve the pool's model, so a pool that adds capacity
above a fixed (reserved) pool sees that pool's load: a signal sizes the group in replicas and
the pool takes what the group's other serving replicas do not cover. ``queue``: requests waiting
to start (held by the fleet, queued in the batchers) per serving replica, ``slo``: p90 over the
requests that arrived in the last ``window_s`` of time to first token (or, not yet there, their
age) over their class's ``slo_ttft_s``; both by the Kubernetes HPA rule ``ceil(serving x signal
/ target)``, left alone within 10% of the target. ``schedule``: the replicas the schedule gives
for the time of day (the run starts at midnight). ``utilization``: the model's arrivals per
second over the last ``window_s`` / the capacity of the group's serving replicas, each one's
capacity (:func:`sim.capacity.pool_capacity`) computed once, at the start, for the mix of
prompt and output lengths of the model's requests in the scenario's workload (the capacity a
planner computes ahead of time for a known mix); by the HPA rule too.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.events import schedule_urgent
from sim.fleet_config import (
    AUTOSCALE_TOLERANCE,
    HPA_SCALE_UP_PODS,
    SECONDS_PER_DAY,
    AutoscaleConfig,
)
from sim.lifecycle import BACKGROUND, DRAINING, SERVING, PoolReplicas

if TYPE_CHECKING:
    from sim.fleet import Fleet


def start_autoscalers(env: simpy.Environment, fleet: Fleet) -> None:
    """Schedule the first evaluation (at time 0) of every autoscaled pool of `fleet`."""
    for pool in fleet.pools:
        if pool.life.autoscale is not None:
            Autoscaler(env, fleet, pool).start()


class Autoscaler:
    """Evaluates one pool's signal every ``period_s`` and scales the pool."""

    def __init__(self, env: simpy.Environment, fleet: Fleet, pool: PoolReplicas) -> None:
        cfg = pool.life.autoscale
        assert cfg is not None
        self.env, self.fleet, self.pool, self.cfg = env, fleet, pool, cfg
        self.signal = SIGNALS[cfg.signal](fleet, pool, cfg)
        self._last_change_s = 0.0
        self._recent: deque[tuple[float, int]] = deque()  # (time, recommendation), newest last

    def start(self) -> None:
        schedule_urgent(self.env, self.env.now, self._evaluate)

    def _evaluate(self, _event: simpy.Event) -> None:
        if self.fleet.finished():
            return
        now, cfg, pool = self.env.now, self.cfg, self.pool
        low, high = cfg.bounds
        desired = min(max(self.signal.desired(now), low), high)
        if cfg.signal != "schedule":  # a schedule is the planner's own decision
            desired = self._paced(now, desired)
        if desired != pool.target:
            self._last_change_s = now
        pool.scale_to(desired)
        schedule_urgent(self.env, now + cfg.period_s, self._evaluate)

    def _paced(self, now: float, recommended: int) -> int:
        """The serving replicas to want now, given the signal's `recommended` count: scale-out
        by the HPA's default policy after the up cooldown, scale-in one at a time after a
        stable window (module docstring)."""
        cfg, have = self.cfg, self.pool.target
        recent = self._recent
        recent.append((now, recommended))
        while recent[0][0] <= now - cfg.scale_down_cooldown_s:
            recent.popleft()
        since = now - self._last_change_s
        if recommended > have and since >= cfg.scale_up_cooldown_s:
            return min(recommended, max(2 * have, have + HPA_SCALE_UP_PODS))
        if max(n for _, n in recent) < have and since >= cfg.scale_down_cooldown_s:
            return have - 1
        return have


class _GroupSignal:
    """What a signal knows of the pools that serve its pool's model."""

    def __init__(self, fleet: Fleet, pool: PoolReplicas, cfg: AutoscaleConfig) -> None:
        self.fleet, self.pool, self.cfg = fleet, pool, cfg
        self.group_pools = [p for p in fleet.pools if p.group is pool.group]

    def serving(self) -> tuple[int, int]:
        """Serving replicas of the group, and of its pools other than this one."""
        group = sum(p.live for p in self.group_pools)
        return group, group - self.pool.live

    def by_hpa_rule(self, ratio: float) -> int:
        """The pool's replicas when the group's signal / target is `ratio` (HPA rule)."""
        group, others = self.serving()
        if group and abs(ratio - 1.0) <= AUTOSCALE_TOLERANCE:
            return self.pool.target
        return math.ceil(group * ratio) - others


class QueueSignal(_GroupSignal):
    """Requests waiting to start per serving replica of the group."""

    def desired(self, now: float) -> int:
        waiting = len(self.pool.group.held)
        for pool in self.group_pools:
            for index in pool.members(SERVING, BACKGROUND, DRAINING):
                waiting += len(self.fleet.replicas[index].batcher.waiting)
        group, others = self.serving()
        target = self.cfg.target
        assert target is not None
        if not group:
            return math.ceil(waiting / target)
        return self.by_hpa_rule(waiting / group / target)


class UtilizationSignal(_GroupSignal):
    """Arrivals per second of the model over the last `window_s` / the group's serving
    capacity."""

    def __init__(self, fleet: Fleet, pool: PoolReplicas, cfg: AutoscaleConfig) -> None:
        # imported here: sim.capacity loads scipy, which a run without this signal does not need
        from sim.capacity import WorkloadMix, pool_capacity

        super().__init__(fleet, pool, cfg)
        work = fleet.recorder.workload
        models = np.array(fleet.spec.class_models, dtype=object)
        mine = models[work.class_index] == pool.pool.model
        self.arrival_s = work.arrival_s[mine]
        capacity = {}
        for member in self.group_pools:
            mix = WorkloadMix.of(work.prompt_tokens[mine], work.output_tokens[mine])
            capacity[member.pool.index] = pool_capacity(member.pool, mix).requests_per_s
        self.capacity_per_s = capacity  # one replica's, by pool index

    def desired(self, now: float) -> int:
        window_s = min(self.cfg.window_s, now)
        if window_s <= 0:
            return self.pool.target
        lo, hi = np.searchsorted(self.arrival_s, [now - window_s, now], side="right")
        rate = (hi - lo) / window_s
        capacity = sum(p.live * self.capacity_per_s[p.pool.index] for p in self.group_pools)
        target = self.cfg.target
        assert target is not None
        if capacity <= 0:
            return math.ceil(rate / (self.capacity_per_s[self.pool.pool.index] * target))
        return self.by_hpa_rule(rate / capacity / target)


class SloSignal(_GroupSignal):
    """p90 of time to first token / the class's SLO over the last `window_s` of arrivals."""

    def __init__(self, fleet: Fleet, pool: PoolReplicas, cfg: AutoscaleConfig) -> None:
        super().__init__(fleet, pool, cfg)
        rec, spec = fleet.recorder, fleet.spec
        self.arrival_s = rec.workload.arrival_s
        self.class_index = rec.workload.class_index
        slo = {c.name: c.slo_ttft_s for c in spec.scenario.workload.classes}
        self.slo_s = np.array(
            [
                slo.get(name) or np.inf if model == pool.pool.model else np.nan
                for name, model in zip(rec.workload.class_names, spec.class_models, strict=True)
            ]
        )
        self.first_token_s = np.frombuffer(rec.first_token_s, dtype=np.float64)
        self.status = np.frombuffer(rec.status, dtype=np.int8)

    def ratio(self, now: float) -> float | None:
        """p90 of TTFT / SLO of the model's requests that arrived in the window (None: none)."""
        lo, hi = np.searchsorted(self.arrival_s, [now - self.cfg.window_s, now], side="right")
        slo = self.slo_s[self.class_index[lo:hi]]
        arrival = self.arrival_s[lo:hi]
        first = self.first_token_s[lo:hi]
        mine = ~np.isnan(slo) & (self.status[lo:hi] != 2)  # this model's, not rejected
        if not mine.any():
            return None
        ttft = np.where(np.isnan(first), now - arrival, first - arrival)[mine]
        return float(np.percentile(ttft / slo[mine], 90))

    def desired(self, now: float) -> int:
        ratio = self.ratio(now)
        target = self.cfg.target
        assert target is not None
        if ratio is None:
            return 0
        group, others = self.serving()
        if not group:
            return 1 - others
        return self.by_hpa_rule(ratio / target)


class ScheduleSignal(_GroupSignal):
    """The schedule's replicas for the time of day."""

    def __init__(self, fleet: Fleet, pool: PoolReplicas, cfg: AutoscaleConfig) -> None:
        super().__init__(fleet, pool, cfg)
        assert cfg.schedule is not None
        self.starts = [s for s, _ in cfg.schedule]
        self.replicas = [n for _, n in cfg.schedule]

    def desired(self, now: float) -> int:
        return self.replicas[bisect_right(self.starts, now % SECONDS_PER_DAY) - 1]


SIGNALS: dict[str, type] = {
    "queue": QueueSignal,
    "utilization": UtilizationSignal,
    "slo": SloSignal,
    "schedule": ScheduleSignal,
}
