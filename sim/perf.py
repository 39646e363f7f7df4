"""Step-time models: how long one batch iteration of a replica takes, in seconds.

The models share one small protocol:

* :class:`Roofline` counts, kernel by kernel, the FLOPs and bytes of an iteration from the model
  shape (the GEMMs of each layer, attention, element-wise kernels, the LM head), gives each kernel
  the time of the slower of its compute and its memory traffic at the achieved rates of one GPU
  (datasheet peak x efficiency), sums the kernels, and adds per-layer and per-iteration overheads
  and the tensor-parallel all-reduces on the scale-up link, and the host (CPU) time of the
  serving engine's iteration. The efficiencies and overheads are :class:`PerfParams`: defaults
  from measured ceilings, or fitted to a measured profile (``sim/calibration.py``) and to a live
  step log (``sim/live_fit.py``); optionally its durations carry fitted noise (``sim/noise.py``).
* :class:`ServiceTime` draws each iteration's duration from a distribution (for validation).
* :class:`~sim.replay.Replay` hands out the measured durations of a step log in order.

An iteration is described by :class:`StepWork` aggregates, so the cost of computing a step time
does not grow with the batch size.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from sim.catalog import BYTES_PER_DTYPE, Accelerator, ModelShape
from sim.scenario import RooflineConfig, ServiceTimeConfig

if TYPE_CHECKING:
    from sim.noise import StepNoise
    from sim.runspec import PoolSpec

HOST_PARAMS = ("host_prefill_step_s", "host_decode_step_s", "host_seq_s", "host_prompt_s")
DECODE_ATTENTION = ("summed", "padded")
NUMPY_STRETCH = 64  # stretches at least this long are computed with numpy (same results)
ACTIVATION_BYTES = 2.0  # bf16 activations: GEMM inputs/outputs, element-wise kernels, all-reduces


@dataclass(slots=True)
class StepWork:
    """What one iteration computes, summed over its sequences (all counts in tokens).

    prefill_tokens: new prompt tokens processed; prefill_attn_pairs: (query, key) position pairs
    of those tokens under causal attention; prefill_cached_tokens: already-cached context the
    prefill chunks attend to; logit_tokens: tokens that produce logits; prefill_seqs: prompt
    chunks (sequences with prompt tokens); decode_seqs: sequences decoding one token;
    decode_context: sum of their attended context lengths; decode_max_context: the longest of
    those (filled only where decode attention is padded, else 0); padded_seqs: rows a CUDA graph
    of a larger batch computes beside the decoding sequences (no context).
    """

    prefill_tokens: int = 0
    prefill_attn_pairs: int = 0
    prefill_cached_tokens: int = 0
    logit_tokens: int = 0
    prefill_seqs: int = 0
    decode_seqs: int = 0
    decode_context: int = 0
    decode_max_context: int = 0
    padded_seqs: int = 0

    def add_prefill(self, new_tokens: int, cached_tokens: int, emits_logits: bool) -> None:
        """Add a prefill chunk of `new_tokens` after `cached_tokens` already in the KV cache."""
        self.prefill_tokens += new_tokens
        self.prefill_attn_pairs += new_tokens * cached_tokens + new_tokens * (new_tokens + 1) // 2
        self.prefill_cached_tokens += cached_tokens
        self.logit_tokens += 1 if emits_logits else 0
        self.prefill_seqs += 1


class StepTimeModel(Protocol):
    """Gives iteration times in seconds; one instance per replica."""

    def step_s(self, work: StepWork) -> float:
        """Duration of one iteration."""
        ...

    def decode_stretch_s(
        self,
        num_seqs: int,
        context_sum: int,
        iterations: int,
        padded_seqs: int = 0,
        max_context: int = 0,
    ) -> Sequence[float]:
        """Durations of `iterations` pure decode iterations of `num_seqs` sequences.

        The first iteration attends `context_sum` positions in all, the longest sequence
        `max_context` (given where decode attention is padded, else 0); each next iteration one
        more per sequence. `padded_seqs` rows of CUDA-graph padding are computed too. A list, or
        a numpy array for long stretches. This is the hot path of step compression.
        """
        ...

    def unuse(self, count: int) -> None:
        """The last `count` durations of the last stretch were not run: hand them out again."""
        ...


@dataclass(frozen=True)
class PerfParams:
    """The physical parameters of :class:`Roofline` (efficiencies are fractions of peak).

    A GEMM of ``M`` rows costs ``2 (M + gemm_pad_tokens) N K`` FLOPs at ``gemm_efficiency`` of the
    peak: its achieved efficiency ``gemm_efficiency * M / (M + gemm_pad_tokens)`` saturates with
    the rows (tile padding and wave quantisation of small GEMMs). Decode attention reads the KV
    cache at ``kv_efficiency`` of the bandwidth as if each sequence had ``kv_pad_tokens`` more
    positions (the same saturating form in the context length), and takes at least
    ``decode_position_s`` per position of the mean context of a sequence: one sequence's
    attention is a few thread blocks walking its context serially, so a small batch cannot use
    the whole bandwidth. A kernel takes the smooth maximum
    ``(c^p + m^p)^(1/p)`` of its compute time ``c`` and memory time ``m``, ``p = overlap``
    (infinite: the plain roofline maximum; 1: no overlap at all). Fixed costs in seconds:
    ``gemm_overhead_s`` per GEMM kernel (ramp-up and tail), ``layer_overhead_s`` per layer,
    ``attention_overhead_s`` per layer that runs attention (its small kernels: RoPE, KV write,
    the attention launch), ``step_overhead_s`` per iteration. In a profile of one shape the costs
    per iteration, per GEMM and per layer are constants of every row and cannot be told apart; a
    fit over three shapes puts the first two at zero (the fixed costs of a step are those of the
    small kernels of each layer), so the shipped calibration holds them at 0 (docs/fidelity.md).

    Host (CPU) time of the serving engine, added to every iteration: ``host_prefill_step_s`` per
    iteration that prefills (alone or mixed with decodes), ``host_decode_step_s`` per pure decode
    iteration, ``host_seq_s`` per sequence in the iteration (decoding, or with a prompt chunk) and
    ``host_prompt_s`` more per prompt chunk: scheduling, input preparation, kernel launches that
    the GPU waits for, sampling. A profile of CUDA-graph steps holds none of it; they are fitted
    to a live step log of the engine (``sim perf fit --steps``, docs/fidelity.md).

    The defaults are a plain roofline at the ceilings measured on an H200 on the day of the shipped
    profile (``sim/data/h200_llama3-8b_bf16.csv``, README of the shared data): a bf16 8192^3
    matmul reached 797 of 989.4 TFLOP/s (0.80) and a 2 GiB device copy 2.75 of 4.8 TB/s (0.57);
    attention gets the matmul ceiling and the KV cache the copy ceiling; no overheads.
    """

    gemm_efficiency: float = 0.80
    gemm_pad_tokens: float = 0.0
    memory_efficiency: float = 0.57
    overlap: float = math.inf
    attention_efficiency: float = 0.80
    kv_efficiency: float = 0.57
    kv_pad_tokens: float = 0.0
    decode_position_s: float = 0.0
    gemm_overhead_s: float = 0.0
    layer_overhead_s: float = 0.0
    attention_overhead_s: float = 0.0
    step_overhead_s: float = 0.0
    host_prefill_step_s: float = 0.0
    host_decode_step_s: float = 0.0
    host_seq_s: float = 0.0
    host_prompt_s: float = 0.0

    @classmethod
    def from_config(cls, cfg: RooflineConfig) -> PerfParams:
        """Plain roofline at the scenario's efficiencies, with its overheads."""
        if cfg.calibration is not None:
            raise ValueError("a calibrated [perf] section: its parameters come from sim.resolve")
        return cls(
            gemm_efficiency=cfg.compute_efficiency,
            memory_efficiency=cfg.memory_efficiency,
            attention_efficiency=cfg.compute_efficiency,
            kv_efficiency=cfg.memory_efficiency,
            step_overhead_s=cfg.overhead_s,
            **{name: getattr(cfg, name) for name in HOST_PARAMS},
        )

    @classmethod
    def names(cls) -> list[str]:
        """The parameter names, in declaration order."""
        return [f.name for f in fields(cls)]


