"""The set of sequences that decode together, advanced by a clock instead of one by one.

A replica's *decode clock* counts the iterations in which every decoding sequence decoded one
token. Each sequence stores its KV length and output count at the clock value when it joined;
its current values are those plus ``clock - join_clock``. Which sequences need a fresh KV block
in an iteration depends only on their KV length modulo the block size, kept as a histogram; the
clock values at which sequences finish sit in a heap, and, where the step-time model needs the
longest context (padded decode attention), the members by KV length in another. So planning and
applying a stretch of identical decode iterations costs time independent of the batch size and
the stretch length.
"""

from __future__ import annotations

import heapq

from sim.request import Request


class DecodeSet:
    """Decoding sequences of one replica, with block-growth and finish-time arithmetic."""

    def __init__(self, block_size: int, longest_context: bool = False) -> None:
        self.block_size = block_size
        self.clock = 0
        self.members: dict[int, Request] = {}  # rid -> request, in joining order
        self._finish_heap: list[tuple[int, int, int, Request]] = []
        # (-(kv_tokens - join_clock), admit_seq, epoch, request), kept only when asked for
        self._longest_heap: list[tuple[int, int, int, Request]] | None = (
            [] if longest_context else None
        )
        self._residues = [0] * block_size  # members by (kv_tokens - join_clock) % block_size
        self._context_base = 0  # sum over members of kv_tokens - join_clock
        self._joins = 0

    def __len__(self) -> int:
        return len(self.members)

    def blocks_for(self, tokens: int) -> int:
        """KV blocks that hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    # ----------------------------------------------------------------- membership
    def join(self, req: Request) -> None:
        """Add a request whose `kv_tokens` and `generated` are current."""
        req.join_clock = self.clock
        req.finish_clock = self.clock + req.output_tokens - req.generated
        req.epoch += 1
        self._joins += 1
        req.admit_seq = self._joins
        self.members[req.rid] = req
        self._residues[(req.kv_tokens - req.join_clock) % self.block_size] += 1
        self._context_base += req.kv_tokens - req.join_clock
        heapq.heappush(self._finish_heap, (req.finish_clock, req.admit_seq, req.epoch, req))
        if self._longest_heap is not None:
            entry = (req.join_clock - req.kv_tokens, req.admit_seq, req.epoch, req)
            heapq.heappush(self._longest_heap, entry)

    def leave(self, req: Request) -> None:
        """Remove a member, bringing its `kv_tokens`, `generated` and `blocks` up to date."""
        del self.members[req.rid]
        self._residues[(req.kv_tokens - req.join_clock) % self.block_size] -= 1
        self._context_base -= req.kv_tokens - req.join_clock
        steps = self.clock - req.join_clock
        req.kv_tokens += steps
        req.generated += steps
        req.blocks = self.blocks_for(req.kv_tokens)
        req.epoch += 1

    def newest(self) -> Request:
        """The member that joined last (the first to preempt)."""
        return next(reversed(self.members.values()))

    # ----------------------------------------------------------------- arithmetic
    def context_sum(self) -> int:
        """Positions the next decode iteration attends, summed over members (KV + new token)."""
        return self._context_base + len(self.members) * (self.clock + 1)

    def max_context(self) -> int:
        """Positions the longest member attends in the next decode iteration (KV + new token).

        Only for a set made with `longest_context`; 0 when empty.
        """
        heap = self._longest_heap
        assert heap is not None, "DecodeSet(longest_context=True) tracks the longest context"
        while heap and heap[0][2] != heap[0][3].epoch:
            heapq.heappop(heap)
        return -heap[0][0] + self.clock + 1 if heap else 0

    def new_blocks(self, iterations: int) -> int:
        """Blocks the members allocate over the next `iterations` decode iterations."""
        bs, clock = self.block_size, self.clock
        if iterations == 1:
            return self._residues[-clock % bs]
        cycles, rest = divmod(iterations, bs)
        n = len(self.members)
        return cycles * n + sum(self._residues[(-(clock + i)) % bs] for i in range(rest))

    def iterations_within(self, free_blocks: int, limit: int) -> int:
        """Most decode iterations (<= limit) whose new blocks fit in `free_blocks`."""
        bs, n, clock = self.block_size, len(self.members), self.clock
        cycles = min(limit // bs, free_blocks // n)
        done, used = cycles * bs, cycles * n
        while done < limit:
            extra = self._residues[(-(clock + done)) % bs]
            if used + extra > free_blocks:
                break
            used += extra
            done += 1
        return done

    def iterations_to_next_finish(self) -> int:
        """Decode iterations until the next member produces its last token."""
        heap = self._finish_heap
        while heap[0][2] != heap[0][3].epoch:
            heapq.heappop(heap)
        return heap[0][0] - self.clock

    def advance(self, iterations: int) -> list[Request]:
        """Run `iterations` decode iterations; returns the members that finished (removed)."""
        self.clock += iterations
        finished = []
        heap = self._finish_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if req.epoch == epoch:
                self.leave(req)
                finished.append(req)
        return finished
