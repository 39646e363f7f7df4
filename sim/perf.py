"""Step-time models: how long one batch iteration of a replica takes, in seconds.

Two models share one small protocol:

* :class:`Roofline` counts the FLOPs and bytes of an iteration from the model shape and divides
  them by the achieved compute and memory rates of the replica's GPUs (datasheet peak x
  efficiency), adds tensor-parallel all-reduces on the scale-up link and a fixed overhead.
* :class:`ServiceTime` draws each iteration's duration from a distribution (for validation).

An iteration is described by :class:`StepWork` aggregates, so the cost of computing a step time
does not grow with the batch size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sim.catalog import BYTES_PER_DTYPE, Accelerator, ModelShape
from sim.scenario import RooflineConfig, Scenario, ServiceTimeConfig

ACTIVATION_BYTES = 2.0  # bf16 activations exchanged by tensor-parallel all-reduces


@dataclass(slots=True)
class StepWork:
    """What one iteration computes, summed over its sequences (all counts in tokens).

    prefill_tokens: new prompt tokens processed; prefill_attn_pairs: (query, key) position pairs
    of those tokens under causal attention; prefill_cached_tokens: already-cached context the
    prefill chunks attend to; logit_tokens: tokens that produce logits; decode_seqs: sequences
    decoding one token; decode_context: sum of their attended context lengths.
    """

    prefill_tokens: int = 0
    prefill_attn_pairs: int = 0
    prefill_cached_tokens: int = 0
    logit_tokens: int = 0
    decode_seqs: int = 0
    decode_context: int = 0

    def add_prefill(self, new_tokens: int, cached_tokens: int, emits_logits: bool) -> None:
        """Add a prefill chunk of `new_tokens` after `cached_tokens` already in the KV cache."""
        self.prefill_tokens += new_tokens
        self.prefill_attn_pairs += new_tokens * cached_tokens + new_tokens * (new_tokens + 1) // 2
        self.prefill_cached_tokens += cached_tokens
        self.logit_tokens += 1 if emits_logits else 0


class StepTimeModel(Protocol):
    """Gives iteration times in seconds; one instance per replica."""

    def step_s(self, work: StepWork) -> float:
        """Duration of one iteration."""
        ...

    def decode_stretch_s(self, num_seqs: int, context_sum: int, iterations: int) -> list[float]:
        """Durations of `iterations` pure decode iterations of `num_seqs` sequences.

        The first iteration attends `context_sum` positions in all; each next one `num_seqs`
        more. This is the hot path of step compression.
        """
        ...

    def unuse(self, count: int) -> None:
        """The last `count` durations of the last stretch were not run: hand them out again."""
        ...


@dataclass(frozen=True)
class StepCounts:
    """FLOPs and bytes of one iteration on one replica (before splitting over `tp` GPUs)."""

    matmul_flops: float
    attention_flops: float
    weight_bytes: float
    kv_bytes: float
    tokens: int


class Roofline:
    """Roofline step time of a model on `tp` GPUs of one accelerator type."""

    def __init__(
        self,
        model: ModelShape,
        gpu: Accelerator,
        tp: int,
        cfg: RooflineConfig,
        weight_dtype: str = "bf16",
        kv_dtype: str = "bf16",
    ) -> None:
        self.model, self.gpu, self.tp, self.cfg = model, gpu, tp, cfg
        self.weight_bytes_per_param = BYTES_PER_DTYPE[weight_dtype]
        self.kv_bytes_per_token = model.kv_values_per_token * BYTES_PER_DTYPE[kv_dtype]
        self.matmul_rate = gpu.peak_flops(weight_dtype) * cfg.compute_efficiency * tp
        self.attention_rate = gpu.peak_flops("bf16") * cfg.compute_efficiency * tp
        self.memory_rate = gpu.mem_bw_gb_s * 1e9 * cfg.memory_efficiency * tp
        # per-token coefficients, so that the decode hot path is a few multiplications
        m = model
        self._linear_flops_per_token = (
            2.0
            * m.layers
            * (
                m.attn_params_per_layer
                + m.experts_per_token * m.expert_params
                + m.router_params_per_layer
            )
        )
        self._head_flops_per_logit = 2.0 * m.vocab * m.hidden
        self._attn_flops_per_pair = 4.0 * m.layers * m.heads * m.head_dim
        self._dense_weight_bytes = (
            self.weight_bytes_per_param
            * m.layers
            * (m.attn_params_per_layer + m.router_params_per_layer)
            + self.weight_bytes_per_param * m.vocab * m.hidden
        )
        self._expert_bytes = self.weight_bytes_per_param * m.layers * m.expert_params

    def experts_touched(self, tokens: int) -> float:
        """Expected experts per layer that `tokens` tokens route to (uniform top-k routing)."""
        m = self.model
        if m.experts == 1:
            return 1.0
        return m.experts * (1.0 - (1.0 - m.experts_per_token / m.experts) ** tokens)

    def counts(self, work: StepWork) -> StepCounts:
        """FLOPs and bytes of one iteration of the whole replica."""
        tokens = work.prefill_tokens + work.decode_seqs
        logits = work.logit_tokens + work.decode_seqs
        matmul = tokens * self._linear_flops_per_token + logits * self._head_flops_per_logit
        attention = (work.prefill_attn_pairs + work.decode_context) * self._attn_flops_per_pair
        weights = self._dense_weight_bytes + self.experts_touched(tokens) * self._expert_bytes
        kv_read = work.decode_context + work.prefill_cached_tokens
        kv = (kv_read + tokens) * self.kv_bytes_per_token
        return StepCounts(matmul, attention, weights, kv, tokens)

    def comm_s(self, tokens: int) -> float:
        """Two ring all-reduces per layer of the tokens' activations over the scale-up link."""
        if self.tp == 1:
            return 0.0
        size = tokens * self.model.hidden * ACTIVATION_BYTES
        one_way_bw = self.gpu.link_bw_gb_s * 1e9 / 2.0
        per_all_reduce = self.gpu.link_latency_us * 1e-6 + 2.0 * (self.tp - 1) / self.tp * (
            size / one_way_bw
        )
        return 2 * self.model.layers * per_all_reduce

    def time_of(self, c: StepCounts) -> float:
        """Seconds for given counts: the slower of compute and memory, plus communication."""
        compute = c.matmul_flops / self.matmul_rate + c.attention_flops / self.attention_rate
        memory = (c.weight_bytes + c.kv_bytes) / self.memory_rate
        return max(compute, memory) + self.comm_s(c.tokens) + self.cfg.overhead_s

    def step_s(self, work: StepWork) -> float:
        return self.time_of(self.counts(work))

    def decode_stretch_s(self, num_seqs: int, context_sum: int, iterations: int) -> list[float]:
        # compute and memory time are linear in the context sum while the batch is fixed
        base = self.counts(StepWork(decode_seqs=num_seqs, decode_context=context_sum))
        compute = base.matmul_flops / self.matmul_rate + base.attention_flops / self.attention_rate
        memory = (base.weight_bytes + base.kv_bytes) / self.memory_rate
        d_compute = num_seqs * self._attn_flops_per_pair / self.attention_rate
        d_memory = num_seqs * self.kv_bytes_per_token / self.memory_rate
        fixed = self.comm_s(num_seqs) + self.cfg.overhead_s
        return [
            max(compute + i * d_compute, memory + i * d_memory) + fixed for i in range(iterations)
        ]

    def unuse(self, count: int) -> None:
        """Deterministic model: nothing to hand out again."""


