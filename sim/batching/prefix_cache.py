"""Prefix caching: KV blocks of shared prompt prefixes kept for reuse, evicted least recently used.

A request carries the hashes of its prompt's prefix blocks (``prefix_block_tokens`` tokens
each: 512 in the Mooncake trace, the KV block size for synthetic shared prompts). Admission
looks up the longest run of leading blocks present in the cache; those tokens skip prefill.
A prefilled request's blocks are then inserted. Cached blocks live in KV memory that running
requests do not use, and are evicted least recently used when running requests need it.

Simplification: a running request holds its own copy of its prefix blocks, so sharing saves
prefill compute but not memory among requests that run at the same time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """LRU directory of prefix blocks by hash, sized in KV-cache blocks."""

    def __init__(self, prefix_block_tokens: int, kv_block_size: int) -> None:
        self.prefix_block_tokens = prefix_block_tokens
        self.kv_blocks_per_entry = -(-prefix_block_tokens // kv_block_size)
        self._entries: OrderedDict[int, None] = OrderedDict()

    @property
    def kv_blocks(self) -> int:
        """KV-cache blocks the cached prefixes occupy."""
        return len(self._entries) * self.kv_blocks_per_entry

    def cached_tokens(self, hashes: Sequence[int], prompt_tokens: int) -> int:
        """Leading prompt tokens found in the cache (at least one token is left to compute).

        A look-up does not count as a use: only `insert` refreshes recency, so how often a
        waiting request is looked at does not change what is evicted.
        """
        entries, matched = self._entries, 0
        for h in hashes:
            if h not in entries:
                break
            matched += 1
        return min(matched * self.prefix_block_tokens, prompt_tokens - 1)

    def insert(self, hashes: Sequence[int]) -> None:
        """Keep (or refresh) a prefilled request's prefix blocks as the most recently used."""
        for h in hashes:
            self._entries[h] = None
            self._entries.move_to_end(h)

    def evict_to(self, max_kv_blocks: int) -> None:
        """Drop least recently used blocks until the cache fits in `max_kv_blocks`."""
        while self._entries and self.kv_blocks > max(max_kv_blocks, 0):
            self._entries.popitem(last=False)
