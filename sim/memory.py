"""Device memory of a replica: weights, and the KV-cache blocks that fit beside them."""

from __future__ import annotations

from sim.catalog import BYTES_PER_DTYPE
from sim.errors import UserError
from sim.scenario import Scenario


def weight_bytes(scenario: Scenario) -> float:
    """Bytes of the model's weights at the scenario's weight precision (whole replica)."""
    return scenario.model_shape().total_params * BYTES_PER_DTYPE[scenario.model.weight_dtype]


def kv_bytes_per_token(scenario: Scenario) -> float:
    """Bytes of K and V per token over all layers and the replica's GPUs at the scenario's KV
    precision; a KV head replicated on several GPUs (tp > kv_heads) is stored on each."""
    shape, tp = scenario.model_shape(), scenario.fleet.tp
    stored_heads = shape.kv_heads_per_gpu(tp) * tp
    values = shape.kv_values_per_token // shape.kv_heads * stored_heads
    return values * BYTES_PER_DTYPE[scenario.model.kv_dtype]


def kv_capacity_blocks(scenario: Scenario) -> int:
    """KV-cache blocks per replica: tp x memory x gpu_memory_utilization, less the weights.

    Activation workspace is not subtracted (vLLM profiles it; it is small beside the KV cache
    at these batch sizes). Raises UserError when the weights alone do not fit.
    """
    gpu, tp = scenario.accelerator(), scenario.fleet.tp
    usable = tp * gpu.mem_gb * 1e9 * scenario.batcher.gpu_memory_utilization
    free = usable - weight_bytes(scenario)
    block_bytes = scenario.batcher.block_size * kv_bytes_per_token(scenario)
    if free < block_bytes:
        raise UserError(
            f"{scenario.name}: model.name = '{scenario.model.name}' "
            f"({weight_bytes(scenario) / 1e9:.1f} GB of {scenario.model.weight_dtype} weights) "
            f"does not fit on fleet.tp = {tp} x fleet.gpu = '{scenario.fleet.gpu}' "
            f"({usable / 1e9:.1f} GB usable); raise fleet.tp or use a smaller weight_dtype"
        )
    return int(free // block_bytes)


def swap_s_per_block(scenario: Scenario) -> float:
    """Seconds to move one KV-cache block between GPU and host memory, one way.

    Each of the replica's `tp` GPUs moves its shard over its own host link at once.
    """
    gpu = scenario.accelerator()
    block_bytes = scenario.batcher.block_size * kv_bytes_per_token(scenario)
    return block_bytes / (gpu.host_bw_gb_s * 1e9 * scenario.fleet.tp)
