"""One model instance on `tp` GPUs: its SimPy process, with step compression.

The process loops: ask the batcher for the next iteration; if there is none, sleep until a
request arrives (or until the batcher's own deadline, for dynamic batching); else run it. A pure
decode iteration that the batcher says may repeat unchanged ``k`` times runs as one timeout
covering all ``k`` (step compression). A request that arrives during such a stretch and could
change it interrupts the stretch, which then ends at the first iteration boundary at or after
the arrival, exactly where step-by-step mode would take the request in.

Tie order at equal simulated times: arrivals (URGENT events) come before iteration boundaries
and deadlines (NORMAL events), so a request arriving exactly at a boundary is seen by that
boundary's decision.

A replica that fails (or whose spot capacity is taken back) is stopped by :meth:`Replica.stop`:
its process ends at once, the iterations of a stretch that ended before then are kept (as the
step-by-step run would have them), the iteration in progress is lost, and the fleet takes the
requests inside. A failure at an iteration boundary comes first (it is an URGENT event too).
While idle, a replica may lend its GPUs to background work (:mod:`sim.background`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.batching import Batcher, Step
from sim.fleet_config import DECODE, PREFILL
from sim.perf import StepTimeModel
from sim.recorder import Recorder
from sim.request import Request

if TYPE_CHECKING:
    from sim.background import Lender
    from sim.runspec import PoolSpec

STOPPED = "stopped"  # the cause of the interrupt that ends a failed or reclaimed replica


class Replica:
    """A replica's process, its batcher and its step-time model.

    `departed` is called with a request's id when it leaves without being served (rejected);
    the batcher calls the same hook for the requests it finishes. `perf` may be the step-time
    model of a replica this one replaces (a repaired replica keeps its random stream).
    `lender`: background work that takes the replica's GPUs while it is idle (None: none).
    """

    lender: Lender | None = None

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        batcher: Batcher,
        perf: StepTimeModel,
        recorder: Recorder,
        compress: bool,
        departed: Callable[[int], None],
    ) -> None:
        self.env, self.index = env, index
        self.batcher, self.perf, self.recorder = batcher, perf, recorder
        self.compress = compress
        self.departed = departed
        self._wake: simpy.Event | None = None
        self._interruptible = False
        self.process = env.process(self._run())

    def submit(self, req: Request) -> None:
        """Take a routed request: reject it, or queue it and wake or interrupt the process."""
        reason = self.batcher.rejection(req)
        if reason is not None:
            self.recorder.rejected(req.rid, reason)
            self.departed(req.rid)
            return
        self.batcher.enqueue(req)
        if self._wake is not None or (self._interruptible and self.batcher.could_start_now(req)):
            self.wake()

    def wake(self) -> None:
        """The batcher has new work: wake the process, or end its stretch of decode iterations
        at the next iteration boundary."""
        if self._wake is not None:
            if not self._wake.triggered:
                self._wake.succeed()
        elif self._interruptible:
            self._interruptible = False
            self.process.interrupt()

    def set_departed(self, departed: Callable[[int], None]) -> None:
        """Call `departed` (not the hook given before) when a request leaves."""
        self.departed = self.batcher.departed = departed

    def stop(self) -> list[Request]:
        """The replica failed or is taken away: end its process; returns the requests inside,
        oldest first (their progress is lost)."""
        if self.process.is_alive:
            self.process.interrupt(STOPPED)
        return self.batcher.evict()

    def _run(self):
        env, batcher = self.env, self.batcher
        try:
            while True:
                step = batcher.schedule(env.now)
                if step is None:
                    yield from self._sleep()
                    continue
                start = env.now
                if step.max_iterations > 1 and self.compress:
                    iterations = yield from self._run_stretch(step)
                else:
                    iterations = 1
                    yield env.timeout(self._one_iteration_s(step))
                self._record(step, start, iterations, env.now)
        except simpy.Interrupt:
            return  # stopped (an arrival interrupts only a stretch, which catches it)

    def _record(self, step: Step, start: float, iterations: int, end_s: float) -> None:
        """Apply `iterations` runs of `step` that ended at `end_s`, and record them."""
        blocks = self.batcher.advance(step, iterations, end_s)
        work = step.work
        self.recorder.step(
            self.index,
            start,
            end_s,
            iterations,
            work.prefill_seqs,
            work.prefill_tokens,
            work.decode_seqs,
            work.decode_context,
            blocks,
            work.decode_max_context,
        )

    def _sleep(self):
        """Wait for an arrival, or for the batcher's deadline if it has one; an idle replica
        may lend its GPUs to background work meanwhile."""
        self._wake = self.env.event()
        deadline = self.batcher.wake_at()
        if self.lender is not None and deadline is None and not self.batcher.outstanding:
            yield from self.lender.lend(self, self._wake)
        elif deadline is None:
            yield self._wake
        else:
            yield self._wake | self.env.timeout(max(0.0, deadline - self.env.now))
        self._wake = None

    def _one_iteration_s(self, step: Step) -> float:
        work = step.work
        if work.prefill_tokens:
            compute_s = self.perf.step_s(work)
        else:
            compute_s = self.perf.decode_stretch_s(
                work.decode_seqs, work.decode_context, 1, work.padded_seqs, work.decode_max_context
            )[0]
        return compute_s + step.once_s

    def _run_stretch(self, step: Step):
        """Run up to `step.max_iterations` decode iterations as one event; returns how many ran."""
        env, work = self.env, step.work
        durations = self.perf.decode_stretch_s(
            work.decode_seqs,
            work.decode_context,
            step.max_iterations,
            work.padded_seqs,
            work.decode_max_context,
        )
        start = env.now
        ends = _boundaries(start, durations, step.once_s)
        self._interruptible = True
        try:
            yield env.timeout(ends[-1] - start)
            done = len(ends)
        except simpy.Interrupt as stop:
            if stop.cause is STOPPED:
                self._stopped_in_stretch(step, start, ends)
            done = min(bisect_left(ends, env.now), len(ends) - 1) + 1
            try:
                yield env.timeout(ends[done - 1] - env.now)
            except simpy.Interrupt:
                self._stopped_in_stretch(step, start, ends)
        self._interruptible = False
        self.perf.unuse(len(ends) - done)
        return done

    def _stopped_in_stretch(self, step: Step, start: float, ends) -> None:
        """Stopped during a stretch: keep the iterations that ended before now (the one in
        progress is lost, its duration drawn as step by step), then end the process."""
        self._interruptible = False
        done = bisect_left(ends, self.env.now)
        self.perf.unuse(len(ends) - min(done + 1, len(ends)))
        if done:
            self._record(step, start, done, float(ends[done - 1]))
        raise simpy.Interrupt(STOPPED)


class ReplicaView:
    """What a router may read of a replica: its place in the fleet, its load and its pool's
    speed and price, nothing else.

    index: the replica's fleet-wide number; pool: its pool's index; slots: most requests its
    batcher runs at once; outstanding: requests routed to it and not yet gone;
    prefill_s_per_token, decode_s_per_token: its pool's predicted seconds per prompt and output
    token, 0 for the phase a prefill or decode pool leaves to others; usd_per_hour: the price of
    its GPUs for an hour (None without [economics]).
    """

    __slots__ = (
        "index",
        "pool",
        "slots",
        "prefill_s_per_token",
        "decode_s_per_token",
        "usd_per_hour",
        "_batcher",
    )

    def __init__(self, replica: Replica, pool: PoolSpec) -> None:
        self.index, self.pool = replica.index, pool.index
        self.slots = replica.batcher.slots
        self.prefill_s_per_token = 0.0 if pool.role == DECODE else pool.prefill_s_per_token
        self.decode_s_per_token = 0.0 if pool.role == PREFILL else pool.decode_s_per_token
        self.usd_per_hour = pool.usd_per_replica_hour
        self._batcher = replica.batcher

    @property
    def outstanding(self) -> int:
        """Requests inside the replica: waiting, running or swapped out."""
        return self._batcher.outstanding


def _boundaries(start: float, durations, once_s: float):
    """Times at which each iteration of a stretch ends, summed one by one as SimPy would.

    The first iteration takes `once_s` more than its duration.
    """
    if isinstance(durations, np.ndarray):
        steps = durations.copy()
        steps[0] += once_s
        return np.cumsum(np.concatenate(([start], steps)))[1:]
    ends, end = [], start
    for d in durations:
        end += d + once_s
        once_s = 0.0
        ends.append(end)
    return ends
