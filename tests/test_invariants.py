"""The run-invariant checker: every kind of run passes it, and each broken trace is caught."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from sim.cli import main
from sim.engine import run
from sim.scenario import load_scenario
from tests.conftest import SCENARIOS, simulate


def _broken(data: RunData) -> dict[str, int]:
    return {inv.name: inv.violations for inv in failures(check_run(data))}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_satisfies_every_invariant(path):
    # 1,500 requests, measured from the start: a warm-up longer than their arrivals would warn
    shortened = ["sim.num_requests=1500", "sim.warmup_s=0"]
    data = RunData.from_result(run(load_scenario(path, shortened)))
    assert _broken(data) == {}


@pytest.mark.parametrize(
    "overrides",
    [
        ("sim.step_compression=false",),
        ("sim.drain=false", "workload.rate=40"),
        ("fleet.router=round_robin", "fleet.replicas=3"),
    ],
    ids=["step_by_step", "undrained", "round_robin"],
)
def test_runs_of_every_shape_satisfy_every_invariant(overrides):
    assert _broken(simulate(*overrides)) == {}


def test_run_with_preemptions_satisfies_every_invariant():
    data = simulate("batcher.gpu_memory_utilization=0.22", "workload.rate=20")
    assert data.requests["preemptions"].sum() > 0
    assert _broken(data) == {}


SWAPPING = ("batcher.preemption=swap", "batcher.gpu_memory_utilization=0.215", "workload.rate=30")


def test_swap_preemption_decodes_exactly_the_tokens_completed_requests_need():
    """A swapped-in request resumes decoding without a prefill, so none of its tokens comes
    from a recomputation (the check once subtracted its preemptions and failed)."""
    data = simulate(*SWAPPING)
    assert data.requests["preemptions"].sum() > 0
    assert _broken(data) == {}
    steps = data.steps
    steps.loc[steps.index[steps["decode_seqs"] > 0][0], "iterations"] += 1
    assert _broken(data) == {"decode tokens": 1}


def test_undrained_overloaded_run_is_work_conserving_up_to_its_horizon():
    """Stopped at duration_s, a replica's running interval is not recorded: the time after its
    last recorded one is not idle time (the check once counted every waiting request)."""
    data = simulate("sim.drain=false", "workload.rate=80")
    waiting = data.requests[data.requests["first_scheduled_s"].isna()]
    assert len(waiting) > 0 and data.requests["replica"].ge(0).all()
    assert _broken(data) == {}
    data.requests.loc[0, "arrival_s"] -= 0.5  # waits on an idle replica before its first step
    assert "work conserving" in _broken(data)


@pytest.fixture
def run_data() -> RunData:
    return simulate("sim.duration_s=30")


def test_overlapping_steps_are_caught(run_data):
    steps = run_data.steps
    earlier, later = steps.index[steps["replica"] == 0][:2]
    steps.loc[later, "start_s"] = steps.loc[earlier, "end_s"] - 1e-3
    assert "steps disjoint" in _broken(run_data)


def test_first_token_before_scheduling_is_caught(run_data):
    req = run_data.requests
    req.loc[5, "first_token_s"] = req.loc[5, "first_scheduled_s"] - 1e-3
    assert _broken(run_data)["timestamps ordered"] == 1


def test_request_waiting_while_its_replica_idles_is_caught(run_data):
    req = run_data.requests
    steps = run_data.steps
    replica = int(req.loc[0, "replica"])
    start = steps[steps["replica"] == replica]["start_s"].min()
    assert start == req.loc[0, "arrival_s"]  # the first request starts at once
    req.loc[0, "arrival_s"] -= 0.5  # now it would have waited on an idle replica
    assert "work conserving" in _broken(run_data)


def test_missing_decode_tokens_are_caught(run_data):
    steps = run_data.steps
    decoding = steps.index[steps["decode_seqs"] > 0][0]
    steps.loc[decoding, "iterations"] += 1
    broken = _broken(run_data)
    assert "decode tokens" in broken


def test_decode_time_not_in_the_steps_breaks_littles_law(run_data):
    req = run_data.requests
    multi = req.index[req["output_tokens"] > 1][0]
    req.loc[multi, "first_token_s"] -= 1e-3
    req.loc[multi, "first_scheduled_s"] -= 1e-3
    assert "little's law (decode stage)" in _broken(run_data)


def test_lost_request_is_caught(run_data):
    run_data.requests.loc[3, "status"] = "lost"
    assert "conservation" in _broken(run_data)


def test_kv_overuse_is_caught(run_data):
    run_data.steps.loc[0, "kv_blocks_used"] = run_data.spec.pools[0].kv_capacity_blocks + 1
    assert _broken(run_data) == {"kv within capacity": 1}


def test_check_command_passes_a_run_directory_and_fails_a_corrupted_one(tmp_path, capsys):
    s = load_scenario(SCENARIOS[0], ["sim.num_requests=300"])
    out = run(s).save(tmp_path / "run")
    assert main(["check", str(out)]) == 0
    assert "work conserving              ok" in capsys.readouterr().out
    steps = pq.read_table(out / "steps.parquet").to_pandas()
    steps.loc[1, "start_s"] = steps.loc[0, "start_s"]
    steps.loc[1, "replica"] = steps.loc[0, "replica"]
    pq.write_table(pa.Table.from_pandas(steps, preserve_index=False), out / "steps.parquet")
    assert main(["check", str(out)]) == 1
    assert "steps disjoint" in capsys.readouterr().out
