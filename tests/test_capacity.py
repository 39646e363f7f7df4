"""The capacity of a replica kept full (sim/capacity.py), held to the simulator's own saturation."""

from __future__ import annotations

import numpy as np
import pytest

import sim.capacity as capacity_module
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.capacity import WorkloadMix, pool_capacity
from sim.engine import run
from sim.resolve import resolve
from sim.scenario import Scenario, load_scenario
from sim.study.plan import max_rate
from tests.conftest import ROOT, scenario

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"


def scenario_capacity(s: Scenario, mix: WorkloadMix):
    """The capacity of one replica of the scenario `s` for `mix`."""
    return pool_capacity(resolve(s).pools[0], mix)


POLICIES = ROOT / "scenarios" / "policies"


def overloaded_throughput(path, rate: float, duration_s: float) -> tuple[float, RunData]:
    """Requests/s an overloaded fleet completes after the warm-up (no drain)."""
    items = [f"workload.rate={rate}", f"sim.duration_s={duration_s}", "sim.drain=false"]
    data = RunData.from_result(run(load_scenario(path, items)))
    return summarize(data)["throughput"]["requests_per_s"], data


@pytest.mark.parametrize(
    ("policy", "rate", "duration_s"),
    [
        ("continuous", 40.0, 180.0),
        ("chunked_prefill", 40.0, 180.0),
        ("vllm_v0", 40.0, 180.0),
        ("static", 10.0, 3000.0),  # batches of ~20 s: a long run averages many of them
        ("dynamic", 10.0, 3000.0),
    ],
)
def test_capacity_is_within_10_percent_of_what_an_overloaded_replica_completes(
    policy, rate, duration_s
):
    served, data = overloaded_throughput(POLICIES / f"{policy}.toml", rate, duration_s)
    req = data.requests
    mix = WorkloadMix.of(req["prompt_tokens"], req["output_tokens"])
    capacity = pool_capacity(data.spec.pools[0], mix).requests_per_s
    assert capacity == pytest.approx(served, rel=0.10)


def _utilization_at(fraction: float, saturation_rps: float) -> float:
    s = load_scenario(CHAT, [f"workload.rate={fraction * saturation_rps}"])
    return summarize(RunData.from_result(run(s)))["utilization"]["capacity_utilization"]


@pytest.fixture(scope="module")
def chat_saturation_rps() -> float:
    """What the chat scenario's four H100s complete at 160 req/s, twice what they can serve."""
    return overloaded_throughput(CHAT, 160.0, 150.0)[0]


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_capacity_utilization_of_the_chat_scenario_reads_the_fraction_of_its_saturation_throughput(
    fraction, chat_saturation_rps
):
    assert _utilization_at(fraction, chat_saturation_rps) == pytest.approx(fraction, abs=0.05)


@pytest.mark.slow
def test_capacity_utilization_of_the_chat_scenario_reads_the_fraction_of_its_max_rate(tmp_path):
    # --max-rate without SLOs: the highest rate that does not saturate the four H100s
    found = max_rate(CHAT, seeds=3, tolerance=0.05, out=tmp_path, workers=1)
    top = float(found.options.iloc[0]["max_rate_per_s"])
    for fraction in (0.2, 0.5, 0.8):
        assert _utilization_at(fraction, top) == pytest.approx(fraction, abs=0.05)


def test_a_one_slot_server_of_fixed_service_time_completes_one_request_per_service_time():
    s = scenario(
        "perf={kind = 'service_time', distribution = 'exponential', mean_s = 0.25}",
        "batcher.max_num_seqs=1",
        'workload.classes.0.output_tokens={dist = "fixed", value = 1}',
    )
    capacity = scenario_capacity(s, WorkloadMix.of([100, 300], [1, 1]))
    assert capacity.requests_per_s == pytest.approx(4.0)
    assert capacity.limited_by == "max_num_seqs"


def test_a_small_kv_cache_limits_the_batch_and_the_capacity():
    mix = WorkloadMix.of([1000] * 4, [200] * 4)
    roomy = scenario_capacity(scenario(), mix)
    tight = scenario_capacity(scenario("batcher.gpu_memory_utilization=0.25"), mix)
    assert roomy.limited_by == "max_num_seqs" and tight.limited_by == "kv_cache"
    assert tight.batch_seqs < roomy.batch_seqs and tight.requests_per_s < roomy.requests_per_s


def test_capacity_is_the_same_number_every_time_it_is_computed():
    mix = WorkloadMix.of([500, 1500, 800], [100, 300, 20])
    assert scenario_capacity(scenario(), mix) == scenario_capacity(scenario(), mix)


@pytest.mark.parametrize(("policy", "spread"), [("continuous", 0.005), ("static", 0.05)])
def test_capacity_hardly_depends_on_the_seed_of_its_samples(policy, spread, monkeypatch):
    s = load_scenario(POLICIES / f"{policy}.toml")
    lengths = np.random.default_rng(7)
    mix = WorkloadMix.of(
        np.minimum(lengths.lognormal(6.7, 0.9, 4000).astype(int) + 1, 8000),
        np.minimum(lengths.lognormal(4.9, 0.8, 4000).astype(int) + 1, 2000),
    )
    values = []
    for seed in range(4):
        monkeypatch.setattr(capacity_module, "SAMPLE_SEED", seed)
        values.append(scenario_capacity(s, mix).requests_per_s)
    assert (max(values) - min(values)) / np.mean(values) < spread


def test_each_pool_has_its_own_capacity_and_they_add_up_to_the_fleets():
    s = load_scenario(ROOT / "scenarios" / "fleet_two_models.toml", ["sim.duration_s=60"])
    summary = summarize(RunData.from_result(run(s)))
    pools, fleet = summary["pools"], summary["utilization"]
    small, large = (pools[name]["utilization"] for name in ("small", "large"))
    # Llama-3-8B on H100s serves several times the requests per second of 70B on H200 pairs
    assert small["capacity_per_s"] > 2 * large["capacity_per_s"]
    assert small["capacity_per_s"] + large["capacity_per_s"] == pytest.approx(
        fleet["capacity_per_s"]
    )
    window = summary["window"]["duration_s"]
    for p in pools.values():
        served = p["throughput"]["completed"] / window
        assert p["utilization"]["capacity_utilization"] == pytest.approx(
            served / p["utilization"]["capacity_per_s"]
        )
