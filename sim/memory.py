"""Device memory of a replica: weights, and the KV-cache blocks that fit beside them."""

from __future__ import annotations

from sim.catalog import BYTES_PER_DTYPE, Accelerator, ModelShape


def weight_bytes(model: ModelShape, weight_dtype: str) -> float:
    """Bytes of the model's weights at `weight_dtype` (whole replica, all `tp` GPUs)."""
    return model.total_params * BYTES_PER_DTYPE[weight_dtype]


def kv_bytes_per_token(model: ModelShape, kv_dtype: str, tp: int) -> float:
    """Bytes of K and V per token over all layers and a replica's `tp` GPUs at `kv_dtype`; a
    KV head replicated on several GPUs (tp > kv_heads, vLLM) is stored on each."""
    stored_heads = model.kv_heads_per_gpu(tp) * tp
    return model.kv_values_per_token // model.kv_heads * stored_heads * BYTES_PER_DTYPE[kv_dtype]


def usable_bytes(gpu: Accelerator, tp: int, gpu_memory_utilization: float) -> float:
    """Device memory a replica may fill: tp x memory x gpu_memory_utilization."""
    return tp * gpu.mem_gb * 1e9 * gpu_memory_utilization


def kv_capacity_blocks(free_bytes: float, block_tokens: int, bytes_per_token: float) -> int:
    """KV-cache blocks of `block_tokens` tokens that fit in `free_bytes` (may be <= 0).

    `free_bytes` is the usable memory less the weights. Activation workspace is not subtracted
    (vLLM profiles it; it is small beside the KV cache at these batch sizes).
    """
    return int(free_bytes // (block_tokens * bytes_per_token))


def swap_s_per_block(gpu: Accelerator, tp: int, block_tokens: int, bytes_per_token: float) -> float:
    """Seconds to move one KV-cache block between GPU and host memory, one way.

    Each of the replica's `tp` GPUs moves its shard over its own host link at once.
    """
    return block_tokens * bytes_per_token / (gpu.host_bw_gb_s * 1e9 * tp)
