"""Capacity: the requests per second one replica completes when it is kept full.

A pure function of one replica's configuration (its step-time model, batcher limits and KV-cache
blocks) and of a workload mix (prompt, cached-prompt and output tokens of a sample of requests),
so that analysis can call it on a run's own requests and a controller inside a simulation on the
requests it has seen. Nothing here simulates; docs/economics.md states the method.

Continuous batching, by Little's law on each limited resource: a request occupies a batch slot
for its prefill iteration(s) and its ``output - 1`` decode iterations, holds its KV blocks over
the same iterations (counted exactly, block by block), and puts ``prompt - cached + output - 1``
tokens through the iterations' token budget. With ``x`` completions per iteration, a full
replica holds ``x * E[slot iterations]`` sequences, ``x * E[block iterations]`` blocks and runs
``x * E[tokens]`` tokens per iteration; the first of ``max_num_seqs``, the KV blocks and
``max_num_batched_tokens`` to fill sets ``x``. An iteration then carries ``x * E[output - 1]``
decoding sequences and the prompts of the requests it admits: a Poisson number with mean ``x``,
drawn from the mix, or a budget filled with prompt tokens where the budget is the limit. Its
duration is the step-time model's own, averaged over sampled iterations (the step time is
convex in the tokens, so the time of the mean iteration would overstate the capacity).
vLLM v0 (``mix_prefill_decode = false``) alternates a decode iteration with a prefill iteration
of the prompts admitted into the freed slots.

Static and dynamic batching: batches of ``max_batch`` requests (fewer when their reserved KV does
not fit) drawn from the mix, each prefilled (padded to its longest prompt for static) and
decoded until its longest output ends (finished rows dropped for dynamic); capacity is the
requests over the summed batch durations.

The ``service_time`` model gives the same accounting with its mean iteration time (times the
sequences of the iteration with ``scale_with_batch``): the queueing capacity of the replica.
Not modelled: the churn of preemption under KV pressure, blocks shared through the prefix cache,
swap traffic; each makes a KV-limited estimate slightly optimistic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sim.batching.continuous import cuda_graph_rows
from sim.noise import NoisyStepTime
from sim.perf import ServiceTime, StepTimeModel, StepWork, make_step_time_model
from sim.replay import Replay
from sim.runspec import PoolSpec
from sim.scenario import BatcherConfig, ContinuousBatcherConfig, StaticBatcherConfig

PROMPT_SAMPLES = 128  # stratified prompt draws per number of prompts admitted in an iteration
ADMISSION_TAIL = 1e-5  # admission counts rarer than this x the likeliest one are left out
BATCH_SAMPLES = 1024  # sampled batches of static and dynamic batching
SAMPLE_SEED = 0  # the samples are the same for every call: capacity is deterministic


@dataclass(frozen=True)
class WorkloadMix:
    """Token counts of a sample of requests (arrays of equal length, tokens)."""

    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_prompt_tokens: np.ndarray

    @classmethod
    def of(cls, prompt_tokens, output_tokens, cached_prompt_tokens=None) -> WorkloadMix:
        """A mix from array-likes; no cached tokens when `cached_prompt_tokens` is None."""
        prompt = np.asarray(prompt_tokens, dtype=np.int64)
        output = np.asarray(output_tokens, dtype=np.int64)
        if cached_prompt_tokens is None:
            cached = np.zeros_like(prompt)
        else:
            cached = np.asarray(cached_prompt_tokens, dtype=np.int64)
        if len(prompt) == 0 or not len(prompt) == len(output) == len(cached):
            raise ValueError("a workload mix needs equal, non-empty token arrays")
        return cls(prompt, output, cached)

    @property
    def uncached_tokens(self) -> np.ndarray:
        """Prompt tokens that must be computed (tokens)."""
        return self.prompt_tokens - self.cached_prompt_tokens


@dataclass(frozen=True)
class Capacity:
    """What one full replica sustains for a mix.

    requests_per_s: completions per second; batch_seqs: sequences per iteration (continuous)
    or requests per batch (static, dynamic); limited_by: the limit that sets it
    (``max_num_seqs``, ``kv_cache``, ``max_num_batched_tokens``, ``max_batch``); iteration_s:
    mean duration of an iteration (continuous; for vLLM v0 a decode plus its prefill) or of a
    batch (static, dynamic), seconds.
    """

    requests_per_s: float
    batch_seqs: float
    limited_by: str
    iteration_s: float


def pool_capacity(pool: PoolSpec, mix: WorkloadMix) -> Capacity:
    """Capacity of one replica of `pool` (a resolved pool of a RunSpec) for `mix`."""
    model = make_step_time_model(pool, np.random.default_rng(SAMPLE_SEED))
    return replica_capacity(model, pool.batcher, pool.kv_capacity_blocks, mix)


def replica_capacity(
    model: StepTimeModel, batcher: BatcherConfig, capacity_blocks: int, mix: WorkloadMix
) -> Capacity:
    """Capacity of one replica with step-time `model`, `batcher` and `capacity_blocks` of KV."""
    times = MeanStepTimes(model)
    rng = np.random.default_rng(SAMPLE_SEED)
    if isinstance(batcher, ContinuousBatcherConfig):
        contexts = Contexts(mix, np.random.default_rng([SAMPLE_SEED, 1]))
        if batcher.mix_prefill_decode:
            return _continuous_mixed(times, batcher, capacity_blocks, mix, contexts, rng)
        return _continuous_v0(times, batcher, capacity_blocks, mix, contexts, rng)
    return _run_to_completion(times, batcher, capacity_blocks, mix, rng)


class MeanStepTimes:
    """Mean iteration durations of a step-time model, drawing no random numbers (seconds).

    A roofline with step-time noise is timed without it (the noise's long-run mean multiplier
    is 1, ``sim.noise``); ``service_time`` iterations take their mean (times the sequences with
    ``scale_with_batch``); a ``replay`` iteration takes the mean of its log's durations.
    """

    def __init__(self, model: StepTimeModel) -> None:
        self.model = model.model if isinstance(model, NoisyStepTime) else model
        self.constant_s: float | None = None  # a duration whatever the iteration computes
        self.per_seq = False
        if isinstance(self.model, ServiceTime):
            self.constant_s = self.model.cfg.mean_s
            self.per_seq = self.model.cfg.scale_with_batch
        elif isinstance(self.model, Replay):
            self.constant_s = float(np.mean(self.model.durations))

    def step_s(self, work: StepWork) -> float:
        """Mean duration of one iteration doing `work`."""
        if self.constant_s is None:
            return self.model.step_s(work)
        seqs = work.decode_seqs + work.logit_tokens
        return self.constant_s * (seqs if self.per_seq else 1)

    def decode_s(self, seqs: int, context_sum: int, iterations: int, max_context: int) -> float:
        """Summed duration of `iterations` pure decode iterations (as ``decode_stretch_s``)."""
        if iterations <= 0:
            return 0.0
        if self.constant_s is None:
            durations = self.model.decode_stretch_s(seqs, context_sum, iterations, 0, max_context)
            return float(durations.sum() if isinstance(durations, np.ndarray) else sum(durations))
        return iterations * self.constant_s * (seqs if self.per_seq else 1)


# ----------------------------------------------------------------------------- continuous


def _blocks_up_to(tokens: np.ndarray, block_size: int) -> np.ndarray:
    """sum over t = 1..tokens of ceil(t / block_size): block-iterations of a growing sequence."""
    q, r = np.divmod(tokens, block_size)
    return block_size * q * (q + 1) // 2 + r * (q + 1)


def _decode_block_iterations(mix: WorkloadMix, block_size: int) -> np.ndarray:
    """Per request: KV blocks held summed over its decode iterations (KV = prompt + j)."""
    p, o = mix.prompt_tokens, mix.output_tokens
    return _blocks_up_to(p + o - 1, block_size) - _blocks_up_to(p, block_size)


class Contexts:
    """The positions a decoding sequence attends (its prompt and the tokens so far), over the
    decode iterations of the mix: their mean, and the longest among a batch (which decode
    attention padded to the batch's longest sequence costs for every sequence)."""

    SAMPLES = 4096

    def __init__(self, mix: WorkloadMix, rng: np.random.Generator) -> None:
        p, steps = mix.prompt_tokens, mix.output_tokens - 1
        total = int(steps.sum())
        self.mean = float((steps * p + steps * (steps + 1) // 2).sum() / total) if total else 0.0
        self.sample = np.zeros(1)
        if total:
            who = rng.choice(len(steps), self.SAMPLES, p=steps / total)
            self.sample = p[who] + rng.integers(1, steps[who] + 1)
        self._longest: dict[int, int] = {0: 0}  # by batch size: asked for once per sampled batch

    def longest(self, seqs: int) -> int:
        """The expected longest context of `seqs` decoding sequences (0 for none)."""
        if seqs not in self._longest:
            self._longest[seqs] = round(float(np.quantile(self.sample, seqs / (seqs + 1))))
        return self._longest[seqs]

    def decode(self, work: StepWork, seqs: int) -> None:
        """Put `seqs` decoding sequences into `work`."""
        work.decode_seqs = seqs
        work.decode_context = round(seqs * self.mean)
        work.decode_max_context = self.longest(seqs)


def _binding(limits: dict[str, float]) -> tuple[float, str]:
    """The smallest completions-per-iteration limit and its name."""
    name = min(limits, key=limits.get)
    return limits[name], name


def _chunks(mix: WorkloadMix, cfg: ContinuousBatcherConfig) -> np.ndarray:
    """Prefill iterations per request: one, or its prompt in chunks of the token budget."""
    if not cfg.chunked_prefill:
        return np.ones_like(mix.prompt_tokens)
    return np.maximum(1, -(-mix.uncached_tokens // cfg.max_num_batched_tokens))


def _continuous_mixed(
    times: MeanStepTimes,
    cfg: ContinuousBatcherConfig,
    capacity_blocks: int,
    mix: WorkloadMix,
    contexts: Contexts,
    rng: np.random.Generator,
) -> Capacity:
    """Iterations that decode every running sequence and prefill the admitted prompts."""
    bs, decode_iters = cfg.block_size, mix.output_tokens - 1
    chunks = _chunks(mix, cfg)
    prompt_blocks = -(-mix.prompt_tokens // bs)
    block_iters = chunks * prompt_blocks + _decode_block_iterations(mix, bs)
    per_iteration, limit = _binding(
        {
            "max_num_seqs": cfg.max_num_seqs / float((chunks + decode_iters).mean()),
            "kv_cache": capacity_blocks / float(block_iters.mean()),
            "max_num_batched_tokens": cfg.max_num_batched_tokens
            / float((mix.uncached_tokens + decode_iters).mean()),
        }
    )
    decoding = round(per_iteration * float(decode_iters.mean()))
    if limit == "max_num_batched_tokens":  # every iteration fills its budget with prompt tokens
        work = _mean_prefill(mix, chunks, per_iteration)
        contexts.decode(work, decoding)
        iteration_s = times.step_s(work)
        completed = per_iteration
    else:  # a Poisson number of whole prompts per iteration, in the slots free for them
        slots = cfg.max_num_seqs

        def iteration_s_of(prompts: np.ndarray) -> float:
            # all slots full: the admitted prompts take the place of the sequences that finished
            k = len(prompts)
            seqs = slots - k if limit == "max_num_seqs" else min(decoding, slots - k)
            work = _prefill_work(mix, prompts)
            contexts.decode(work, seqs)
            if k == 0 and cfg.cuda_graph_padding:
                work.padded_seqs = cuda_graph_rows(seqs) - seqs
            return times.step_s(work)

        pmf = _admissions(per_iteration, slots, idle_possible=decoding > 0)
        completed, iteration_s = _expected(pmf, mix, iteration_s_of, rng)
    seqs = decoding + completed * float(chunks.mean())
    return Capacity(completed / iteration_s, seqs, limit, iteration_s)


def _continuous_v0(
    times: MeanStepTimes,
    cfg: ContinuousBatcherConfig,
    capacity_blocks: int,
    mix: WorkloadMix,
    contexts: Contexts,
    rng: np.random.Generator,
) -> Capacity:
    """vLLM v0: a decode iteration of every running sequence, then a prefill iteration of the
    prompts admitted into the slots it freed (none when nothing finished)."""
    decode_iters = mix.output_tokens - 1
    mean_decode = float(decode_iters.mean())
    block_iters = float(_decode_block_iterations(mix, cfg.block_size).mean())
    per_cycle, limit = _binding(
        {
            # slots: decoding sequences, and the prompts one prefill iteration admits
            "max_num_seqs": cfg.max_num_seqs / max(mean_decode, 1.0),
            "kv_cache": capacity_blocks / block_iters if block_iters else np.inf,
            "max_num_batched_tokens": cfg.max_num_batched_tokens
            / max(mean_decode, float(mix.uncached_tokens.mean())),
        }
    )
    decoding = round(per_cycle * mean_decode)
    padded = cuda_graph_rows(decoding) - decoding if cfg.cuda_graph_padding and decoding else 0
    decode = StepWork(padded_seqs=padded)
    contexts.decode(decode, decoding)
    decode_s = times.step_s(decode) if decoding else 0.0

    def cycle_s_of(prompts: np.ndarray) -> float:
        if len(prompts) == 0:
            return decode_s
        return decode_s + times.step_s(_prefill_work(mix, prompts))

    pmf = _admissions(per_cycle, cfg.max_num_seqs, idle_possible=decoding > 0)
    completed, cycle_s = _expected(pmf, mix, cycle_s_of, rng)
    return Capacity(completed / cycle_s, decoding + completed, limit, cycle_s)


def _admissions(mean: float, slots: int, idle_possible: bool) -> dict[int, float]:
    """Probabilities of admitting k prompts in an iteration: Poisson of `mean`, at most `slots`
    (the rest of the tail goes to `slots`), k below ADMISSION_TAIL dropped; never 0 unless the
    iteration has other work (a full replica runs no empty iteration)."""
    ks = np.arange(slots + 1)
    probs = stats.poisson.pmf(ks, mean)
    probs[-1] += stats.poisson.sf(slots, mean)
    if not idle_possible:
        probs[0] = 0.0
    keep = probs >= ADMISSION_TAIL * probs.max()
    return dict(zip(ks[keep].tolist(), (probs[keep] / probs[keep].sum()).tolist(), strict=True))


def _expected(
    pmf: dict[int, float],
    mix: WorkloadMix,
    duration_s: Callable[[np.ndarray], float],
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Mean prompts admitted and mean duration of an iteration (s), over the admission counts
    of `pmf` and, for each count, PROMPT_SAMPLES draws of the prompts from the mix (a Latin
    hypercube: each draw position covers the mix's prompt lengths evenly)."""
    order = np.argsort(mix.uncached_tokens, kind="stable")
    seconds = 0.0
    for k, p in pmf.items():
        draws = _stratified(order, k, rng)
        seconds += p * float(np.mean([duration_s(row) for row in draws]))
    return sum(k * p for k, p in pmf.items()), seconds


def _stratified(order: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """PROMPT_SAMPLES rows of `k` request indices; column j takes each 1/PROMPT_SAMPLES quantile
    of `order` (requests sorted by prompt length) once, in its own random order."""
    if k == 0:
        return np.zeros((1, 0), dtype=np.int64)
    strata = np.stack([rng.permutation(PROMPT_SAMPLES) for _ in range(k)], axis=1)
    quantiles = (strata + rng.random(strata.shape)) / PROMPT_SAMPLES
    return order[(quantiles * len(order)).astype(np.int64)]


def _prefill_work(mix: WorkloadMix, requests: np.ndarray) -> StepWork:
    """The prefill work of the whole prompts of `requests` (indices into the mix)."""
    work = StepWork()
    uncached, cached = mix.uncached_tokens[requests], mix.cached_prompt_tokens[requests]
    for computed, reused in zip(uncached.tolist(), cached.tolist(), strict=True):
        work.add_prefill(computed, reused, True)
    return work


def _mean_prefill(mix: WorkloadMix, chunks: np.ndarray, per_iteration: float) -> StepWork:
    """Mean prefill work of an iteration completing `per_iteration` prompts in `chunks` chunks:
    causal pairs and logits are whole-prompt sums; the cached context each chunk reads grows by
    the chunks before it."""
    new, cached = mix.uncached_tokens, mix.cached_prompt_tokens
    pairs = new * cached + new * (new + 1) // 2
    context = chunks * cached + new * (chunks - 1) // 2
    return StepWork(
        prefill_tokens=round(per_iteration * float(new.mean())),
        prefill_attn_pairs=round(per_iteration * float(pairs.mean())),
        prefill_cached_tokens=round(per_iteration * float(context.mean())),
        logit_tokens=round(per_iteration),
        prefill_seqs=max(1, round(per_iteration * float(chunks.mean()))),
    )


# ----------------------------------------------------------------------------- run to completion


def _run_to_completion(
    times: MeanStepTimes,
    cfg: BatcherConfig,
    capacity_blocks: int,
    mix: WorkloadMix,
    rng: np.random.Generator,
) -> Capacity:
    """Static and dynamic batching: sampled full batches, each run until its last request."""
    padded = isinstance(cfg, StaticBatcherConfig)
    reserve = -(-(mix.prompt_tokens + mix.output_tokens - 1) // cfg.block_size)
    requests, seconds, kv_limited = 0, 0.0, 0
    for _ in range(BATCH_SAMPLES):
        members = _fill_batch(reserve, cfg.max_batch, capacity_blocks, rng)
        kv_limited += len(members) < cfg.max_batch
        prompts, outputs = mix.prompt_tokens[members], mix.output_tokens[members]
        seconds += (_static_s if padded else _dynamic_s)(times, prompts, outputs)
        requests += len(members)
    limit = "kv_cache" if kv_limited > BATCH_SAMPLES / 2 else "max_batch"
    return Capacity(requests / seconds, requests / BATCH_SAMPLES, limit, seconds / BATCH_SAMPLES)


def _fill_batch(
    reserve: np.ndarray, max_batch: int, capacity_blocks: int, rng: np.random.Generator
) -> np.ndarray:
    """Requests drawn in order until `max_batch` or until the next one's KV does not fit."""
    drawn = rng.integers(0, len(reserve), max_batch)
    fit = int(np.searchsorted(np.cumsum(reserve[drawn]), capacity_blocks, side="right"))
    return drawn[: max(1, fit)]


def _static_s(times: MeanStepTimes, prompts: np.ndarray, outputs: np.ndarray) -> float:
    """A padded batch: every prompt padded to the longest, every row decoding to the end."""
    rows, longest, iterations = len(prompts), int(prompts.max()), int(outputs.max()) - 1
    work = StepWork()
    for _ in range(rows):
        work.add_prefill(longest, 0, True)
    decode_s = times.decode_s(rows, rows * (longest + 1), iterations, longest + 1)
    return times.step_s(work) + decode_s


def _dynamic_s(times: MeanStepTimes, prompts: np.ndarray, outputs: np.ndarray) -> float:
    """A packed batch: prompts unpadded, each row leaving when its last token is out."""
    work = StepWork()
    for p in prompts:
        work.add_prefill(int(p), 0, True)
    total = times.step_s(work)
    order = np.argsort(outputs, kind="stable")
    finish = outputs[order] - 1  # decode clock at which each row is done
    ordered = prompts[order]
    longest = np.maximum.accumulate(ordered[::-1])[::-1]  # longest prompt of the rows left
    live_prompts = int(prompts.sum())
    clock = 0
    for i, (end, p) in enumerate(zip(finish.tolist(), ordered.tolist(), strict=True)):
        live = len(prompts) - i
        if end > clock:
            context = live_prompts + live * (clock + 1)
            total += times.decode_s(live, context, end - clock, int(longest[i]) + clock + 1)
            clock = end
        live_prompts -= p
    return total
