"""Step compression: a run with stretches of decode iterations equals the step-by-step run."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine import run
from tests.conftest import scenario

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
}


@pytest.mark.parametrize("name", WORKLOADS)
def test_compressed_run_matches_step_by_step_run(name):
    overrides = WORKLOADS[name]
    fast = run(scenario(*overrides)).requests.to_pandas()
    slow = run(scenario(*overrides, "sim.step_compression=false")).requests.to_pandas()
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
