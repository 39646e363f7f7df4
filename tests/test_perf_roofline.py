"""The roofline step-time model: counting, monotonicity, tensor parallelism, quantization, MoE."""

from __future__ import annotations

import math

import pytest

from sim.calibration import load_calibration, resolve_calibration
from sim.catalog import ModelShape, builtin_accelerators, builtin_models
from sim.perf import PerfParams, Roofline, StepWork

GPUS = builtin_accelerators()
MODELS = builtin_models()
CALIBRATED = load_calibration(resolve_calibration("builtin:h200_llama-3-8b")).params
PARAMS = {"default": PerfParams(), "calibrated": CALIBRATED}

TINY = ModelShape(
    name="tiny", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=100
)


def roofline(model="llama-3-8b", gpu="h200", tp=1, params="default", **kw) -> Roofline:
    shape = model if isinstance(model, ModelShape) else MODELS[model]
    return Roofline(shape, GPUS[gpu], tp, PARAMS[params], **kw)


def prefill(tokens: int, cached: int = 0) -> StepWork:
    work = StepWork()
    work.add_prefill(tokens, cached, emits_logits=True)
    return work


def decode(seqs: int, context: int) -> StepWork:
    return StepWork(decode_seqs=seqs, decode_context=seqs * context)


# ----------------------------------------------------------------------------- counting


def test_counts_of_a_mixed_step_match_hand_computed_values():
    work = prefill(10)  # 10 new tokens, causal: 10 * 11 / 2 = 55 pairs, one logit
    work.decode_seqs, work.decode_context = 3, 30  # three sequences attending 30 positions
    c = roofline(TINY).counts(work)
    # per layer: QKV 64 x (64 + 2 * 32) + output 64 x 64 = 12288; MLP 3 x 64 x 128 = 24576
    per_layer = 12288 + 24576
    # 13 tokens through 2 layers, 4 logits (1 prefill + 3 decode) through the 100 x 64 head
    assert c.matmul_flops == 2 * 13 * 2 * per_layer + 2 * 4 * 100 * 64 == 1_968_128
    # QK^T and PV: 4 x heads x head_dim FLOPs per (query, key) pair and layer: 85 pairs
    assert c.attention_flops == 4 * 4 * 16 * (55 + 30) * 2 == 43_520
    # bf16 weights read once: 2 layers and the head
    assert c.weight_bytes == 2 * (2 * per_layer + 100 * 64) == 160_256
    # K and V of 2 KV heads x 16 values x 2 bytes per position and layer: 30 read, 13 written
    assert c.kv_bytes == (30 + 13) * 2 * 2 * 16 * 2 * 2 == 11_008
    assert c.tokens == 13


def test_gemm_time_is_the_slower_of_compute_and_traffic_at_default_efficiencies():
    roof = roofline()
    n = k = 4096
    compute = 2 * 1 * n * k / (989.4e12 * 0.80)
    traffic = (n * k * 2 + 1 * (n + k) * 2) / (4800e9 * 0.57)
    assert roof.gemm_s(1, n, k) == pytest.approx(max(compute, traffic), rel=1e-12)
    big = 8192
    compute = 2 * big * n * k / (989.4e12 * 0.80)
    traffic = (n * k * 2 + big * (n + k) * 2) / (4800e9 * 0.57)
    assert roof.gemm_s(big, n, k) == pytest.approx(max(compute, traffic), rel=1e-12)


def test_batch_one_decode_streams_every_weight_once():
    roof = roofline()
    seconds = roof.step_s(decode(1, 128))
    weights_s = roof.counts(decode(1, 128)).weight_bytes / (4800e9 * 0.57)
    assert weights_s < seconds < 1.05 * weights_s


def test_all_reduce_time_follows_the_ring_formula():
    roof = roofline("llama-3-70b", tp=4)
    size = 1000 * 8192 * 2.0
    per_all_reduce = 8e-6 + 2 * 3 / 4 * size / (900e9 / 2)
    assert roof.comm_s(1000) == pytest.approx(2 * 80 * per_all_reduce, rel=1e-12)
    assert roofline("llama-3-70b", tp=1).comm_s(1000) == 0.0


# ----------------------------------------------------------------------------- monotonicity


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("model", ["llama-3-8b", "llama-3-70b", "mixtral-8x7b"])
def test_time_grows_with_tokens_batch_and_context(model, params):
    roof = roofline(model, tp=4 if model == "llama-3-70b" else 1, params=params)
    sizes = [1, 2, 7, 16, 64, 100, 128, 256, 1000, 4096, 16384]
    for a, b in zip(sizes, sizes[1:], strict=False):
        assert roof.step_s(prefill(a)) < roof.step_s(prefill(b))
        assert roof.step_s(decode(a, 512)) < roof.step_s(decode(b, 512))
        assert roof.step_s(decode(8, a)) < roof.step_s(decode(8, b))
        assert roof.step_s(prefill(256, a)) < roof.step_s(prefill(256, b))


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("model", ["llama-3-8b", "llama-3-70b", "mixtral-8x7b"])
def test_more_tp_is_never_slower_except_by_the_modelled_communication(model, params):
    works = [prefill(64), prefill(8192), decode(1, 128), decode(64, 2048), decode(256, 8192)]
    for work in works:
        tokens = work.prefill_tokens + work.decode_seqs
        compute = []
        for tp in (1, 2, 4, 8, 16):
            roof = roofline(model, tp=tp, params=params)
            compute.append(roof.step_s(work) - roof.comm_s(tokens))
        assert all(b <= a * (1 + 1e-12) for a, b in zip(compute, compute[1:], strict=False))
        assert compute[-1] < compute[0]