def smooth_max(a, b, p: float):
    """``(a^p + b^p)^(1/p)`` of non-negative times, for floats or numpy arrays alike.

    p = inf gives max(a, b), p = 1 gives a + b. Written as ``hi (1 + (lo/hi)^p)^(1/p)`` so that
    an infinite p needs no special case; the 1e-300 keeps 0/0 away and changes no result.
    """
    spread = abs(a - b)
    hi = (a + b + spread) * 0.5
    lo = (a + b - spread) * 0.5
    return hi * (1.0 + (lo / (hi + 1e-300)) ** p) ** (1.0 / p)


@dataclass(frozen=True)
class StepCounts:
    """FLOPs and bytes of one iteration on one replica (summed over its `tp` GPUs)."""

    matmul_flops: float
    attention_flops: float
    weight_bytes: float
    kv_bytes: float
    tokens: int


class Roofline:
    """Kernel-by-kernel roofline step time of a model on `tp` GPUs of one accelerator type.

    Each GPU holds 1/tp of every weight matrix (column- or row-parallel) and of the query heads;
    KV heads are split too, and replicated where there are fewer than `tp`. `layers` (default: all
    of the model's) is how many layers run, for profiles that measure a slice of a deep model.
    `decode_attention` = "padded" costs decode attention over the batch padded to its longest
    context (batch x longest positions), as engines that batch it as one dense tensor do;
    "summed" over each sequence's own context.
    All methods below work on one GPU, in seconds, and accept numpy arrays in place of counts
    (the calibration evaluates whole profiles at once).
    """

    def __init__(
        self,
        model: ModelShape,
        gpu: Accelerator,
        tp: int,
        params: PerfParams | RooflineConfig,
        weight_dtype: str = "bf16",
        kv_dtype: str = "bf16",
        layers: int | None = None,
        decode_attention: str = "summed",
    ) -> None:
        if isinstance(params, RooflineConfig):  # a scenario's [perf] section, uncalibrated
            params = PerfParams.from_config(params)
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        self.layers = model.layers if layers is None else layers
        self.padded_attention = decode_attention == "padded"
        m, p = model, params
        self.weight_bytes_per_param = BYTES_PER_DTYPE[weight_dtype]
        self.kv_bytes_per_value = BYTES_PER_DTYPE[kv_dtype]
        self.kv_bytes_per_token = m.kv_values_per_token * self.kv_bytes_per_value
        # per GPU: query heads, KV heads (replicated below one per GPU), expert FFN width
        self.q_width = m.heads / tp * m.head_dim
        self.kv_width = math.ceil(m.kv_heads / tp) * m.head_dim
        self.ffn_width = m.ffn / tp
        # achieved rates of one GPU
        self.gemm_flops_s = gpu.peak_flops(weight_dtype) * p.gemm_efficiency
        self.attention_flops_s = gpu.peak_flops("bf16") * p.attention_efficiency
        self.memory_bytes_s = gpu.mem_bw_gb_s * 1e9 * p.memory_efficiency
        self.kv_bytes_s = gpu.mem_bw_gb_s * 1e9 * p.kv_efficiency
        # (N, K) of the GEMMs of one layer that every token passes through, and of one expert
        h = m.hidden
        self.qkv_gemm = (self.q_width + 2 * self.kv_width, h)
        self.out_gemm = (h, self.q_width)
        self.router_gemm = (m.experts, h) if m.experts > 1 else None
        self.expert_gemms = ((2 * self.ffn_width, h), (h, self.ffn_width))
        self.head_gemm = (m.vocab / tp, h)
        # decode attention per layer: FLOPs and KV bytes per attended position, bytes per sequence
        self._decode_flops_per_pos = 4.0 * self.q_width
        self._kv_bytes_per_pos = 2.0 * self.kv_width * self.kv_bytes_per_value
        self._decode_seq_bytes = ACTIVATION_BYTES * 2.0 * self.q_width  # q in, output out
        self._decode_fixed_s: dict[int, float] = {}  # fixed_s of pure decode, by batch size

    @classmethod
    def for_pool(cls, pool: PoolSpec, rng: np.random.Generator) -> StepTimeModel:
        """The roofline of one replica of `pool`, its times multiplied by the pool's step-time
        noise drawn from `rng` when the noise is on (without noise `rng` is not used)."""
        setup = pool.perf
        model = cls(
            pool.model_shape,
            pool.accelerator,
            pool.tp,
            setup.params,
            pool.weight_dtype,
            pool.kv_dtype,
            decode_attention=setup.decode_attention,
        )
        if setup.noise is None:
            return model
        from sim.noise import NoisyStepTime  # sim.noise builds on this module

        return NoisyStepTime(model, setup.noise, rng)

    # ----------------------------------------------------------------- kernels of one GPU
    def gemm_s(self, rows, n: float, k: float):
        """One GEMM of `rows` tokens by an N x K weight: smooth max of compute and traffic."""
        p = self.params
        compute = 2.0 * (rows + p.gemm_pad_tokens) * n * k / self.gemm_flops_s
        traffic = n * k * self.weight_bytes_per_param + rows * (n + k) * ACTIVATION_BYTES
        return p.gemm_overhead_s + smooth_max(compute, traffic / self.memory_bytes_s, p.overlap)

    def experts_touched(self, tokens):
        """Expected experts per layer that `tokens` tokens route to (uniform top-k routing)."""
        m = self.model
        if m.experts == 1:
            return 1.0
        return m.experts * (1.0 - (1.0 - m.experts_per_token / m.experts) ** tokens)

    def layer_gemms_s(self, tokens, attention=1.0):
        """The GEMMs of one layer for `tokens` tokens; `attention` = 0 drops the output projection.

        MoE: each touched expert runs its share of the token-expert pairs, so a small batch pays
        the weights of every expert it touches with few rows each.
        """
        m = self.model
        total = self.gemm_s(tokens, *self.qkv_gemm) + attention * self.gemm_s(
            tokens, *self.out_gemm
        )
        if self.router_gemm is not None:
            total += self.gemm_s(tokens, *self.router_gemm)
        touched = self.experts_touched(tokens)
        rows = tokens * m.experts_per_token / touched
        for n, k in self.expert_gemms:
            total += touched * self.gemm_s(rows, n, k)
        return total

    def elementwise_s(self, tokens, attention=1.0):
        """Memory-bound kernels of one layer: 2 RMSNorms, 2 residual adds, SiLU x up; with
        attention also RoPE on q and k and the KV-cache write."""
        m = self.model
        per_token = ACTIVATION_BYTES * (
            10.0 * m.hidden + 3.0 * m.experts_per_token * self.ffn_width
        )
        per_token += attention * (
            ACTIVATION_BYTES * 2.0 * (self.q_width + 2.0 * self.kv_width) + self._kv_bytes_per_pos
        )
        return tokens * per_token / self.memory_bytes_s

    def prefill_attention_s(self, tokens, pairs, cached_tokens):
        """Causal (flash) attention of one layer over `pairs` query-key pairs."""
        flops = 4.0 * self.q_width * pairs
        traffic = (
            ACTIVATION_BYTES * tokens * 2.0 * (self.q_width + self.kv_width)
            + cached_tokens * self._kv_bytes_per_pos
        )
        return smooth_max(
            flops / self.attention_flops_s, traffic / self.kv_bytes_s, self.params.overlap
        )

    def decode_attention_s(self, seqs, context_sum):
        """Attention of one layer for `seqs` decoding sequences attending `context_sum` in all:
        the smooth maximum of its compute, its KV-cache traffic and its serial walk."""
        p = self.params
        flops = self._decode_flops_per_pos * context_sum
        traffic = (
            self._kv_bytes_per_pos * (context_sum + seqs * p.kv_pad_tokens)
            + self._decode_seq_bytes * seqs
        )
        serial = p.decode_position_s * context_sum / seqs
        memory = smooth_max(traffic / self.kv_bytes_s, serial, p.overlap)
        return smooth_max(flops / self.attention_flops_s, memory, p.overlap)

    def head_s(self, logits):
        """The LM head for `logits` tokens (0 where none)."""
        return self.gemm_s(logits, *self.head_gemm) * (logits > 0)

    def comm_s(self, tokens):
        """Two ring all-reduces per layer of the tokens' activations over the scale-up link."""
        if self.tp == 1:
            return 0.0
        size = tokens * self.model.hidden * ACTIVATION_BYTES
        one_way_bw = self.gpu.link_bw_gb_s * 1e9 / 2.0
        per_all_reduce = self.gpu.link_latency_us * 1e-6 + 2.0 * (self.tp - 1) / self.tp * (
            size / one_way_bw
        )
        return 2 * self.layers * per_all_reduce

    def fixed_s(self, tokens, logits, attention=1.0):
        """Everything of an iteration except attention: GEMMs, element-wise kernels, LM head,
        overheads and communication."""
        p = self.params
        per_layer = (
            p.layer_overhead_s
            + attention * p.attention_overhead_s
            + self.layer_gemms_s(tokens, attention)
            + self.elementwise_s(tokens, attention)
        )
        return (
            p.step_overhead_s + self.layers * per_layer + self.head_s(logits) + self.comm_s(tokens)
        )

    def host_s(self, seqs: int, prompts: int) -> float:
        """Host time of an iteration of `seqs` sequences, `prompts` of them with prompt chunks."""
        p = self.params
        step = p.host_prefill_step_s if prompts else p.host_decode_step_s
        return step + p.host_seq_s * seqs + p.host_prompt_s * prompts

    # ----------------------------------------------------------------- the protocol
    def step_s(self, work: StepWork) -> float:
        tokens = work.prefill_tokens + work.decode_seqs + work.padded_seqs
        if tokens == 0:
            return self.params.step_overhead_s
        total = self.fixed_s(tokens, work.logit_tokens + work.decode_seqs + work.padded_seqs)
        if work.prefill_tokens:
            total += self.layers * self.prefill_attention_s(
                work.prefill_tokens, work.prefill_attn_pairs, work.prefill_cached_tokens
            )
        if work.decode_seqs:
            context = work.decode_context
            if self.padded_attention:
                context = work.decode_seqs * work.decode_max_context
            total += self.layers * self.decode_attention_s(work.decode_seqs, context)
        return total + self.host_s(work.decode_seqs + work.prefill_seqs, work.prefill_seqs)

    def decode_stretch_s(
        self,
        num_seqs: int,
        context_sum: int,
        iterations: int,
        padded_seqs: int = 0,
        max_context: int = 0,
    ) -> list[float]:
        # everything but attention is fixed while the batch is; attention is a few operations
        rows = num_seqs + padded_seqs
        fixed = self._decode_fixed_s.get(rows)
        if fixed is None:
            fixed = self._decode_fixed_s[rows] = self.fixed_s(rows, rows)
        if self.padded_attention:
            context_sum = num_seqs * max_context
        params = self.params
        host = params.host_decode_step_s + params.host_seq_s * num_seqs  # host_s(num_seqs, 0)
        flops_s, kv_s, p = self.attention_flops_s, self.kv_bytes_s, params.overlap
        flops_per_pos, kv_per_pos = self._decode_flops_per_pos, self._kv_bytes_per_pos
        pad = num_seqs * self.params.kv_pad_tokens
        seq_bytes = self._decode_seq_bytes * num_seqs
        layers, position_s = self.layers, self.params.decode_position_s
        contexts = range(context_sum, context_sum + iterations * num_seqs, num_seqs)
        if p == math.inf and position_s == 0.0:  # the plain roofline: a max per iteration
            if iterations >= NUMPY_STRETCH:  # the same operations, elementwise
                c = np.arange(context_sum, context_sum + iterations * num_seqs, num_seqs) * 1.0
                flops = flops_per_pos * c / flops_s
                return (
                    fixed
                    + layers * np.maximum(flops, (kv_per_pos * (c + pad) + seq_bytes) / kv_s)
                    + host
                )
            return [
                fixed
                + layers
                * max(flops_per_pos * c / flops_s, (kv_per_pos * (c + pad) + seq_bytes) / kv_s)
                + host
                for c in contexts
            ]
        out = []
        for ctx in contexts:  # decode_attention_s with smooth_max inlined
            compute = flops_per_pos * ctx / flops_s
            traffic = (kv_per_pos * (ctx + pad) + seq_bytes) / kv_s
            serial = position_s * ctx / num_seqs
            spread = abs(traffic - serial)
            hi = (traffic + serial + spread) * 0.5
            lo = (traffic + serial - spread) * 0.5
            memory = hi * (1.0 + (lo / (hi + 1e-300)) ** p) ** (1.0 / p)
            spread = abs(compute - memory)
            hi = (compute + memory + spread) * 0.5
            lo = (compute + memory - spread) * 0.5
            out.append(
                fixed + layers * (hi * (1.0 + (lo / (hi + 1e-300)) ** p) ** (1.0 / p)) + host
            )
        return out

    def unuse(self, count: int) -> None:
        """Deterministic model: nothing to hand out again."""

    # ----------------------------------------------------------------- counting
    def counts(self, work: StepWork) -> StepCounts:
        """FLOPs and bytes of one iteration of the whole replica (all `tp` GPUs together)."""
        tokens = work.prefill_tokens + work.decode_seqs
        logits = work.logit_tokens + work.decode_seqs
        touched = self.experts_touched(tokens)
        k = self.model.experts_per_token
        per_token = self._product(self.qkv_gemm) + self._product(self.out_gemm)
        per_token += k * sum(self._product(g) for g in self.expert_gemms)
        weights = self._product(self.qkv_gemm) + self._product(self.out_gemm)
        weights += touched * sum(self._product(g) for g in self.expert_gemms)
        if self.router_gemm is not None:
            per_token += self._product(self.router_gemm)
            weights += self._product(self.router_gemm)
        matmul = 2.0 * (tokens * per_token * self.layers + logits * self._product(self.head_gemm))
        pairs = work.prefill_attn_pairs + work.decode_context
        attention = 4.0 * self.q_width * pairs * self.layers
        weight_bytes = self.weight_bytes_per_param * (
            weights * self.layers + self._product(self.head_gemm)
        )
        kv_positions = work.decode_context + work.prefill_cached_tokens + tokens
        kv = kv_positions * self._kv_bytes_per_pos * self.layers
        return StepCounts(
            matmul * self.tp, attention * self.tp, weight_bytes * self.tp, kv * self.tp, tokens
        )

    @staticmethod
    def _product(gemm: tuple[float, float] | None) -> float:
        return 0.0 if gemm is None else gemm[0] * gemm[1]


