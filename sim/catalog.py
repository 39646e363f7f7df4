"""Catalogue of accelerators and model shapes, with the arithmetic that follows from a shape.

Entries live in ``sim/data/catalog.toml`` (each with its source); a scenario may add its own under
``[accelerators.NAME]`` or ``[models.NAME]`` with the same fields. The links between nodes that
carry KV caches from prefill to decode replicas are there too.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

BYTES_PER_DTYPE: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


class Accelerator(BaseModel):
    """Datasheet figures of one accelerator (dense peaks; units in the field names)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    bf16_tflops: float = Field(gt=0, description="dense BF16 peak, TFLOP/s")
    fp8_tflops: float | None = Field(
        default=None, gt=0, description="dense FP8 peak; None = no units"
    )
    mem_gb: float = Field(gt=0, description="device memory, GB (1e9 bytes)")
    mem_bw_gb_s: float = Field(gt=0, description="memory bandwidth, GB/s")
    link_bw_gb_s: float = Field(default=0.0, ge=0, description="scale-up link per GPU, bidir GB/s")
    link_latency_us: float = Field(default=8.0, ge=0, description="latency of one all-reduce, us")
    host_bw_gb_s: float = Field(default=32.0, gt=0, description="host link, one direction, GB/s")
    tdp_w: float = Field(default=700.0, gt=0, description="board power, W")
    gpus_per_node: int | None = Field(
        default=None,
        ge=1,
        description="GPUs of one scale-up (NVLink) domain, the most one replica may span; "
        "required for a fleet's accelerator (absent from runs saved before it existed)",
    )
    source: str = "user-defined"

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s for matrix work with weights of `dtype` (fp8 only where the units exist)."""
        if dtype == "fp8" and self.fp8_tflops is not None:
            return self.fp8_tflops * 1e12
        return self.bf16_tflops * 1e12


class ModelShape(BaseModel):
    """Decoder-only transformer shape (grouped-query attention, gated MLP, optional experts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn: int = Field(gt=0, description="intermediate size of one (expert) MLP")
    vocab: int = Field(gt=0)
    experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    max_context: int | None = Field(
        default=None,
        gt=0,
        description="longest prompt + output, tokens (max_position_embeddings); required for a "
        "served model, absent from the shapes of measured profiles",
    )
    source: str = "user-defined"

    @model_validator(mode="after")
    def _experts_consistent(self) -> ModelShape:
        if self.experts_per_token > self.experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) exceeds experts ({self.experts})"
            )
        return self

    def tensor_parallel_problem(self, tp: int) -> str | None:
        """Why `tp` GPUs cannot split this model, or None; vLLM's rule: tp must divide the
        attention heads, and the KV heads, or be a multiple of them (each KV head is then
        replicated on tp / kv_heads GPUs). vllm/config.py (ModelConfig.
        verify_with_parallel_config) and vllm/model_executor/layers/linear.py
        (QKVParallelLinear)."""
        if self.heads % tp:
            return f"tp = {tp} does not divide the {self.heads} attention heads"
        if self.kv_heads % tp and tp % self.kv_heads:
            return (
                f"tp = {tp} neither divides the {self.kv_heads} KV heads nor is a multiple of "
                "them (to replicate each on tp / kv_heads GPUs)"
            )
        return None

    def kv_heads_per_gpu(self, tp: int) -> int:
        """KV heads each of `tp` GPUs stores: its share, or one replicated head when tp
        exceeds the KV heads."""
        return max(self.kv_heads // tp, 1)

    @property
    def attn_params_per_layer(self) -> int:
        """Weights of the Q, K, V and output projections of one layer."""
        q_out = self.heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        return self.hidden * (q_out + 2 * kv_out) + q_out * self.hidden

    @property
    def expert_params(self) -> int:
        """Weights of one gated MLP (gate, up and down projections)."""
        return 3 * self.hidden * self.ffn

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden * self.experts if self.experts > 1 else 0

    @property
    def total_params(self) -> int:
        """All weights, embeddings and LM head included (untied)."""
        per_layer = (
            self.attn_params_per_layer
            + self.experts * self.expert_params
            + self.router_params_per_layer
        )
        return self.layers * per_layer + 2 * self.vocab * self.hidden

    @property
    def active_params(self) -> int:
        """Weights a single token passes through (embedding lookup excluded, LM head included)."""
        per_layer = (
            self.attn_params_per_layer
            + self.experts_per_token * self.expert_params
            + self.router_params_per_layer
        )
        return self.layers * per_layer + self.vocab * self.hidden

    @property
    def kv_values_per_token(self) -> int:
        """K and V values stored per token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim


def canonical_id(name: str, ids: Iterable[str]) -> str:
    """The id among `ids` that `name` spells ignoring case (H100 -> h100); `name` if none."""
    if name in ids:
        return name
    matches = [i for i in ids if i.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else name


class Link(BaseModel):
    """A network link between replicas of one catalogue entry: per GPU, one direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    bandwidth_gb_s: float = Field(gt=0, description="per GPU, one direction, GB/s")
    latency_us: float = Field(ge=0, description="per transfer, us")
    source: str


@cache
def _catalog() -> dict:
    text = resources.files("sim").joinpath("data/catalog.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@cache
def builtin_accelerators() -> dict[str, Accelerator]:
    """The catalogue's accelerators by id (a100, h100, h200, b200, mi300x)."""
    return {k: Accelerator(**v) for k, v in _catalog()["accelerators"].items()}


@cache
def builtin_models() -> dict[str, ModelShape]:
    """The catalogue's model shapes by id (llama-3-8b, llama-3-70b, ...)."""
    return {k: ModelShape(**v) for k, v in _catalog()["models"].items()}


@cache
def builtin_links() -> dict[str, Link]:
    """The catalogue's links between nodes by id (infiniband)."""
    return {k: Link(**v) for k, v in _catalog()["interconnects"].items()}
