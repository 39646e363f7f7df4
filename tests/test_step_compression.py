"""Step compression: a run with stretches of decode iterations equals the step-by-step run."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine import run
from sim.scenario import Scenario, load_scenario
from tests.conftest import ROOT, scenario

TIME_COLUMNS = ("first_scheduled_s", "first_token_s", "finish_s")

WORKLOADS = {
    "steady": ("workload.rate=8",),
    "bursty": ("workload.arrival=gamma", "workload.rate=8", "workload.cv=4.0"),
    "preemption_heavy": (
        "fleet.replicas=1",
        "workload.rate=12",
        "batcher.gpu_memory_utilization=0.21",
    ),
    "round_robin": ("fleet.router=round_robin", "workload.rate=10"),
    "service_time": (
        'perf={kind="service_time", distribution="exponential", mean_s=0.01}',
        "workload.rate=10",
    ),
    "processor_sharing": (
        'perf={kind="service_time", distribution="exponential", mean_s=0.001, '
        "scale_with_batch=true}",
        "workload.rate=10",
    ),
    "static": ('batcher={kind="static", max_batch=8}', "workload.rate=10"),
    "dynamic": (
        'batcher={kind="dynamic", max_batch=8, max_queue_delay_s=0.05, preferred_batch_sizes=[4]}',
        "workload.rate=10",
    ),
    "chunked_prefill": (
        "batcher.chunked_prefill=true",
        "batcher.max_num_batched_tokens=512",
        "workload.rate=10",
    ),
    "vllm_v0": ("batcher.mix_prefill_decode=false", "workload.rate=10"),
    "priority": (
        "batcher.order=priority",
        "workload.rate=20",
        'workload.classes=[{name="a", share=1, priority=1, prompt_tokens={dist="fixed", '
        'value=300}, output_tokens={dist="uniform", low=10, high=300}}, {name="b", share=2, '
        'prompt_tokens={dist="fixed", value=300}, output_tokens={dist="uniform", low=10, '
        "high=300}}]",
    ),
    "shortest_prompt": ("batcher.order=shortest_prompt", "workload.rate=20"),
    "swap_preemption": (
        "fleet.replicas=1",
        "workload.rate=12",
        "batcher.gpu_memory_utilization=0.21",
        "batcher.preemption=swap",
    ),
    "prefix_caching": (
        "batcher.prefix_caching=true",
        "workload.classes.0.shared_prefix_tokens=256",
        "workload.classes.0.shared_prefix_fraction=0.5",
        "workload.rate=10",
    ),
    "cpu_overhead": (
        "perf.host_prefill_step_s=0.001",
        "perf.host_decode_step_s=0.001",
        "perf.host_seq_s=0.00001",
    ),
    "cuda_graph_padding": ("batcher.cuda_graph_padding=true", "workload.rate=10"),
}
TRACE_REPLAY = (ROOT / "scenarios" / "azure_conv_replay.toml", "workload.load_scale=4.0")


def _scenario(name: str, *extra: str) -> Scenario:
    if name == "trace_replay":
        path, *overrides = TRACE_REPLAY
        return load_scenario(path, [*overrides, "sim.num_requests=1500", *extra])
    return scenario(*WORKLOADS[name], *extra)


@pytest.mark.parametrize("name", [*WORKLOADS, "trace_replay"])
def test_compressed_run_matches_step_by_step_run(name):
    fast = run(_scenario(name)).requests.to_pandas()
    slow = run(_scenario(name, "sim.step_compression=false")).requests.to_pandas()
    assert (fast["status"] == slow["status"]).all()
    assert (fast["replica"] == slow["replica"]).all()
    assert (fast["preemptions"] == slow["preemptions"]).all()
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=1e-9)


def test_compression_needs_fewer_events_and_merges_iterations():
    fast = run(scenario("workload.rate=2"))
    slow = run(scenario("workload.rate=2", "sim.step_compression=false"))
    assert fast.events * 5 < slow.events
    fast_steps, slow_steps = fast.steps.to_pandas(), slow.steps.to_pandas()
    assert fast_steps["iterations"].sum() == slow_steps["iterations"].sum()
    assert (slow_steps["iterations"] == 1).all()
    assert fast_steps["iterations"].max() > 1