class ServiceTime:
    """Iteration durations drawn i.i.d. from a distribution of mean `mean_s` (and CV `cv`)."""

    def __init__(self, cfg: ServiceTimeConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self._returned: deque[float] = deque()
        self._last_stretch: list[float] = []

    @classmethod
    def for_pool(cls, pool: PoolSpec, rng: np.random.Generator) -> ServiceTime:
        """The service-time model of one replica of `pool`, drawing from `rng`."""
        return cls(pool.perf, rng)

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

    def decode_stretch_s(
        self,
        num_seqs: int,
        context_sum: int,
        iterations: int,
        padded_seqs: int = 0,
        max_context: int = 0,
    ) -> list[float]:
        self._last_stretch = [self._draw() for _ in range(iterations)]
        factor = self._factor(num_seqs)
        return [d * factor for d in self._last_stretch]

    def unuse(self, count: int) -> None:
        if count:
            self._returned.extendleft(reversed(self._last_stretch[-count:]))
        self._last_stretch = []


@dataclass(frozen=True)
class RooflineSetup:
    """A pool's roofline: its parameters (calibration loaded), how decode attention is costed
    (``summed`` or ``padded``) and its step-time noise (None: off)."""

    params: PerfParams
    decode_attention: str = "summed"
    noise: StepNoise | None = None
    kind: ClassVar[str] = "roofline"  # the [perf] kind this setup belongs to


def make_step_time_model(pool: PoolSpec, rng: np.random.Generator) -> StepTimeModel:
    """The step-time model of ``[perf] kind`` for one replica of `pool` (`rng`: its stream)."""
    return STEP_TIME_MODELS[pool.perf.kind].for_pool(pool, rng)


# the step-time model classes by ``[perf] kind``: imported last, as they import this module
from sim.replay import Replay  # noqa: E402

STEP_TIME_MODELS: dict[str, type[Roofline] | type[ServiceTime] | type[Replay]] = {
    "roofline": Roofline,
    "service_time": ServiceTime,
    "replay": Replay,
}
