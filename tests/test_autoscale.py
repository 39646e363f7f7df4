"""Autoscaling follows the load with its cold start, keeps SLO misses bounded and uses fewer
GPU-hours than a fleet sized for the peak; schedules scale by the clock."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.economics import economics
from analysis.fleet import state_intervals
from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.engine import run
from tests.conftest import scenario

PERIOD_S = 3600.0  # one "day" of the diurnal test, shortened to an hour
RATE = 6.0  # mean arrivals per second; 1.2 to 10.8 over the day
PROVISION_S, ENGINE_S = 60.0, 30.0
DIURNAL = (
    "workload.arrival=diurnal",
    f"workload.rate={RATE}",
    "workload.diurnal_amplitude=0.8",
    f"workload.diurnal_period_s={PERIOD_S}",
    f"sim.duration_s={PERIOD_S}",
    "sim.warmup_s=0",
    "workload.classes.0.slo_ttft_s=1.0",
    "batcher.max_num_seqs=4",  # small replicas: the peak needs 5, the trough 1
    f"fleet.cold_start={{provision_s={PROVISION_S}, engine_start_s={ENGINE_S}}}",
)
SLO_SCALER = (
    "fleet.autoscale={signal='slo', target=0.5, min=1, max=8, period_s=15, window_s=60, "
    "scale_down_cooldown_s=120}"
)
UTILIZATION_SCALER = (
    "fleet.autoscale={signal='utilization', target=0.7, min=1, max=8, period_s=15, "
    "window_s=60, scale_down_cooldown_s=120}"
)
QUEUE_SCALER = (
    "fleet.autoscale={signal='queue', target=1, min=1, max=8, period_s=15, "
    "scale_down_cooldown_s=120}"
)


def _data(*overrides: str) -> RunData:
    data = RunData.from_result(run(scenario(*DIURNAL, *overrides)))
    assert not failures(check_run(data)), failures(check_run(data))
    return data


@pytest.fixture(scope="module")
def autoscaled() -> dict[str, RunData]:
    """The diurnal day of each autoscaler, run once (several tests read the same run)."""
    return {
        name: _data("fleet.replicas=1", scaler)
        for name, scaler in (
            ("slo", SLO_SCALER),
            ("queue", QUEUE_SCALER),
            ("utilization", UTILIZATION_SCALER),
        )
    }


def _rate(t: np.ndarray) -> np.ndarray:
    return RATE * (1 + 0.8 * np.sin(2 * np.pi * t / PERIOD_S))


def _serving_at(data: RunData, times: np.ndarray) -> np.ndarray:
    iv = state_intervals(data)
    up = iv[iv["state"].isin(("serving", "background"))]
    start, end = up["start_s"].to_numpy(), up["end_s"].to_numpy()
    return ((start[None, :] <= times[:, None]) & (times[:, None] < end[None, :])).sum(axis=1)


@pytest.fixture(scope="module")
def peak_fleet() -> RunData:
    """A fixed fleet sized for the peak: the fewest replicas that meet the SLO at the peak
    (4 miss it for 1.4% of the requests, 5 for 0.02%)."""
    return _data("fleet.replicas=5")


@pytest.mark.parametrize("signal", ["slo", "queue", "utilization"])
def test_autoscaling_follows_a_diurnal_load_with_its_cold_start(signal, autoscaled, peak_fleet):
    data = autoscaled[signal]
    fleet = data.fleet
    # cold start visible: each scale-up provisions, then loads, then serves, after exactly
    # the pool's provisioning and loading times (unless a scale-in cancels it before)
    pool = data.spec.pools[0]
    started = fleet[(fleet["from"] == "none") & (fleet["cause"] == "scale_up")]
    assert len(started) >= 2
    for replica, t0 in zip(started["replica"], started["time_s"], strict=True):
        rows = fleet[fleet["replica"] == replica].set_index("to")["time_s"]
        if "loading" in rows:
            assert rows["loading"] == pytest.approx(t0 + PROVISION_S)
        if "serving" in rows:
            assert rows["serving"] == pytest.approx(t0 + PROVISION_S + pool.lifecycle.load_s)
    # replicas track the load: more serve in the busy half of the day than in the quiet half,
    # and their number rises and falls with the arrival rate
    times = np.arange(0.0, PERIOD_S, 15.0)
    serving = _serving_at(data, times)
    busy = _rate(times) > RATE
    assert serving[busy].mean() > serving[~busy].mean() + 1.0
    assert np.corrcoef(serving, _rate(times))[0, 1] > 0.6
    # SLO misses stay bounded, and the GPU-hours are fewer than a fleet sized for the peak
    req = data.requests
    ttft = req["first_token_s"] - req["arrival_s"]
    assert (ttft > 1.0).mean() < 0.12
    assert economics(data)["gpu_hours"] < 0.92 * economics(peak_fleet)["gpu_hours"]


def test_a_schedule_sets_the_replicas_by_time_of_day():
    data = _data(
        "sim.duration_s=600",  # the schedule's last change is at 450 s
        "fleet.replicas=1",
        "fleet.autoscale={signal='schedule', schedule=[[0, 1], [150, 3], [450, 1]], period_s=10}",
    )
    times = np.array([100.0, 300.0, 420.0, 590.0])
    assert _serving_at(data, times).tolist() == [1, 3, 3, 1]
    fleet = data.fleet
    assert (fleet.loc[fleet["cause"] == "scale_up", "time_s"] == 150.0).all()


def test_the_autoscaler_evaluates_once_per_period_not_per_request():
    ten_minutes = (*DIURNAL, "sim.duration_s=600")  # 120 periods; the count needs no full day
    quiet = run(scenario(*ten_minutes, "fleet.replicas=4"))
    scaled = run(
        scenario(
            *ten_minutes,
            "fleet.replicas=4",
            "fleet.autoscale={signal='schedule', schedule=[[0, 4]], period_s=5}",
        )
    )
    # the same traces (the schedule never changes the fleet), one more event per period of
    # the run (which goes on past the last arrival until the last request leaves)
    assert scaled.requests.equals(quiet.requests)
    evaluations = int(scaled.simulated_s // 5) + 1
    assert evaluations <= scaled.events - quiet.events <= evaluations + 1


def test_scale_in_drains_serving_replicas_without_losing_a_request(autoscaled):
    data = autoscaled["queue"]
    fleet = data.fleet
    drained = fleet[(fleet["to"] == "draining") & (fleet["cause"] == "scale_down")]
    assert len(drained) >= 1
    assert (data.requests["status"] == "completed").all()
    summary = summarize(data)["fleet"]
    assert summary["scale_ups"] >= 2 and summary["scale_downs"] >= 1
    assert summary["serving_replicas_max"] > summary["serving_replicas_mean"]


def test_utilization_scaling_sizes_the_fleet_to_the_load_over_its_capacity(autoscaled, peak_fleet):
    """The utilization signal knows the capacity of a replica, so it tracks the load closely:
    the serving replicas follow the arrival rate / (capacity x target) and use far fewer
    GPU-hours than the fleet sized for the peak."""
    data = autoscaled["utilization"]
    times = np.arange(0.0, PERIOD_S, 15.0)
    assert np.corrcoef(_serving_at(data, times), _rate(times))[0, 1] > 0.85
    assert economics(data)["gpu_hours"] < 0.75 * economics(peak_fleet)["gpu_hours"]
