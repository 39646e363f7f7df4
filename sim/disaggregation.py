"""Disaggregated serving: a model's prefill pools hand each request's KV cache to its decode pools.

A request of a model served by prefill and decode pools (``role``, docs/disaggregation.md):

1. arrives: it is rejected at once if some decode pool could never hold its KV cache (prompt
   and output); else the router of the prefill pools picks a prefill replica;
2. is prefilled there (chunked or not, as that pool batches), which produces its first token;
   a request of one output token is then complete;
3. is handed off: the router of the decode pools picks a decode replica, where it waits until
   the blocks of its KV cache (its prompt tokens) and a batch slot are free; the decode
   replica reserves them at an iteration boundary (:mod:`sim.batching.disaggregated`), which
   starts the transfer; until it ends, the prefill replica keeps the KV cache in its memory;
4. is transferred over the link of its prefill replica (:class:`KvLink`): transfers queue
   there, first reserved first sent, one at a time, each taking
   ``latency + prompt tokens x KV bytes per token / (bandwidth x lanes)``. Layout: tensor
   parallelism splits the KV heads over a replica's GPUs, and each GPU sends its shard over its
   own port at once, so ``lanes = min(prefill tp, decode tp, KV heads)`` ports carry a transfer
   (the side with fewer GPUs limits it; a KV head replicated on several GPUs is sent once).
   The decode side's ports are not modelled: a decode replica may receive from several
   prefill replicas at once;
5. decodes on the decode replica from the next iteration boundary after its transfer ended.

Events: one URGENT event per transfer (its end, so that an iteration boundary at that time sees
the KV cache, in step-by-step and compressed mode alike), plus the replicas waking up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import simpy

from sim.batching.disaggregated import DecodeBatcher, PrefillBatcher
from sim.events import urgent_after
from sim.fleet_config import DECODE, PREFILL
from sim.memory import kv_bytes_per_token
from sim.recorder import Recorder
from sim.request import Request
from sim.runspec import Interconnect, PoolSpec

if TYPE_CHECKING:
    from sim.fleet import RouteGroup
    from sim.replica import Replica


class KvLink:
    """The KV-transfer link of one prefill replica: one transfer at a time, first come first.

    `done(req, decode)` is called when the transfer of `req` to the replica `decode` has ended.
    """

    def __init__(
        self, env: simpy.Environment, recorder: Recorder, done: Callable[[Request, int], None]
    ) -> None:
        self.env, self.recorder, self.done = env, recorder, done
        self.queue: deque[tuple[Request, int, float]] = deque()
        self.current: tuple[Request, int] | None = None

    def send(self, req: Request, decode: int, duration_s: float) -> None:
        """Transfer the KV cache of `req` to replica `decode` (`duration_s` seconds) after those
        already waiting."""
        if self.current is None:
            self._start(req, decode, duration_s)
        else:
            self.queue.append((req, decode, duration_s))

    def _start(self, req: Request, decode: int, duration_s: float) -> None:
        self.current = (req, decode)
        self.recorder.kv_transfer_start_s[req.rid] = self.env.now
        urgent_after(self.env, duration_s, self._end)

    def _end(self, _event: simpy.Event) -> None:
        assert self.current is not None
        req, decode = self.current
        self.recorder.kv_transfer_end_s[req.rid] = self.env.now
        self.current = None
        if self.queue:
            self._start(*self.queue.popleft())
        self.done(req, decode)


class Disaggregation:
    """One model served by prefill and decode pools: arrivals, hand-offs and KV transfers.

    The fleet builds the two route groups with :meth:`prefill_batcher` and
    :meth:`decode_batcher` and then calls :meth:`connect`.
    """

    def __init__(
        self,
        env: simpy.Environment,
        recorder: Recorder,
        interconnect: Interconnect,
        pools: list[PoolSpec],
        prefix_block_tokens: int,
    ) -> None:
        self.env, self.recorder = env, recorder
        self.prefix_block_tokens = prefix_block_tokens
        self.prefill: RouteGroup
        self.decode: RouteGroup
        self._pool = {i: p for p in pools for i in p.replica_indices}
        self._latency_s = interconnect.latency_s
        self._bytes_per_s = interconnect.bandwidth_gb_s * 1e9
        self._prefill_batchers: dict[int, PrefillBatcher] = {}
        self._decode_batchers: dict[int, DecodeBatcher] = {}
        self._links: dict[int, KvLink] = {}
        self._fits: dict[int, DecodeBatcher] = {}  # one batcher per decode pool (its index)
        self._replicas: dict[int, Replica] = {}

    # ----------------------------------------------------------------- construction
    def prefill_batcher(
        self, pool: PoolSpec, index: int, departed: Callable[[int], None]
    ) -> PrefillBatcher:
        """The batcher of prefill replica `index`, with its KV link."""
        batcher = PrefillBatcher.of(
            pool, self.recorder, departed, self.prefix_block_tokens, self._handoff
        )
        self._prefill_batchers[index] = batcher
        self._links[index] = KvLink(self.env, self.recorder, self._transferred)
        return batcher

    def decode_batcher(
        self, pool: PoolSpec, index: int, departed: Callable[[int], None]
    ) -> DecodeBatcher:
        """The batcher of decode replica `index`."""
        reserved = partial(self._reserved, index)
        batcher = DecodeBatcher.of(
            pool, self.recorder, departed, self.prefix_block_tokens, reserved
        )
        self._decode_batchers[index] = batcher
        self._fits.setdefault(pool.index, batcher)
        return batcher

    def connect(self, prefill: RouteGroup, decode: RouteGroup) -> None:
        """The route groups of the prefill and of the decode pools, built with this object's
        batchers."""
        self.prefill, self.decode = prefill, decode
        self._replicas = {r.index: r for r in (*prefill.replicas, *decode.replicas)}

    # ----------------------------------------------------------------- a request's way
    def submit(self, req: Request) -> None:
        """An arrived request: rejected if a decode pool could never hold it, else routed to a
        prefill replica."""
        for batcher in self._fits.values():
            reason = batcher.rejection(req)
            if reason is not None:
                self.recorder.rejected(req.rid, reason)
                return
        self.prefill.submit(req)

    def _handoff(self, req: Request) -> None:
        """`req` is prefilled and needs more tokens: to a decode replica."""
        self.decode.submit(req)

    def _reserved(self, decode: int, req: Request) -> None:
        """Replica `decode` reserved blocks for `req`: its transfer joins its prefill replica's
        link."""
        prefill = self.recorder.prefill_replica[req.rid]
        self._links[prefill].send(req, decode, self.transfer_s(req, prefill, decode))

    def transfer_s(self, req: Request, prefill: int, decode: int) -> float:
        """Seconds the link takes to move the KV cache of `req` from replica `prefill` to replica
        `decode`: latency + bytes / (bandwidth x lanes), lanes = min of their tp."""
        source, target = self._pool[prefill], self._pool[decode]
        shape = source.model_shape
        # each KV head once (a head replicated over GPUs, tp > kv_heads, is sent by one of them)
        kv_bytes = req.prompt_tokens * kv_bytes_per_token(shape, source.kv_dtype, 1)
        lanes = min(source.tp, target.tp, shape.kv_heads)
        return self._latency_s + kv_bytes / (self._bytes_per_s * lanes)

    def _transferred(self, req: Request, decode: int) -> None:
        """The KV cache of `req` reached replica `decode`: the prefill replica frees it, the
        decode replica decodes it."""
        prefill = self.recorder.prefill_replica[req.rid]
        if self._prefill_batchers[prefill].transferred(req):
            self._replicas[prefill].wake()
        self._decode_batchers[decode].kv_arrived(req)
        self._replicas[decode].wake()


def split_pools(pools: list[PoolSpec]) -> tuple[list[PoolSpec], list[PoolSpec]]:
    """The prefill pools and the decode pools among `pools`."""
    return [p for p in pools if p.role == PREFILL], [p for p in pools if p.role == DECODE]
