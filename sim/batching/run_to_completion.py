"""Batches that run to completion: static (FasterTransformer) and dynamic (Triton) batching.

A batch is formed only when the replica has none: ``static`` takes up to ``max_batch`` waiting
requests at once; ``dynamic`` starts when ``max_batch`` requests wait, when a preferred batch
size can be filled, or when the oldest request has waited ``max_queue_delay_s``. The batch is
prefilled in one iteration and then decodes until its last request ends; nothing joins it.

``static`` follows FasterTransformer's padded batches: prompts are padded to the batch's longest
and finished requests keep their row until the batch ends. ``dynamic`` packs prompts without
padding and drops finished requests from the computation. Both reserve each request's whole KV
length (prompt + output) when the batch starts, so they never preempt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.batching import Step
from sim.perf import StepWork
from sim.recorder import Recorder
from sim.request import Request
from sim.scenario import DynamicBatcherConfig, StaticBatcherConfig

if TYPE_CHECKING:
    from sim.runspec import PoolSpec

DEADLINE_TOLERANCE_S = 1e-9  # a deadline reached by a timer counts as reached


class RunToCompletionBatcher:
    """One batch at a time over `capacity_blocks` KV-cache blocks.

    `departed` is called with a request's id when it finishes (the fleet's departure hook).
    """

    def __init__(
        self,
        cfg: StaticBatcherConfig | DynamicBatcherConfig,
        capacity_blocks: int,
        recorder: Recorder,
        departed: Callable[[int], None],
        longest_context: bool = False,
    ) -> None:
        self.cfg = cfg
        self.longest_context = longest_context
        self.padded = isinstance(cfg, StaticBatcherConfig)
        self.capacity_blocks = capacity_blocks
        self.recorder = recorder
        self.departed = departed
        self.waiting: deque[Request] = deque()
        self.batch: list[Request] = []
        self.used_blocks = 0
        self._prefilled = False
        self._clock = 0  # decode iterations run by the batch
        self._finishes: list[tuple[int, int]] = []  # (decode clock of last token, member index)
        self._next = 0  # first entry of _finishes not yet finished
        self._live = 0  # members still generating
        self._live_context = 0  # prompt tokens of the members that take part in decoding
        self.outstanding = 0  # requests waiting or in the running batch, not yet finished
        self.slots = cfg.max_batch

    @classmethod
    def for_pool(
        cls,
        pool: PoolSpec,
        recorder: Recorder,
        departed: Callable[[int], None],
        prefix_block_tokens: int,
    ) -> RunToCompletionBatcher:
        """The batcher of one replica of `pool` (no prefix cache: `prefix_block_tokens` unused)."""
        return cls(
            pool.batcher, pool.kv_capacity_blocks, recorder, departed, pool.pads_decode_attention
        )

    # ----------------------------------------------------------------- queue
    def rejection(self, req: Request) -> str | None:
        if self._reserve(req) > self.capacity_blocks:
            return "kv_cache"
        return None

    def enqueue(self, req: Request) -> None:
        self.waiting.append(req)
        self.outstanding += 1

    def could_start_now(self, req: Request) -> bool:
        return False  # nothing joins a running batch

    def wake_at(self) -> float | None:
        if isinstance(self.cfg, DynamicBatcherConfig) and self.waiting and not self.batch:
            return self.waiting[0].arrival_s + self.cfg.max_queue_delay_s
        return None

    def _reserve(self, req: Request) -> int:
        return -(-(req.prompt_tokens + req.output_tokens - 1) // self.cfg.block_size)

    # ----------------------------------------------------------------- scheduling
    def schedule(self, now: float) -> Step | None:
        if not self.batch:
            size = self._batch_size(now)
            if size == 0:
                return None
            return self._start(size, now)
        seqs = len(self.batch) if self.padded else self._live
        context = self._live_context + seqs * (self._clock + 1)
        work = StepWork(decode_seqs=seqs, decode_context=context)
        if self.longest_context:  # static batches pad every prompt to the longest
            live = self.batch
            if not self.padded:
                live = [self.batch[i] for _, i in self._finishes[self._next :]]
            work.decode_max_context = max(r.prompt_tokens for r in live) + self._clock + 1
        until_next = self._finishes[self._next][0] - self._clock
        return Step(work, until_next)

    def _batch_size(self, now: float) -> int:
        waiting, cfg = len(self.waiting), self.cfg
        if waiting == 0 or isinstance(cfg, StaticBatcherConfig):
            return min(waiting, cfg.max_batch)
        if waiting >= cfg.max_batch:
            return cfg.max_batch
        preferred = [b for b in cfg.preferred_batch_sizes or [] if b <= waiting]
        if preferred:
            return max(preferred)
        deadline = self.waiting[0].arrival_s + cfg.max_queue_delay_s
        return waiting if now + DEADLINE_TOLERANCE_S >= deadline else 0

    def _start(self, size: int, now: float) -> Step:
        """Form a batch of up to `size` requests, first come first served, and prefill it."""
        while self.waiting and len(self.batch) < size:
            blocks = self._reserve(self.waiting[0])
            if self.used_blocks + blocks > self.capacity_blocks:
                break
            req = self.waiting.popleft()
            req.blocks = blocks
            self.used_blocks += blocks
            self.batch.append(req)
            self.recorder.first_scheduled_s[req.rid] = now
        longest = max(r.prompt_tokens for r in self.batch)
        work = StepWork()
        for req in self.batch:
            prompt = longest if self.padded else req.prompt_tokens
            work.add_prefill(prompt, 0, emits_logits=True)
            self._live_context += prompt
        self._live = len(self.batch)
        self._finishes = sorted((r.output_tokens - 1, i) for i, r in enumerate(self.batch))
        return Step(work)

    # ----------------------------------------------------------------- progress
    def advance(self, step: Step, iterations: int, end_s: float) -> int:
        blocks_in_use = self.used_blocks
        if not self._prefilled:
            self._prefilled = True
            for req in self.batch:
                req.generated = 1
                self.recorder.first_token_s[req.rid] = end_s
        else:
            self._clock += iterations
        while self._next < len(self._finishes) and self._finishes[self._next][0] <= self._clock:
            self._finish(self.batch[self._finishes[self._next][1]], end_s)
            self._next += 1
        if self._live == 0:
            self._end_batch()
        return blocks_in_use

    def _finish(self, req: Request, end_s: float) -> None:
        self._live -= 1
        self.outstanding -= 1
        if not self.padded:
            self._live_context -= req.prompt_tokens
            self.used_blocks -= req.blocks
        self.recorder.completed(req.rid, end_s)
        self.departed(req.rid)

    def evict(self) -> list[Request]:
        running = [self.batch[i] for _, i in self._finishes[self._next :]]
        self.outstanding = 0
        return sorted([*running, *self.waiting], key=lambda r: r.rid)

    def _end_batch(self) -> None:
        self.batch = []
        self.used_blocks = 0
        self._prefilled = False
        self._clock = self._next = self._live = self._live_context = 0
        self._finishes = []
