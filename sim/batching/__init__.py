"""Batchers: a replica's queues, KV-cache blocks and the decision of each iteration.

Policies, chosen by ``[batcher] kind``:

* ``continuous`` (:mod:`sim.batching.continuous`): Orca / vLLM iteration-level scheduling,
  optionally with chunked prefill (Sarathi-Serve), vLLM-v0 prefill-or-decode iterations,
  priority or shortest-prompt-first order, swap preemption and prefix caching.
* ``static`` and ``dynamic`` (:mod:`sim.batching.run_to_completion`): FasterTransformer and
  Triton style batches that run to completion while nothing joins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sim.perf import StepWork
from sim.recorder import Recorder
from sim.request import Request

if TYPE_CHECKING:
    from sim.runspec import PoolSpec


@dataclass(slots=True)
class Step:
    """The next iteration and how many identical iterations may follow in a row.

    once_s: time added to the first iteration only (KV swap transfers). Host (CPU) time is part
    of the step-time model (:class:`~sim.perf.PerfParams`).
    """

    work: StepWork
    max_iterations: int = 1
    once_s: float = 0.0


class Batcher(Protocol):
    """What a replica asks of its batcher."""

    outstanding: int
    """Requests inside the replica (waiting, running or swapped out), kept as a counter."""

    slots: int
    """Most requests it runs at once (``max_num_seqs``, or ``max_batch``)."""

    def rejection(self, req: Request) -> str | None:
        """Why `req` can never be served by this replica (a key of
        ``sim.request.REJECTION_REASONS``), or None."""
        ...

    def enqueue(self, req: Request) -> None:
        """Accept an arrived request."""
        ...

    def could_start_now(self, req: Request) -> bool:
        """Whether the just-enqueued `req` may change the next iteration (interrupt a stretch)."""
        ...

    def schedule(self, now: float) -> Step | None:
        """The next iteration at time `now`, or None when there is nothing to run now."""
        ...

    def wake_at(self) -> float | None:
        """While idle: when to decide again even if nothing arrives (None: only on arrival)."""
        ...

    def advance(self, step: Step, iterations: int, end_s: float) -> int:
        """Apply `iterations` runs of `step` ending at `end_s`; returns KV blocks in use."""
        ...

    def evict(self) -> list[Request]:
        """Every request inside, oldest first, taken out (the replica failed); the batcher is
        not used again."""
        ...


# the batcher classes by ``[batcher] kind``: imported last, as they import Step from here
from sim.batching.continuous import ContinuousBatcher  # noqa: E402
from sim.batching.run_to_completion import RunToCompletionBatcher  # noqa: E402

BATCHERS: dict[str, type[ContinuousBatcher] | type[RunToCompletionBatcher]] = {
    "continuous": ContinuousBatcher,
    "static": RunToCompletionBatcher,
    "dynamic": RunToCompletionBatcher,
}


def make_batcher(
    pool: PoolSpec, recorder: Recorder, departed: Callable[[int], None], prefix_block_tokens: int
) -> Batcher:
    """The batcher of ``[batcher] kind`` for one replica of `pool`.

    `departed` is called with a request's id when it finishes; `prefix_block_tokens` is the
    block size of the workload's prefix hashes.
    """
    return BATCHERS[pool.batcher.kind].for_pool(pool, recorder, departed, prefix_block_tokens)