class ServiceTime:
    """Iteration durations drawn i.i.d. from a distribution of mean `mean_s` (and CV `cv`)."""

    def __init__(self, cfg: ServiceTimeConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self._returned: deque[float] = deque()
        self._last_stretch: list[float] = []

    def _draw(self) -> float:
        if self._returned:
            return self._returned.popleft()
        cfg, rng = self.cfg, self.rng
        if cfg.distribution == "deterministic":
            return cfg.mean_s
        if cfg.distribution == "exponential":
            return float(rng.exponential(cfg.mean_s))
        if cfg.distribution == "gamma":
            shape = 1.0 / cfg.cv**2
            return float(rng.gamma(shape, cfg.mean_s / shape))
        sigma2 = np.log1p(cfg.cv**2)
        return float(rng.lognormal(np.log(cfg.mean_s) - sigma2 / 2.0, np.sqrt(sigma2)))

    def _factor(self, batch: int) -> int:
        return batch if self.cfg.scale_with_batch else 1

    def step_s(self, work: StepWork) -> float:
        return self._draw() * self._factor(work.decode_seqs + work.logit_tokens)

    def decode_stretch_s(self, num_seqs: int, context_sum: int, iterations: int) -> list[float]:
        self._last_stretch = [self._draw() for _ in range(iterations)]
        factor = self._factor(num_seqs)
        return [d * factor for d in self._last_stretch]

    def unuse(self, count: int) -> None:
        if count:
            self._returned.extendleft(reversed(self._last_stretch[-count:]))
        self._last_stretch = []


def make_step_time_model(scenario: Scenario, rng: np.random.Generator) -> StepTimeModel:
    """The scenario's step-time model for one replica (`rng` is that replica's own stream)."""
    cfg = scenario.perf
    if isinstance(cfg, ServiceTimeConfig):
        return ServiceTime(cfg, rng)
    return Roofline(
        scenario.model_shape(),
        scenario.accelerator(),
        scenario.fleet.tp,
        cfg,
        scenario.model.weight_dtype,
        scenario.model.kv_dtype,
    )