# ----------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("gpu", ["h100", "h200", "b200", "mi300x"])
def test_fp8_weights_halve_a_memory_bound_decode_step_on_gpus_with_fp8_units(gpu):
    bf16 = roofline(gpu=gpu).step_s(decode(1, 128))
    fp8 = roofline(gpu=gpu, weight_dtype="fp8").step_s(decode(1, 128))
    assert 0.50 <= fp8 / bf16 < 0.53


def test_fp8_weights_speed_up_compute_bound_prefill_only_where_the_units_exist():
    def ratio(gpu: str) -> float:
        fp8 = roofline(gpu=gpu, weight_dtype="fp8").step_s(prefill(8192))
        return fp8 / roofline(gpu=gpu).step_s(prefill(8192))

    assert ratio("h100") < 0.75  # the GEMMs run at the fp8 peak (attention stays bf16)
    assert ratio("a100") > 0.98  # no fp8 units: weight-only fp8 saves bytes, not FLOPs


def test_int4_weights_quarter_the_weight_bytes_and_fp8_kv_halves_the_kv_bytes():
    work = decode(32, 4096)
    base = roofline().counts(work)
    assert roofline(weight_dtype="int4").counts(work).weight_bytes == base.weight_bytes / 4
    assert roofline(kv_dtype="fp8").counts(work).kv_bytes == base.kv_bytes / 2
    assert roofline(kv_dtype="fp8").step_s(work) < roofline().step_s(work)


# ----------------------------------------------------------------------------- mixture of experts


def test_moe_computes_active_experts_and_reads_the_experts_a_batch_touches():
    roof = roofline("mixtral-8x7b")
    m = MODELS["mixtral-8x7b"]
    assert roof.experts_touched(1) == pytest.approx(2.0)
    assert roof.experts_touched(10_000) == pytest.approx(8.0)
    one, many = roof.counts(decode(1, 128)), roof.counts(decode(256, 128))
    assert one.matmul_flops == pytest.approx(2 * m.active_params)  # 2 experts, router, head
    assert one.weight_bytes == pytest.approx(2 * m.active_params)
    assert many.weight_bytes == pytest.approx(2 * (m.total_params - m.vocab * m.hidden), rel=1e-6)
    batches = [1, 2, 4, 8, 16, 64]
    times = [roof.step_s(decode(b, 128)) for b in batches]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


# ----------------------------------------------------------------------------- step compression


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seqs,context", [(1, 1), (3, 100), (64, 2048), (256, 300)])
def test_decode_stretch_durations_equal_step_times_of_the_same_work(params, seqs, context):
    roof = roofline(params=params)
    stretch = roof.decode_stretch_s(seqs, seqs * context, 50)
    for i, d in enumerate(stretch):
        work = StepWork(decode_seqs=seqs, decode_context=seqs * context + i * seqs)
        assert d == pytest.approx(roof.step_s(work), rel=1e-12)


def test_smooth_max_spans_sum_to_max():
    from sim.perf import smooth_max

    assert smooth_max(3.0, 4.0, 1.0) == pytest.approx(7.0)
    assert smooth_max(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert smooth_max(3.0, 4.0, math.inf) == 4.0
    assert smooth_max(0.0, 0.0, 2.5) == 0.0


def test_quantized_weights_and_kv_cache_raise_the_kv_capacity():
    from sim.resolve import resolve
    from tests.conftest import scenario

    def kv_capacity_blocks(*overrides: str) -> int:
        return resolve(scenario(*overrides)).pools[0].kv_capacity_blocks

    base = kv_capacity_blocks("fleet.gpu=h100")
    fp8_kv = kv_capacity_blocks("fleet.gpu=h100", "model.kv_dtype=fp8")
    fp8_weights = kv_capacity_blocks("fleet.gpu=h100", "model.weight_dtype=fp8")
    assert fp8_kv in (2 * base, 2 * base + 1)  # the same free bytes hold twice the tokens
    weights = MODELS["llama-3-8b"].total_params  # bytes freed by 1-byte instead of 2-byte weights
    block = 16 * MODELS["llama-3-8b"].kv_values_per_token * 2
    assert fp8_weights - base == pytest.approx(weights / block, abs=1)


def test_long_decode_stretches_computed_with_numpy_equal_one_iteration_at_a_time():
    import numpy as np

    from sim.perf import NUMPY_STRETCH, make_step_time_model
    from sim.resolve import resolve
    from tests.conftest import scenario

    model = make_step_time_model(resolve(scenario()).pools[0], np.random.default_rng(0))
    stretch = model.decode_stretch_s(37, 50_000, NUMPY_STRETCH + 10)
    assert isinstance(stretch, np.ndarray)
    one_by_one = [model.decode_stretch_s(37, 50_000 + 37 * i, 1)[0] for i in range(len(stretch))]
    assert stretch.tolist() == one_by_one
