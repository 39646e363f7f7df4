"""``[perf] kind = "replay"``: each iteration takes the next measured duration of a step log.

For checking a batcher's scheduling alone: with the durations the engine measured, in the order
it ran its steps, a batcher that schedules like the engine reproduces its iterations and its
requests' latencies (``tests/test_e2e.py`` holds our vLLM-v0 batcher to the shared H200 run).
Each iteration takes the next duration whatever it computes; a run that needs more iterations
than the log holds has scheduled differently from the engine, and stops with an error saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim.errors import UserError
from sim.perf import StepWork
from sim.scenario import ReplayConfig
from sim.step_log import read_step_log

if TYPE_CHECKING:
    from sim.runspec import PoolSpec


def replay_durations_s(path: str | Path) -> np.ndarray:
    """The durations of a step log's iterations, in order; UserError if it cannot be replayed
    (unreadable, or not one replica's iterations one per row)."""
    log = read_step_log(Path(path))
    if (log.iterations > 1).any() or len(np.unique(log.replica)) > 1:
        raise UserError(
            "a replay needs one replica's iterations one per row (run the simulator with "
            "sim.step_compression = false)"
        )
    return log.duration_s


class Replay:
    """Hands out `durations_s` in order, one per iteration."""

    def __init__(self, durations_s: np.ndarray, source: str) -> None:
        self.durations = durations_s.tolist()
        self.source = source
        self.next = 0

    @classmethod
    def for_pool(cls, pool: PoolSpec, rng: np.random.Generator) -> Replay:
        """The replay of the pool's step log (resolved and checked by ``sim.resolve``)."""
        assert isinstance(pool.perf, ReplayConfig)
        return cls(replay_durations_s(pool.perf.steps), pool.perf.steps)

    def _take(self, count: int) -> list[float]:
        end = self.next + count
        if end > len(self.durations):
            raise UserError(
                f"replay of {self.source}: the run needs more than its {len(self.durations)} "
                f"steps: the batcher scheduled differently from the engine that wrote the log"
            )
        out = self.durations[self.next : end]
        self.next = end
        return out

    def step_s(self, work: StepWork) -> float:
        return self._take(1)[0]

    def decode_stretch_s(
        self,
        num_seqs: int,
        context_sum: int,
        iterations: int,
        padded_seqs: int = 0,
        max_context: int = 0,
    ) -> Sequence[float]:
        return self._take(min(iterations, max(len(self.durations) - self.next, 1)))

    def unuse(self, count: int) -> None:
        self.next -= count
