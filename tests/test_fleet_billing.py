"""Billing follows provisioned time (reserved GPUs are billed always), and idle replicas lent to
background work give it back within the preemption time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import curves
from analysis.economics import economics
from analysis.fleet import PROVISIONED
from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.engine import run
from tests.conftest import scenario

TEN_MINUTES = ("sim.duration_s=600", "sim.drain=false", "sim.warmup_s=0")
INSTANT = "fleet.cold_start={provision_s=0, engine_start_s=0, storage_gb_per_s=1e12}"
PRICE = 4.0  # USD per GPU-hour, the test scenario's


def _data(*overrides: str) -> RunData:
    data = RunData.from_result(run(scenario(*overrides)))
    assert not failures(check_run(data)), failures(check_run(data))
    return data


def test_an_idle_replica_provisioned_for_ten_minutes_costs_ten_minutes():
    """A standby replica is provisioned and never takes a request: it costs its 10 minutes."""
    one = _data("fleet.replicas=1", *TEN_MINUTES)
    two = _data("fleet.replicas=1", "fleet.spare=1", *TEN_MINUTES)
    assert (two.requests["replica"] == 0).all()  # the standby replica stayed idle
    extra_hours = economics(two)["gpu_hours"] - economics(one)["gpu_hours"]
    assert extra_hours == pytest.approx(600.0 / 3600.0)
    extra_cost = economics(two)["cost_usd"] - economics(one)["cost_usd"]
    assert extra_cost == pytest.approx(PRICE * 600.0 / 3600.0)


@pytest.fixture(scope="module")
def scaled_in() -> RunData:
    """Two replicas for ten minutes, one of them scaled in at 300 s (read by two tests)."""
    return _data(
        "fleet.replicas=2",
        "fleet.autoscale={signal='schedule', schedule=[[0, 2], [300, 1]], period_s=10}",
        INSTANT,
        *TEN_MINUTES,
    )


def test_a_scaled_in_replica_is_billed_until_it_has_drained(scaled_in):
    data = scaled_in
    fleet = data.fleet
    gone = fleet.loc[fleet["to"] == "gone", ["replica", "time_s"]]
    assert len(gone) == 1
    gone_s = float(gone["time_s"].iloc[0])
    assert 300.0 <= gone_s < 330.0  # drained its running requests, took no new ones
    assert economics(data)["gpu_hours"] == pytest.approx((600.0 + gone_s) / 3600.0)


@pytest.mark.parametrize("pricing", ["reserved", "on_demand"])
def test_reserved_replicas_are_billed_when_scaled_to_zero_serving(pricing):
    data = _data(
        f"economics.pricing={pricing}",
        "economics.gpu_usd_per_hour=2.0",
        "fleet.replicas=2",
        "fleet.autoscale={signal='schedule', schedule=[[0, 2], [300, 0]], min=0, period_s=10}",
        INSTANT,
        *TEN_MINUTES,
    )
    hours = economics(data)["gpu_hours"]
    assert summarize(data)["fleet"]["serving_replicas_mean"] < 1.2  # none serve after ~300 s
    if pricing == "reserved":
        assert hours == pytest.approx(2 * 600.0 / 3600.0)  # the whole commitment, all the run
    else:
        assert 2 * 300.0 / 3600.0 <= hours < 2 * 330.0 / 3600.0  # until both have drained


BACKGROUND = (
    "fleet.replicas=3",
    "workload.rate=0.5",
    "fleet.router=least_outstanding",  # ties to the lowest position: the last replicas idle
    "fleet.background={idle_after_s=5, preemption_s=0.5, restart_loss_s=10, "
    "job_gpu_hours=0.05, usd_per_gpu_hour=1.5}",
    *TEN_MINUTES,
)


@pytest.fixture(scope="module")
def lent() -> RunData:
    return _data(*BACKGROUND)


def test_background_work_starts_only_after_the_idle_threshold(lent):
    fleet, req = lent.fleet, lent.requests
    starts = fleet[fleet["to"] == "background"]
    assert len(starts) >= 3
    for replica, t in zip(starts["replica"], starts["time_s"], strict=True):
        mine = req[req["replica"] == replica]
        left = mine["finish_s"].fillna(np.inf)
        inside = (mine["first_scheduled_s"] < t) & (left > t - 5.0 + 1e-9)
        assert not inside.any()  # its queue held nothing for the last idle_after_s


def test_a_request_waits_at_most_the_preemption_time_for_background_work(lent):
    req = lent.requests
    wait = (req["first_scheduled_s"] - req["arrival_s"]).to_numpy()
    taken_back = lent.fleet[lent.fleet["cause"] == "request"]
    assert len(taken_back) >= 3  # requests did take replicas back from background work
    assert wait.max() == pytest.approx(0.5, abs=0.05)  # ... and waited for it, no longer


def test_background_work_is_valued_and_raises_the_margin(lent):
    summary = summarize(lent)
    bg = summary["fleet"]["background"]
    ended_early = int((lent.fleet["cause"] == "request").sum())
    assert bg["gpu_hours"] > 0
    assert bg["useful_gpu_hours"] <= bg["gpu_hours"]
    assert bg["useful_gpu_hours"] >= bg["gpu_hours"] - ended_early * 10.0 / 3600.0
    assert bg["value_usd"] == pytest.approx(1.5 * bg["useful_gpu_hours"])
    serving_hours = summary["fleet"]["gpu_hours_by_state"]["serving"]
    assert serving_hours + bg["gpu_hours"] == pytest.approx(summary["economics"]["gpu_hours"])
    assert bg["margin_with_background"] > summary["economics"]["margin"]


def test_the_fleet_over_time_adds_up_to_the_runs_totals(scaled_in):
    """Per window: offered load, replicas by state, revenue and cost; summed over the windows
    they give the run's arrivals, provisioned replica-seconds and whole-run money."""
    data = scaled_in
    summary = summarize(data)
    frame = curves.fleet_over_time(curves.Run("run", Path("."), data, summary), window_s=60.0)
    width = (frame["window_end_s"] - frame["window_start_s"]).to_numpy()
    assert (frame["offered_rps"] * width).sum() == pytest.approx(len(data.requests))
    replica_s = (frame[list(PROVISIONED)].sum(axis=1) * width).sum()
    assert replica_s == pytest.approx(summary["economics"]["totals"]["cost_usd"] / PRICE * 3600)
    totals = summary["economics"]["totals"]
    assert frame["cost_usd"].sum() == pytest.approx(totals["cost_usd"])
    assert frame["revenue_usd"].sum() == pytest.approx(totals["revenue_usd"])
    assert frame["serving"].iloc[0] == pytest.approx(2.0) and frame["serving"].iloc[-1] < 1.01
