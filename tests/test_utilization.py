"""Utilization from the traces: exact on hand-built traces, consistent with the step-time model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.summary import summarize
from analysis.utilization import (
    default_window_s,
    fleet_timeline,
    integrate_windows,
    replica_timeline,
    replica_totals,
    step_work,
)
from analysis.window import Window, measurement_window
from sim.perf import Roofline, StepWork
from sim.scenario import RooflineConfig
from tests.test_economics import TWO_INTERVALS, TWO_REQUESTS, hand_run, request

WHOLE = Window(0.0, 7200.0)  # the measurement window of the hand-built two-hour runs


def each(data, capacity_per_s: float) -> dict[str, float]:
    """The same replica capacity (requests/s) for every pool of a run."""
    return {p.name: capacity_per_s for p in data.spec.pools}


def test_nonidle_fraction_is_time_running_iterations_over_provisioned_time_exactly():
    # replica 0 busy 0-3600 s and 4500-6300 s of 7200 s; replica 1 never busy
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=2")
    totals = replica_totals(data, WHOLE, each(data, 1.0))
    assert totals.loc[0, "nonidle_fraction"] == (3600.0 + 1800.0) / 7200.0
    assert totals.loc[1, "nonidle_fraction"] == 0.0
    assert summarize(data)["utilization"]["nonidle_fraction"] == 5400.0 / 7200.0 / 2


def test_nonidle_fraction_per_window_is_the_nonidle_time_inside_each_window():
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=1")
    timeline = replica_timeline(data, each(data, 1.0), window_s=1800.0)
    assert timeline["window_start_s"].tolist() == [0.0, 1800.0, 3600.0, 5400.0]
    assert timeline["nonidle_fraction"].tolist() == [1.0, 1.0, 900.0 / 1800.0, 900.0 / 1800.0]


def test_capacity_utilization_is_requests_served_per_second_over_the_capacity():
    # two requests served in 7200 s by a replica that could serve 0.001 per second
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=1")
    totals = replica_totals(data, WHOLE, each(data, 0.001))
    assert totals.loc[0, "capacity_utilization"] == pytest.approx(2 / 7200.0 / 0.001)
    # per time window each request counts as served evenly over 0-3600 s and 4500-6300 s
    t = replica_timeline(data, each(data, 0.001), window_s=1800.0)
    assert t["capacity_utilization"].tolist() == pytest.approx(
        [0.5 / 1.8, 0.5 / 1.8, 0.5 / 1.8, 0.5 / 1.8]
    )


def test_queue_length_and_running_requests_are_time_averages_of_the_request_spans():
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=1")
    t = replica_timeline(data, each(data, 1.0), window_s=1800.0)
    # request 1 waits 4400-4500 s (in the third window); runs 4500-6300 s
    assert t["queue_length"].tolist() == [0.0, 0.0, 100.0 / 1800.0, 0.0]
    assert t["running_requests"].tolist() == [1.0, 1.0, 900.0 / 1800.0, 900.0 / 1800.0]


def test_kv_occupancy_weights_each_interval_by_its_duration():
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=1")
    occupancy = replica_totals(data, WHOLE, each(data, 1.0)).loc[0, "kv_occupancy"]
    assert occupancy == pytest.approx((40 * 3600.0 + 60 * 1800.0) / (7200.0 * 1000))


def test_decode_batch_is_averaged_over_nonidle_time_only():
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, "fleet.replicas=1")
    batch = replica_totals(data, WHOLE, each(data, 1.0)).loc[0, "decode_batch"]
    assert batch == pytest.approx((2 * 3600.0 + 1 * 1800.0) / 5400.0)


def test_flops_and_bytes_of_a_compressed_stretch_match_the_roofline_counts_iteration_by_iteration():
    # 8 sequences, 5 decode iterations; first attends 4000 positions, each next one 8 more
    stretch = [(0, 0.0, 1.0, 5, 0, 8, 4000, 10), (0, 1.0, 1.5, 1, 700, 3, 900, 12)]
    rows = [request(0.0, 0.0, 0.1, 1.5, prompt=700, output=9)]
    mixtral = ("fleet.replicas=1", "fleet.gpu=h200", "model.name=mixtral-8x7b")  # 93 GB fits
    data = hand_run(rows, stretch, 2.0, *mixtral)
    work = step_work(data)
    pool = data.spec.pools[0]
    roofline = Roofline(pool.model_shape, pool.accelerator, 1, RooflineConfig(), "bf16", "bf16")
    iterations = [StepWork(decode_seqs=8, decode_context=4000 + 8 * i) for i in range(5)]
    counts = [roofline.counts(w) for w in iterations]
    flops = sum(c.matmul_flops + c.attention_flops for c in counts)
    assert work["flops"][0] == pytest.approx(flops)
    assert work["bytes"][0] == pytest.approx(sum(c.weight_bytes + c.kv_bytes for c in counts))
    # prefill: linear layers of every token; attention of prefill chunks is not in the trace
    mixed = roofline.counts(StepWork(prefill_tokens=700, decode_seqs=3, decode_context=900))
    assert work["flops"][1] == pytest.approx(mixed.matmul_flops + mixed.attention_flops)


def test_mfu_and_memory_bandwidth_utilization_of_a_simulated_run_stay_within_the_roofline(
    tiny_run,
):
    u = summarize(tiny_run)["utilization"]
    cfg = tiny_run.scenario.perf
    assert 0 < u["mfu_bf16_peak"] <= cfg.compute_efficiency * u["nonidle_fraction"] + 1e-9
    assert 0 < u["memory_bandwidth_utilization"]
    assert u["memory_bandwidth_utilization"] <= cfg.memory_efficiency * u["nonidle_fraction"]


def test_mfu_is_given_against_the_bf16_peak_and_against_the_weight_dtype_peak(tiny_run):
    # FP8 weights on an H100: the GEMMs' peak doubles, so MFU against it halves
    pool = dataclasses.replace(tiny_run.spec.pools[0], weight_dtype="fp8")
    fp8 = dataclasses.replace(tiny_run, spec=dataclasses.replace(tiny_run.spec, pools=(pool,)))
    u = summarize(fp8)["utilization"]
    ratio = pool.accelerator.peak_flops("fp8") / pool.accelerator.peak_flops("bf16")
    assert ratio == pytest.approx(2.0, rel=1e-3)
    assert u["mfu_weight_dtype_peak"] == pytest.approx(u["mfu_bf16_peak"] / ratio)


def test_fleet_timeline_averages_fractions_and_sums_queues_over_replicas(tiny_run):
    per_replica = replica_timeline(tiny_run, each(tiny_run, 1.0))
    fleet = fleet_timeline(per_replica)
    assert len(fleet) == len(per_replica) / tiny_run.spec.num_replicas
    by_window = per_replica.groupby("window_start_s")
    for fraction in ("nonidle_fraction", "capacity_utilization"):
        assert np.allclose(fleet[fraction], by_window[fraction].mean())
    assert np.allclose(fleet["queue_length"], by_window["queue_length"].sum())


def test_windowed_nonidle_time_adds_up_to_the_total(tiny_run):
    per_replica = replica_timeline(tiny_run, each(tiny_run, 1.0), window_s=7.0)
    whole = Window(0.0, tiny_run.simulated_s)
    totals = replica_totals(tiny_run, whole, each(tiny_run, 1.0))
    summed = per_replica.groupby("replica")["nonidle_s"].sum()
    assert np.allclose(summed, totals["nonidle_s"])


def test_utilization_is_measured_over_the_measurement_window(tiny_run):
    window = measurement_window(tiny_run)
    assert (window.start_s, window.end_s) == (5.0, 60.0)  # warm-up 5 s, arrivals for 60 s
    nonidle = replica_totals(tiny_run, window, each(tiny_run, 1.0))["nonidle_s"].sum()
    expected = summarize(tiny_run)["utilization"]["nonidle_fraction"] * 2 * window.duration_s
    assert nonidle == pytest.approx(expected)


def test_integrating_overlapping_intervals_counts_each_one():
    edges = np.array([0.0, 2.0, 4.0])
    area = integrate_windows(np.array([0.0, 1.0]), np.array([3.0, 4.0]), np.ones(2), edges)
    assert area.tolist() == [3.0, 3.0]


@pytest.mark.parametrize(("simulated_s", "window_s"), [(62.4, 1.0), (311.6, 5.0), (3600.0, 50.0)])
def test_default_window_is_a_round_length_giving_about_a_hundred_windows(simulated_s, window_s):
    assert default_window_s(simulated_s) == window_s
