"""Host time in the step-time model, and decode attention padded to the longest context."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.batching.decoding import DecodeSet
from sim.catalog import builtin_accelerators, builtin_models
from sim.engine import run
from sim.errors import UserError
from sim.perf import PerfParams, Roofline, StepWork
from sim.request import Request
from tests.conftest import scenario

HOST = {
    "host_prefill_step_s": 3e-3,
    "host_decode_step_s": 2e-3,
    "host_seq_s": 5e-5,
    "host_prompt_s": 1e-3,
}


def roofline(params: PerfParams, attention: str = "summed") -> Roofline:
    shape, gpu = builtin_models()["llama-3-8b"], builtin_accelerators()["h200"]
    return Roofline(shape, gpu, 1, params, decode_attention=attention)


def mixed_step() -> StepWork:
    work = StepWork(decode_seqs=5, decode_context=5 * 700, decode_max_context=1200)
    work.add_prefill(300, 0, emits_logits=True)
    work.add_prefill(200, 100, emits_logits=False)
    return work


def test_host_terms_add_their_time_to_each_iteration_by_phase():
    gpu_only, with_host = roofline(PerfParams()), roofline(PerfParams(**HOST))
    mixed = mixed_step()  # 2 prompt chunks beside 5 decoding sequences: a prefill iteration
    expected = 3e-3 + 5e-5 * 7 + 1e-3 * 2
    assert with_host.step_s(mixed) - gpu_only.step_s(mixed) == pytest.approx(expected, rel=1e-9)
    decode = StepWork(decode_seqs=5, decode_context=3500)
    expected = 2e-3 + 5e-5 * 5
    assert with_host.step_s(decode) - gpu_only.step_s(decode) == pytest.approx(expected, rel=1e-9)
    stretch = np.array(with_host.decode_stretch_s(5, 3500, 100))  # the numpy path
    bare = np.array(gpu_only.decode_stretch_s(5, 3500, 100))
    np.testing.assert_allclose(stretch - bare, expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("old", "new"),
    [("cpu_overhead_s", "perf.host_prefill_step_s"), ("cpu_overhead_per_seq_s", "perf.host_seq_s")],
)
def test_the_old_batcher_overhead_fields_name_their_place_in_perf(old, new):
    with pytest.raises(UserError, match=rf"batcher: {old} is no longer a batcher field.*{new}"):
        scenario(f"batcher.{old}=0.001")


def test_host_terms_come_from_the_calibration_when_there_is_one():
    s = scenario("perf.calibration='builtin:h200_llama-3-8b'", "perf.host_seq_s=1e-5")
    with pytest.raises(UserError, match="perf.host_seq_s cannot be combined with perf.calibration"):
        run(s)


def test_noise_needs_a_calibration_with_a_noise_table():
    with pytest.raises(UserError, match="perf.noise = true needs perf.calibration"):
        run(scenario("perf.noise=true"))
    s = scenario("perf.calibration='builtin:h200_llama-3-8b'", "perf.noise=true")
    with pytest.raises(UserError, match="has no \\[noise\\] table"):
        run(s)


# ----------------------------------------------------------------------------- padded attention


def test_padded_decode_attention_costs_the_batch_times_its_longest_context():
    params = PerfParams(**HOST)
    padded, summed = roofline(params, "padded"), roofline(params)
    work = mixed_step()
    as_if_summed = replace(work, decode_context=work.decode_seqs * work.decode_max_context)
    assert padded.step_s(work) == summed.step_s(as_if_summed) > summed.step_s(work)
    stretch = padded.decode_stretch_s(5, 3500, 3, 0, 1200)
    assert stretch == summed.decode_stretch_s(5, 5 * 1200, 3)


def test_decode_set_tracks_the_longest_context_through_joins_and_leaves():
    decodes = DecodeSet(block_size=16, longest_context=True)
    requests = [Request(i, 0, 0, 0.0, prompt, 50) for i, prompt in enumerate((100, 900, 400))]
    for req in requests:
        req.kv_tokens, req.generated = req.prompt_tokens, 1
        decodes.join(req)
    assert decodes.max_context() == 901  # its KV and the new token
    decodes.advance(10)
    assert decodes.max_context() == 911
    decodes.leave(requests[1])
    assert decodes.max_context() == 411


def test_a_padded_run_records_the_longest_context_and_compresses_exactly():
    padded = ("perf.decode_attention='padded'", "fleet.replicas=1", "workload.rate=4")
    fast, slow = run(scenario(*padded)), run(scenario(*padded, "sim.step_compression=false"))
    assert "decode_max_context" in fast.steps.column_names
    assert "decode_max_context" not in run(scenario("fleet.replicas=1")).steps.column_names
    steps = slow.steps.to_pandas()
    decoding = steps[steps["decode_seqs"] > 0]
    assert (
        decoding["decode_max_context"] * decoding["decode_seqs"] >= decoding["decode_context"]
    ).all()
    a, b = fast.requests.to_pandas(), slow.requests.to_pandas()
    for column in ("first_token_s", "finish_s"):
        assert np.array_equal(a[column], b[column])
