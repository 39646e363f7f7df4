"""Overload said out loud: the saturation block of every summary and the CLI's warning."""

from __future__ import annotations

import copy
import json

import pytest

from analysis.rundata import RunData
from analysis.summary import summarize
from sim.cli import main
from sim.engine import run
from sim.scenario import load_scenario, scenario_from_dict
from tests.conftest import BASE, ROOT

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"
ONE_REPLICA = ROOT / "scenarios" / "policies" / "continuous.toml"  # about 20 req/s


def test_a_thousand_requests_per_second_on_the_chat_fleet_warns_and_reports_saturation(
    tmp_path, capsys
):
    out = tmp_path / "overload"
    items = ["workload.rate=1000", "sim.duration_s=10", "sim.warmup_s=2"]
    argv = ["run", str(CHAT), "--out", str(out), *(a for i in items for a in ("--set", i))]
    assert main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    sat = json.loads((out / "summary.json").read_text())["saturation"]
    assert sat["saturated"] is True
    load = sat["offered_per_s"] / sat["capacity_per_s"]
    assert warnings == [
        f"warning: saturated: {sat['offered_per_s']:.1f} req/s offered ({load:.1f}x its capacity "
        f"of {sat['capacity_per_s']:.1f}), {sat['departures_per_s']:.1f} req/s served; the "
        f"backlog grew by {sat['backlog_growth']:.0f} requests over the measurement window and "
        f"held {sat['backlog_end']} at its end (warm-up arrivals included); latency and margin "
        "describe an overloaded fleet"
    ]
    assert sat["offered_per_s"] > 10 * sat["departures_per_s"]
    assert sat["backlog_end"] > 7_000  # of 10,000 arrivals, nearly all still waiting at 10 s


def test_an_undrained_overloaded_run_reports_what_completed_and_what_is_left():
    s = load_scenario(CHAT, ["workload.rate=1000", "sim.duration_s=40", "sim.warmup_s=5"])
    summary = summarize(RunData.from_result(run(s.model_copy(update={"sim": _undrained(s)}))))
    requests, sat = summary["requests"], summary["saturation"]
    assert requests["in_flight"] > 0.9 * requests["arrived"]
    assert requests["completed"] + requests["in_flight"] == requests["arrived"]
    assert sat["left_at_end"] > 30_000
    assert summary["throughput"]["requests_per_s"] == pytest.approx(sat["capacity_per_s"], 0.05)


def _undrained(s):
    return s.sim.model_copy(update={"drain": False})


@pytest.fixture(scope="module")
def one_replica_capacity() -> float:
    """The capacity (requests/s) the summary reports for the one-replica scenario."""
    s = load_scenario(ONE_REPLICA, ["workload.rate=20"])
    return summarize(RunData.from_result(run(s)))["saturation"]["capacity_per_s"]


@pytest.mark.parametrize(("load", "saturated"), [(0.8, False), (1.2, True)])
def test_a_fleet_below_its_capacity_is_stable_and_one_above_it_saturated(
    load, saturated, one_replica_capacity
):
    s = load_scenario(ONE_REPLICA, [f"workload.rate={load * one_replica_capacity}"])
    assert summarize(RunData.from_result(run(s)))["saturation"]["saturated"] is saturated


def test_slo_attainment_and_goodput_are_reported_without_an_economics_section():
    base = copy.deepcopy(BASE)
    del base["economics"]
    base["workload"]["classes"][0]["slo_ttft_s"] = 0.05  # tight: some prompts take longer
    s = scenario_from_dict(base, "test", [])
    summary = summarize(RunData.from_result(run(s)))
    sat = summary["saturation"]
    attained = sat["slo_attainment"]["chat"]
    assert 0.0 < attained < 1.0
    assert sat["goodput_per_s"] < summary["throughput"]["requests_per_s"]
    assert summary["economics"]["cost_usd"] is None
