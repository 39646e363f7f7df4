"""One model instance on `tp` GPUs: its SimPy process, with step compression.

The process loops: ask the batcher for the next iteration; if there is none, sleep until a
request arrives; else run it. A pure decode iteration that the batcher says may repeat unchanged
``k`` times runs as one timeout covering all ``k`` (step compression). A request that arrives
during such a stretch and could be admitted interrupts it; the stretch then ends at the first
iteration boundary at or after the arrival, exactly where step-by-step mode would admit it.

Tie order at equal simulated times: arrivals (URGENT events) come before iteration boundaries
(NORMAL events), so a request arriving exactly at a boundary is seen by that boundary's decision.
"""

from __future__ import annotations

import simpy

from sim.batcher import ContinuousBatcher, Step
from sim.perf import StepTimeModel
from sim.recorder import Recorder
from sim.request import Request


class Replica:
    """A replica's process, its batcher and its step-time model."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        batcher: ContinuousBatcher,
        perf: StepTimeModel,
        recorder: Recorder,
        compress: bool,
    ) -> None:
        self.env, self.index = env, index
        self.batcher, self.perf, self.recorder = batcher, perf, recorder
        self.compress = compress
        self._wake: simpy.Event | None = None
        self._interruptible = False
        self.process = env.process(self._run())

    @property
    def outstanding(self) -> int:
        """Requests routed here and not yet finished."""
        return self.batcher.outstanding

    def submit(self, req: Request) -> None:
        """Take a routed request: reject it, or queue it and wake or interrupt the process."""
        reason = self.batcher.rejection(req)
        if reason is not None:
            self.recorder.rejected(req.rid)
            return
        self.batcher.enqueue(req)
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None
        elif self._interruptible and self.batcher.could_start_now(req):
            self._interruptible = False
            self.process.interrupt()

    def _run(self):
        env, batcher = self.env, self.batcher
        while True:
            step = batcher.schedule(env.now)
            if step is None:
                self._wake = env.event()
                yield self._wake
                continue
            start = env.now
            if step.max_iterations > 1 and self.compress:
                iterations = yield from self._run_stretch(step)
            else:
                iterations = 1
                yield env.timeout(self._one_iteration_s(step))
            blocks = batcher.advance(iterations, env.now)
            work = step.work
            self.recorder.step(
                self.index,
                start,
                env.now,
                iterations,
                work.prefill_tokens,
                work.decode_seqs,
                work.decode_context,
                blocks,
            )

    def _one_iteration_s(self, step: Step) -> float:
        work = step.work
        if work.prefill_tokens:
            return self.perf.step_s(work)
        return self.perf.decode_stretch_s(work.decode_seqs, work.decode_context, 1)[0]

    def _run_stretch(self, step: Step):
        """Run up to `step.max_iterations` decode iterations as one event; returns how many ran."""
        env, work = self.env, step.work
        durations = self.perf.decode_stretch_s(
            work.decode_seqs, work.decode_context, step.max_iterations
        )
        start = end = env.now
        for d in durations:
            end += d
        self._interruptible = True
        try:
            yield env.timeout(end - start)
            done = len(durations)
        except simpy.Interrupt:
            done, end = _first_boundary_at_or_after(start, durations, env.now)
            yield env.timeout(end - env.now)
        self._interruptible = False
        self.perf.unuse(len(durations) - done)
        return done


def _first_boundary_at_or_after(start: float, durations: list[float], t: float):
    """(iterations, time) of the first iteration boundary at or after `t`."""
    end = start
    for i, d in enumerate(durations):
        end += d
        if end >= t:
            return i + 1, end
    return len(durations), end
