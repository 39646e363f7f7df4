"""Continuous batching with a paged KV cache (vLLM style), shaped for step compression.

The batcher owns a replica's queues and KV-cache blocks and decides each iteration: running
sequences decode one token; waiting requests are admitted first-come first-served while the
sequence limit, the token budget and free blocks allow; when a decode needs a block and none is
free, the newest running request is preempted and later recomputed.

Decoding sequences are not updated one by one per iteration. The replica keeps a *decode clock*
(iterations in which every decoding sequence decoded) and each sequence stores its state at the
clock value when it joined; its KV length is ``kv_tokens + clock - join_clock``. Which sequences
need a fresh block in an iteration depends only on that length modulo the block size, kept as a
histogram, and finishing times sit in a heap. So a stretch of identical decode iterations is
planned and applied in time independent of the batch size and of the stretch length.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from sim.perf import StepWork
from sim.recorder import Recorder
from sim.request import Request
from sim.scenario import ContinuousBatcherConfig


@dataclass(slots=True)
class Step:
    """The next iteration: its work, and how many identical iterations may follow in a row."""

    work: StepWork
    max_iterations: int


class ContinuousBatcher:
    """Iteration-level scheduling over a KV cache of `capacity_blocks` blocks."""

    def __init__(
        self, cfg: ContinuousBatcherConfig, capacity_blocks: int, recorder: Recorder
    ) -> None:
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.capacity_blocks = capacity_blocks
        self.recorder = recorder
        self.waiting: deque[Request] = deque()
        self.decoding: dict[int, Request] = {}  # rid -> request, in admission order
        self.prefilling: list[Request] = []  # admitted in the iteration being run
        self.used_blocks = 0
        self.clock = 0
        self._finish_heap: list[tuple[int, int, int, Request]] = []
        self._residues = [0] * cfg.block_size  # decoding sequences by (kv - join_clock) % bs
        self._context_base = 0  # sum over decoding sequences of kv_tokens - join_clock
        self._admissions = 0
        self._preempted_now = False

    # ----------------------------------------------------------------- queue
    @property
    def outstanding(self) -> int:
        """Requests inside this replica (waiting, prefilling or decoding)."""
        return len(self.waiting) + len(self.decoding) + len(self.prefilling)

    def rejection(self, req: Request) -> str | None:
        """Why a request can never be served here, or None when it can."""
        longest = req.prompt_tokens + req.output_tokens - 1
        if self._blocks_for(longest) > self.capacity_blocks:
            return "needs more KV-cache blocks than the replica has"
        if longest > self.cfg.max_num_batched_tokens:
            return "longer than max_num_batched_tokens (a recompute could never be scheduled)"
        return None

    def enqueue(self, req: Request) -> None:
        """Add an arrived request to the back of the waiting queue."""
        self.waiting.append(req)

    def could_start_now(self, req: Request) -> bool:
        """Whether `req`, just enqueued, might be admitted at the next iteration boundary."""
        return len(self.waiting) == 1 and len(self.decoding) < self.cfg.max_num_seqs

    # ----------------------------------------------------------------- scheduling
    def schedule(self, now: float) -> Step | None:
        """Decide the next iteration at time `now`; None when there is nothing to run."""
        need = self._make_room_for_decodes(now)
        num_decode = len(self.decoding)
        work = StepWork(decode_seqs=num_decode, decode_context=self._context_sum())
        if not self._preempted_now or num_decode == 0:
            free = self.capacity_blocks - self.used_blocks - need
            self._admit(work, free, now)
        if num_decode == 0 and not self.prefilling:
            return None
        if self.prefilling or self._preempted_now:
            return Step(work, 1)
        free = self.capacity_blocks - self.used_blocks
        until_finish = self._next_finish() - self.clock
        return Step(work, self._iterations_within(free, until_finish))

    def _make_room_for_decodes(self, now: float) -> int:
        """Preempt the newest decoding requests until the next decode's new blocks fit."""
        self._preempted_now = False
        need = self._new_blocks(1)
        while self.decoding and need > self.capacity_blocks - self.used_blocks:
            self._preempt(next(reversed(self.decoding.values())))
            self._preempted_now = True
            need = self._new_blocks(1)
        return need

    def _admit(self, work: StepWork, free: int, now: float) -> None:
        budget = self.cfg.max_num_batched_tokens - work.decode_seqs
        slots = self.cfg.max_num_seqs - work.decode_seqs
        rec = self.recorder
        while self.waiting and slots > 0:
            req = self.waiting[0]
            tokens = req.known_tokens
            blocks = self._blocks_for(tokens)
            if tokens > budget or blocks > free:
                break
            self.waiting.popleft()
            budget -= tokens
            free -= blocks
            slots -= 1
            req.blocks = blocks
            self.used_blocks += blocks
            self.prefilling.append(req)
            work.add_prefill(tokens, 0, emits_logits=True)
            if rec.first_scheduled_s[req.rid] != rec.first_scheduled_s[req.rid]:  # NaN: first time
                rec.first_scheduled_s[req.rid] = now

    # ----------------------------------------------------------------- progress
    def advance(self, iterations: int, end_s: float) -> int:
        """Apply `iterations` runs of the scheduled step ending at `end_s`.

        Returns the KV blocks in use during the last of them.
        """
        if self.decoding:
            self.used_blocks += self._new_blocks(iterations)
            self.clock += iterations
        blocks_in_use = self.used_blocks
        heap = self._finish_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if req.epoch == epoch and req.rid in self.decoding:
                self._leave_decoding(req)
                self._complete(req, end_s)
        for req in self.prefilling:
            self._prefilled(req, end_s)
        self.prefilling.clear()
        return blocks_in_use

    def _prefilled(self, req: Request, end_s: float) -> None:
        rec = self.recorder
        req.kv_tokens = req.known_tokens
        req.generated += 1
        if rec.first_token_s[req.rid] != rec.first_token_s[req.rid]:
            rec.first_token_s[req.rid] = end_s
        if req.generated >= req.output_tokens:
            self._complete(req, end_s)
        else:
            self._join_decoding(req)

    def _complete(self, req: Request, end_s: float) -> None:
        self.used_blocks -= req.blocks
        self.recorder.completed(req.rid, end_s)

    # ----------------------------------------------------------------- decoding set
    def _join_decoding(self, req: Request) -> None:
        req.join_clock = self.clock
        req.finish_clock = self.clock + req.output_tokens - req.generated
        req.epoch += 1
        self._admissions += 1
        req.admit_seq = self._admissions
        self.decoding[req.rid] = req
        self._residues[(req.kv_tokens - req.join_clock) % self.block_size] += 1
        self._context_base += req.kv_tokens - req.join_clock
        heapq.heappush(self._finish_heap, (req.finish_clock, req.admit_seq, req.epoch, req))

    def _leave_decoding(self, req: Request) -> None:
        """Take a request out of the decoding set, bringing its token counts up to date."""
        del self.decoding[req.rid]
        self._residues[(req.kv_tokens - req.join_clock) % self.block_size] -= 1
        self._context_base -= req.kv_tokens - req.join_clock
        steps = self.clock - req.join_clock
        req.kv_tokens += steps
        req.generated += steps
        req.blocks = self._blocks_for(req.kv_tokens)

    def _next_finish(self) -> int:
        """Decode clock at which the next decoding request finishes (drops stale heap entries)."""
        heap = self._finish_heap
        while heap[0][2] != heap[0][3].epoch or heap[0][3].rid not in self.decoding:
            heapq.heappop(heap)
        return heap[0][0]

    def _preempt(self, req: Request) -> None:
        """Free a decoding request's blocks and put it first in line for recomputation."""
        self._leave_decoding(req)
        req.epoch += 1
        self.used_blocks -= req.blocks
        req.blocks = 0
        req.kv_tokens = 0
        self.waiting.appendleft(req)
        self.recorder.preemptions[req.rid] += 1

    # ----------------------------------------------------------------- block arithmetic
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _context_sum(self) -> int:
        """Positions attended by the next decode iteration, summed over decoding sequences."""
        n = len(self.decoding)
        return self._context_base + n * (self.clock + 1)

    def _new_blocks(self, iterations: int) -> int:
        """Blocks the decoding set allocates over the next `iterations` decode iterations."""
        bs, n = self.block_size, len(self.decoding)
        cycles, rest = divmod(iterations, bs)
        return cycles * n + sum(self._residues[(-(self.clock + i)) % bs] for i in range(rest))

    def _iterations_within(self, free: int, limit: int) -> int:
        """Most decode iterations (<= limit) whose new blocks fit in `free` blocks."""
        bs, n = self.block_size, len(self.decoding)
        cycles = min(limit // bs, free // n)
        done, used = cycles * bs, cycles * n
        while done < limit:
            extra = self._residues[(-(self.clock + done)) % bs]
            if used + extra > free:
                break
            used += extra
            done += 1
        return done
