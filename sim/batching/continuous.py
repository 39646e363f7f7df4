"""Continuous batching (Orca, vLLM) over a paged KV cache.

Every iteration: running sequences decode one token (making room first by preempting the newest
when a decode needs a block and none is free); then, under the token budget
``max_num_batched_tokens`` and ``max_num_seqs``, prompt work is added: unfinished prompt chunks
first (``chunked_prefill``, Sarathi-Serve), then waiting requests in the queue's order, while
KV blocks allow. With ``mix_prefill_decode = false`` (vLLM v0) an iteration either prefills
newly admitted prompts or decodes, never both. Preempted requests are recomputed (their prompt
and generated tokens prefilled again) or swapped to host memory and back (``preemption``), the
transfer time coming from the host link. With ``cuda_graph_padding`` a pure decode iteration
computes its batch padded to the next captured CUDA-graph size. No new request is admitted in an
iteration that
preempted, or while swapped-out requests wait to come back, as in vLLM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.batching import Step
from sim.batching.decoding import DecodeSet
from sim.batching.prefix_cache import PrefixCache
from sim.batching.waiting import WaitingQueue
from sim.perf import StepWork
from sim.recorder import Recorder
from sim.request import Request
from sim.scenario import ContinuousBatcherConfig

if TYPE_CHECKING:
    from sim.runspec import PoolSpec

# vLLM (v0 model runner) captures decode CUDA graphs for these batch sizes and pads a decode
# batch up to the next one; larger batches run without a graph (vllm/worker/model_runner.py,
# _BATCH_SIZES_TO_CAPTURE = [1, 2, 4] + [8 * i for i in range(1, 33)]).
CUDA_GRAPH_BATCH_SIZES = (1, 2, 4, *range(8, 257, 8))


def cuda_graph_rows(seqs: int) -> int:
    """Rows a decode batch of `seqs` sequences computes when padded to a captured graph size."""
    if seqs > CUDA_GRAPH_BATCH_SIZES[-1]:
        return seqs
    return next(size for size in CUDA_GRAPH_BATCH_SIZES if size >= seqs)


class ContinuousBatcher:
    """Iteration-level scheduling over `capacity_blocks` KV-cache blocks.

    `departed` is called with a request's id when it finishes (the fleet's departure hook).
    """

    def __init__(
        self,
        cfg: ContinuousBatcherConfig,
        capacity_blocks: int,
        recorder: Recorder,
        departed: Callable[[int], None],
        swap_s_per_block: float,
        prefix_block_tokens: int,
        longest_context: bool = False,
    ) -> None:
        self.cfg = cfg
        self.capacity_blocks = capacity_blocks
        self.recorder = recorder
        self.departed = departed
        self.swap_s_per_block = swap_s_per_block
        self.waiting = WaitingQueue(cfg.order)
        self.swapped: deque[Request] = deque()
        self.decodes = DecodeSet(cfg.block_size, longest_context)
        self.longest_context = longest_context
        self.prefilling: list[Request] = []  # admitted; prompt not yet all in the KV cache
        self.used_blocks = 0
        self.cache = (
            PrefixCache(prefix_block_tokens, cfg.block_size) if cfg.prefix_caching else None
        )
        self._chunks: list[tuple[Request, int]] = []  # prompt chunks of the scheduled iteration
        self.outstanding = 0  # requests inside: waiting, prefilling, decoding or swapped out
        self.slots = cfg.max_num_seqs
        self.arriving = 0  # admitted requests whose KV cache is on its way here (a decode role)

    @classmethod
    def for_pool(
        cls,
        pool: PoolSpec,
        recorder: Recorder,
        departed: Callable[[int], None],
        prefix_block_tokens: int,
    ) -> ContinuousBatcher:
        """The batcher of one replica of `pool`; the prefix cache keys blocks of
        `prefix_block_tokens` tokens (the workload's)."""
        return cls(
            pool.batcher,
            pool.kv_capacity_blocks,
            recorder,
            departed,
            pool.swap_s_per_block,
            prefix_block_tokens,
            pool.pads_decode_attention,
        )

    # ----------------------------------------------------------------- queue
    def rejection(self, req: Request) -> str | None:
        longest = req.prompt_tokens + req.output_tokens - 1
        if self.decodes.blocks_for(longest) > self.capacity_blocks:
            return "kv_cache"
        if not self.cfg.chunked_prefill and longest > self.cfg.max_num_batched_tokens:
            return "max_num_batched_tokens"
        return None

    def enqueue(self, req: Request) -> None:
        self.waiting.push(req)
        self.outstanding += 1

    def could_start_now(self, req: Request) -> bool:
        return self.waiting.head() is req and self.running() < self.cfg.max_num_seqs

    def running(self) -> int:
        """Requests that hold a batch slot: decoding, prefilling, or with a KV cache arriving."""
        return len(self.decodes) + len(self.prefilling) + self.arriving

    def wake_at(self) -> float | None:
        return None

    # ----------------------------------------------------------------- scheduling
    def schedule(self, now: float) -> Step | None:
        self._chunks = []
        if not self.cfg.mix_prefill_decode:
            step = self._prefill_only(now)
            if step is not None:
                return step
        while True:
            once_s, changed = self._make_room_for_decodes()
            if not changed:
                once_s, changed = self._swap_in()
            decodes = self.decodes
            work = StepWork(decode_seqs=len(decodes), decode_context=decodes.context_sum())
            if self.longest_context and decodes:
                work.decode_max_context = decodes.max_context()
            admit = not self.swapped and (not changed or not self.decodes)
            if self.cfg.mix_prefill_decode and admit and (self.waiting or self.prefilling):
                free = self.capacity_blocks - self.used_blocks - self.decodes.new_blocks(1)
                budget = self.cfg.max_num_batched_tokens - work.decode_seqs
                self._fill_prompts(work, budget, free, now)
            if work.decode_seqs or self._chunks or not self.prefilling:
                break
            once_s += self._preempt_prefilling()  # a stuck chunked prompt gives way
        if work.decode_seqs + len(self._chunks) == 0:
            return None
        step = Step(work, 1, once_s)
        if not self._chunks and self.cfg.cuda_graph_padding:
            work.padded_seqs = cuda_graph_rows(work.decode_seqs) - work.decode_seqs
        if not self._chunks and not changed:
            free = self.capacity_blocks - self.used_blocks
            step.max_iterations = self.decodes.iterations_within(
                free, self.decodes.iterations_to_next_finish()
            )
        return step

    def _prefill_only(self, now: float) -> Step | None:
        """vLLM v0: admit prompts in an iteration of their own while any fit."""
        if self.swapped or not self.waiting:
            return None
        work = StepWork()
        self._fill_prompts(
            work, self.cfg.max_num_batched_tokens, self.capacity_blocks - self.used_blocks, now
        )
        if not self._chunks:
            return None
        return Step(work)

    def _make_room_for_decodes(self) -> tuple[float, bool]:
        """Preempt the newest decoding requests until the next decode's new blocks fit.

        Returns the swap-out time and whether anything was preempted.
        """
        once_s, preempted = 0.0, False
        decodes = self.decodes
        while decodes and decodes.new_blocks(1) > self.capacity_blocks - self.used_blocks:
            once_s += self._preempt(decodes.newest())
            preempted = True
        return once_s, preempted

    def _preempt(self, req: Request) -> float:
        """Take a decoding request out; returns its swap-out time (0 for recompute)."""
        self.decodes.leave(req)
        self.used_blocks -= req.blocks
        self.recorder.preemptions[req.rid] += 1
        if self.cfg.preemption == "swap":
            self.swapped.append(req)
            return req.blocks * self.swap_s_per_block
        req.blocks = 0
        req.kv_tokens = 0
        self.waiting.push(req)
        return 0.0

    def _preempt_prefilling(self) -> float:
        """Send the newest partly prefilled request back to the queue, freeing its blocks."""
        req = self.prefilling.pop()
        self.used_blocks -= req.blocks
        req.blocks = 0
        req.kv_tokens = 0
        self.recorder.preemptions[req.rid] += 1
        self.waiting.push(req)
        return 0.0

    def _swap_in(self) -> tuple[float, bool]:
        """Bring swapped-out requests back, oldest first, while their blocks fit."""
        once_s, swapped_in = 0.0, False
        while self.swapped and len(self.decodes) < self.cfg.max_num_seqs:
            req = self.swapped[0]
            free = self.capacity_blocks - self.used_blocks - self.decodes.new_blocks(1)
            if self.decodes.blocks_for(req.kv_tokens + 1) > free:
                break
            self.swapped.popleft()
            self.used_blocks += req.blocks
            self.decodes.join(req)
            once_s += req.blocks * self.swap_s_per_block
            swapped_in = True
        return once_s, swapped_in

    def _fill_prompts(self, work: StepWork, budget: int, free: int, now: float) -> None:
        """Add prompt chunks: unfinished prompts first, then waiting requests in order."""
        for req in self.prefilling:
            if budget <= 0:
                return
            chunk = self._chunk(req, req.kv_tokens, budget, free + req.blocks)
            if chunk == 0:
                return
            blocks = self.decodes.blocks_for(req.kv_tokens + chunk) - req.blocks
            budget, free = budget - chunk, free - blocks
            self._plan(req, chunk, blocks, work)
        slots = self.cfg.max_num_seqs - self.running()
        while self.waiting and slots > 0 and budget > 0:
            req = self.waiting.head()
            cached = self._cached_tokens(req)
            chunk = self._chunk(req, cached, budget, free)
            if chunk == 0:
                return
            self.waiting.pop()
            self._admit(req, cached, now)
            blocks = self.decodes.blocks_for(cached + chunk)
            budget, free, slots = budget - chunk, free - blocks, slots - 1
            self._plan(req, chunk, blocks, work)

    def _chunk(self, req: Request, done: int, budget: int, block_room: int) -> int:
        """Prompt tokens of `req` to compute now, after `done`; 0 when they cannot go now."""
        remaining = req.known_tokens - done
        if not self.cfg.chunked_prefill:
            fits = remaining <= budget and self.decodes.blocks_for(done + remaining) <= block_room
            return remaining if fits else 0
        room = block_room * self.cfg.block_size - done
        return max(0, min(remaining, budget, room))

    def _cached_tokens(self, req: Request) -> int:
        if self.cache is None or not req.prefix_hashes:
            return 0
        return self.cache.cached_tokens(req.prefix_hashes, req.known_tokens)

    def _admit(self, req: Request, cached: int, now: float) -> None:
        rec = self.recorder
        req.prefill_target = req.known_tokens
        req.kv_tokens = cached
        req.blocks = 0
        self.prefilling.append(req)
        if rec.first_scheduled_s[req.rid] != rec.first_scheduled_s[req.rid]:  # NaN: first time
            rec.first_scheduled_s[req.rid] = now
            rec.cached_prompt_tokens[req.rid] = cached

    def _plan(self, req: Request, chunk: int, new_blocks: int, work: StepWork) -> None:
        req.blocks += new_blocks
        self.used_blocks += new_blocks
        done = req.kv_tokens + chunk == req.prefill_target
        work.add_prefill(chunk, req.kv_tokens, emits_logits=done)
        self._chunks.append((req, chunk))

    # ----------------------------------------------------------------- progress
    def advance(self, step: Step, iterations: int, end_s: float) -> int:
        finished: list[Request] = []
        if step.work.decode_seqs:
            self.used_blocks += self.decodes.new_blocks(iterations)
            finished = self.decodes.advance(iterations)
        blocks_in_use = self.used_blocks
        for req in finished:
            self._complete(req, end_s)
        for req, chunk in self._chunks:
            req.kv_tokens += chunk
            if req.kv_tokens == req.prefill_target:
                self._prefilled(req, end_s)
        self._chunks = []
        if self.cache is not None:
            self.cache.evict_to(self.capacity_blocks - self.used_blocks)
        return blocks_in_use

    def _prefilled(self, req: Request, end_s: float) -> None:
        rec = self.recorder
        self.prefilling.remove(req)
        req.generated += 1
        if rec.first_token_s[req.rid] != rec.first_token_s[req.rid]:
            rec.first_token_s[req.rid] = end_s
        if self.cache is not None and req.prefix_hashes:
            self.cache.insert(req.prefix_hashes)
        if req.generated >= req.output_tokens:
            self._complete(req, end_s)
        else:
            self._to_decode(req)

    def _to_decode(self, req: Request) -> None:
        """A prefilled request with tokens to go: it decodes here (a prefill role hands it on)."""
        self.decodes.join(req)

    def evict(self) -> list[Request]:
        inside = [*self.waiting, *self.prefilling, *self.decodes.members.values(), *self.swapped]
        self.outstanding = 0
        return sorted(inside, key=lambda r: r.rid)

    def _complete(self, req: Request, end_s: float) -> None:
        self.outstanding -= 1
        self.used_blocks -= req.blocks
        self.recorder.completed(req.rid, end_s)
        self.departed(req.rid)
