"""The batchers of prefill and decode replicas (disaggregated serving, docs/disaggregation.md).

Both are continuous batchers (:class:`~sim.batching.continuous.ContinuousBatcher`, chunked or
not, as the pool's ``[batcher]`` says) that differ in one place each:

* :class:`PrefillBatcher`: a request whose prefill produced its first token, and that needs
  more, is handed on (`handoff`) instead of joining a decoding set. Its KV-cache blocks stay in
  use here until its transfer to the decode replica has ended (:meth:`PrefillBatcher.transferred`):
  while decode replicas have no room, held KV caches fill this replica's memory and limit its
  batch (backpressure). A request only needs its prompt to fit here.
* :class:`DecodeBatcher`: a handed-off request (`enqueue`) waits, in hand-off order, until the
  blocks of its KV cache (its prompt tokens) and a batch slot are free; at an iteration boundary
  the batcher reserves them and `reserved` starts the transfer. When the transfer has ended
  (:meth:`DecodeBatcher.kv_arrived`) the request joins the decoding set at the next iteration,
  in the state a colocated replica leaves it in after its prefill. Transfers are reserved before
  the replica's own waiting requests (recomputations after a preemption) are admitted, and not
  while swapped-out requests wait to come back.

The KV of the first output token is not moved: the decode replica writes it in the request's
first decode iteration, as a colocated replica does after a prefill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.batching import Step
from sim.batching.continuous import ContinuousBatcher
from sim.recorder import Recorder
from sim.request import Request

if TYPE_CHECKING:
    from sim.runspec import PoolSpec


class PrefillBatcher(ContinuousBatcher):
    """Prefills requests and hands them on; keeps their KV-cache blocks until transferred."""

    handoff: Callable[[Request], None]
    held: dict[int, int]  # request id -> KV-cache blocks it keeps here until its transfer ends

    @classmethod
    def of(
        cls,
        pool: PoolSpec,
        recorder: Recorder,
        departed: Callable[[int], None],
        prefix_block_tokens: int,
        handoff: Callable[[Request], None],
    ) -> PrefillBatcher:
        """The batcher of one replica of a prefill pool; `handoff` takes each prefilled request
        that needs more tokens (`departed`: called when a request leaves the replica)."""
        batcher = cls.for_pool(pool, recorder, departed, prefix_block_tokens)
        batcher.handoff, batcher.held = handoff, {}
        return batcher

    def rejection(self, req: Request) -> str | None:
        prompt = req.prompt_tokens
        if self.decodes.blocks_for(prompt) > self.capacity_blocks:
            return "kv_cache"
        if not self.cfg.chunked_prefill and prompt > self.cfg.max_num_batched_tokens:
            return "max_num_batched_tokens"
        return None

    def _to_decode(self, req: Request) -> None:
        self.held[req.rid] = req.blocks
        self.handoff(req)

    def transferred(self, req: Request) -> bool:
        """The KV cache of `req` reached its decode replica: free its blocks; `req` leaves.

        Returns whether requests wait here (the replica should decide again)."""
        self.used_blocks -= self.held.pop(req.rid)
        self.outstanding -= 1
        self.departed(req.rid)
        return bool(self.waiting or self.prefilling)


class DecodeBatcher(ContinuousBatcher):
    """Decodes requests whose KV cache a prefill replica sends it, reserving blocks first."""

    reserved: Callable[[Request], None]
    incoming: deque[Request]  # handed off, waiting for blocks and a slot, in hand-off order
    arrived: list[Request]  # KV cache transferred, joining the decoding set next iteration

    @classmethod
    def of(
        cls,
        pool: PoolSpec,
        recorder: Recorder,
        departed: Callable[[int], None],
        prefix_block_tokens: int,
        reserved: Callable[[Request], None],
    ) -> DecodeBatcher:
        """The batcher of one replica of a decode pool; `reserved` starts the transfer of a
        request whose blocks it has reserved (`departed`: called when a request finishes)."""
        batcher = cls.for_pool(pool, recorder, departed, prefix_block_tokens)
        batcher.reserved, batcher.incoming, batcher.arrived = reserved, deque(), []
        return batcher

    def enqueue(self, req: Request) -> None:
        """Accept a handed-off request; its KV cache is still on the prefill replica."""
        self.incoming.append(req)
        self.outstanding += 1

    def could_start_now(self, req: Request) -> bool:
        return self.incoming[0] is req and self.running() < self.cfg.max_num_seqs

    def kv_arrived(self, req: Request) -> None:
        """The KV cache of `req` has arrived: it decodes from the next iteration on."""
        self.arrived.append(req)

    def schedule(self, now: float) -> Step | None:
        if self.arrived:
            for req in self.arrived:
                self.decodes.join(req)
            self.arriving -= len(self.arrived)
            self.arrived = []
        if self.incoming and not self.swapped:
            self._reserve()
        return super().schedule(now)

    def _reserve(self) -> None:
        """Reserve blocks and a slot for incoming requests, oldest first, while they fit beside
        the blocks the next decode iteration adds; each reservation starts a transfer."""
        decodes, incoming = self.decodes, self.incoming
        free = self.capacity_blocks - self.used_blocks - decodes.new_blocks(1)
        while incoming and self.running() < self.cfg.max_num_seqs:
            req = incoming[0]
            blocks = decodes.blocks_for(req.kv_tokens)
            if blocks > free:
                return
            incoming.popleft()
            req.blocks = blocks
            self.used_blocks += blocks
            free -= blocks
            self.arriving += 1
            self.reserved(req)
