"""One request's mutable state while it is inside a replica."""

from __future__ import annotations

# Why a request is rejected (the `reason` of rejections.parquet), and what that means.
REJECTION_REASONS: dict[str, str] = {
    "max_context": "longer than the model's context (prompt + output tokens > max_context)",
    "kv_cache": "needing more KV-cache blocks than a replica has",
    "max_num_batched_tokens": "longer than max_num_batched_tokens without chunked_prefill "
    "(a recompute could never be scheduled)",
}


class Request:
    """A request as a replica sees it. Token counts in tokens, times in seconds.

    While a request decodes, `kv_tokens` and `generated` hold their values at `join_clock`, the
    replica's decode clock when it joined the decoding set: each decode iteration adds one to
    both, so they are derived rather than updated every iteration (see ``sim.batcher``).
    """

    __slots__ = (
        "rid",
        "class_index",
        "priority",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "generated",
        "kv_tokens",
        "blocks",
        "join_clock",
        "finish_clock",
        "epoch",
        "admit_seq",
        "prefill_target",
        "prefix_hashes",
    )

    def __init__(
        self,
        rid: int,
        class_index: int,
        priority: int,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        prefix_hashes: tuple[int, ...] = (),
    ) -> None:
        self.rid = rid
        self.class_index = class_index
        self.priority = priority
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.generated = 0
        self.kv_tokens = 0
        self.blocks = 0
        self.join_clock = 0
        self.finish_clock = 0
        self.epoch = 0
        self.admit_seq = 0
        self.prefill_target = 0
        self.prefix_hashes = prefix_hashes

    def restarted(self) -> Request:
        """The same request as it arrived, to start over on another replica."""
        return Request(
            self.rid,
            self.class_index,
            self.priority,
            self.arrival_s,
            self.prompt_tokens,
            self.output_tokens,
            self.prefix_hashes,
        )

    @property
    def known_tokens(self) -> int:
        """Prompt plus generated tokens: what a (re)computing prefill must process."""
        return self.prompt_tokens + self.generated
