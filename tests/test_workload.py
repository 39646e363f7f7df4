"""Arrival processes, length distributions and trace readers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sim.engine import make_streams
from sim.errors import UserError
from sim.resolve import resolve
from sim.scenario import scenario_from_dict
from sim.traces import builtin_trace_path, read_trace
from sim.workload import generate_workload
from tests.conftest import BASE, scenario


def _workload(*overrides: str, seed: int = 5):
    s = scenario(*overrides)
    rngs = {k: np.random.default_rng(v) for k, v in make_streams(seed).items()}
    return generate_workload(s, resolve(s).trace_files, rngs)


def test_poisson_arrivals_have_the_rate_and_exponential_gaps():
    w = _workload("sim.duration_s=2000", "workload.rate=10")
    assert len(w) / 2000 == pytest.approx(10, rel=0.03)
    gaps = np.diff(w.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)
    assert w.arrival_s.max() < 2000


def test_gamma_arrivals_have_the_requested_burstiness():
    w = _workload(
        "sim.duration_s=4000", "workload.arrival=gamma", "workload.rate=5", "workload.cv=3.0"
    )
    gaps = np.diff(w.arrival_s)
    assert 1 / gaps.mean() == pytest.approx(5, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.08)


def test_schedule_arrivals_follow_each_piece_rate():
    w = _schedule_workload()
    first = np.sum(w.arrival_s < 1000) / 1000
    second = np.sum(w.arrival_s >= 1000) / 1000
    assert first == pytest.approx(5, rel=0.08)
    assert second == pytest.approx(20, rel=0.05)


def _schedule_workload():
    base = copy.deepcopy(BASE)
    base["sim"]["duration_s"] = 2000.0
    base["workload"] = {
        **base["workload"],
        "arrival": "schedule",
        "schedule": [[0.0, 5.0], [1000.0, 20.0]],
    }
    del base["workload"]["rate"]
    s = scenario_from_dict(base)
    rngs = {k: np.random.default_rng(v) for k, v in make_streams(5).items()}
    return generate_workload(s, resolve(s).trace_files, rngs)


def test_diurnal_arrivals_peak_in_the_first_half_period():
    w = _workload(
        "sim.duration_s=4000",
        "workload.arrival=diurnal",
        "workload.rate=10",
        "workload.diurnal_amplitude=0.5",
        "workload.diurnal_period_s=4000",
    )
    assert len(w) / 4000 == pytest.approx(10, rel=0.05)
    first = np.sum(w.arrival_s < 2000) / 2000
    # mean rate over the first half period: rate * (1 + 2A/pi)
    assert first == pytest.approx(10 * (1 + 2 * 0.5 / np.pi), rel=0.05)


def test_num_requests_caps_the_arrivals():
    w = _workload("sim.num_requests=123")
    assert len(w) == 123


def test_lognormal_lengths_match_mean_and_median():
    w = _workload(
        "sim.num_requests=40000",
        "workload.rate=1000",
        'workload.classes.0.prompt_tokens={dist="lognormal", mean=1000, median=600}',
    )
    assert w.prompt_tokens.mean() == pytest.approx(1000, rel=0.04)
    assert np.median(w.prompt_tokens) == pytest.approx(600, rel=0.03)


def test_lognormal_lengths_match_mean_and_cv():
    w = _workload(
        "sim.num_requests=40000",
        "workload.rate=1000",
        'workload.classes.0.output_tokens={dist="lognormal", mean=200, cv=0.5}',
    )
    assert w.output_tokens.mean() == pytest.approx(200, rel=0.03)
    assert w.output_tokens.std() / w.output_tokens.mean() == pytest.approx(0.5, rel=0.05)


def test_uniform_and_fixed_lengths_stay_in_range():
    w = _workload(
        "sim.num_requests=5000",
        "workload.rate=1000",
        'workload.classes.0.prompt_tokens={dist="uniform", low=10, high=20}',
        'workload.classes.0.output_tokens={dist="fixed", value=7}',
    )
    assert w.prompt_tokens.min() == 10 and w.prompt_tokens.max() == 20
    assert (w.output_tokens == 7).all()


def test_empirical_lengths_resample_trace_rows_jointly():
    spec = '{dist="empirical", trace="builtin:azure2023_code"}'
    w = _workload(
        "sim.num_requests=3000",
        f"workload.classes.0.prompt_tokens={spec}",
        f"workload.classes.0.output_tokens={spec}",
    )
    trace = read_trace(builtin_trace_path("azure2023_code"))
    pairs = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    drawn = set(zip(w.prompt_tokens.tolist(), w.output_tokens.tolist(), strict=True))
    assert drawn <= pairs


def test_class_shares_split_the_arrivals():
    w = _workload(
        "sim.num_requests=20000",
        "workload.rate=1000",
        'workload.classes=[{name="a", share=3, prompt_tokens={dist="fixed", value=10}, '
        'output_tokens={dist="fixed", value=5}}, {name="b", share=1, '
        'prompt_tokens={dist="fixed", value=20}, output_tokens={dist="fixed", value=5}}]',
    )
    assert np.mean(w.class_index == 0) == pytest.approx(0.75, abs=0.01)
    assert set(w.prompt_tokens[w.class_index == 1]) == {20}


def test_azure_trace_is_read_with_its_documented_statistics():
    t = read_trace(builtin_trace_path("azure2023_conv"))
    assert len(t.arrival_s) == 19366
    assert t.arrival_s[0] == 0 and np.all(np.diff(t.arrival_s) >= 0)
    assert len(t.arrival_s) / t.arrival_s[-1] == pytest.approx(5.53, rel=0.02)
    assert t.prompt_tokens.mean() == pytest.approx(1155, rel=0.01)
    assert t.output_tokens.mean() == pytest.approx(211, rel=0.01)


def test_mooncake_trace_is_read_with_prefix_hashes():
    t = read_trace(builtin_trace_path("mooncake_conversation"))
    assert len(t.arrival_s) == 12031
    assert t.prompt_tokens.mean() == pytest.approx(12035, rel=0.01)
    assert t.prefix_hashes is not None and len(t.prefix_hashes[0]) > 0


def test_weekly_arrivals_scale_each_day_by_its_factor():
    """Two days of a weekly pattern: day 0 at factor 1, day 1 at factor 0.25; each day's count
    is rate x factor x one day (the sinusoid integrates to zero over a day)."""
    factors = "[1.0, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0]"
    w = _workload(
        "sim.duration_s=172800",
        "workload.arrival=weekly",
        "workload.rate=0.5",
        "workload.diurnal_amplitude=0.6",
        f"workload.day_factors={factors}",
    )
    day0 = np.sum(w.arrival_s < 86400)
    day1 = np.sum(w.arrival_s >= 86400)
    assert day0 == pytest.approx(0.5 * 86400, rel=0.03)  # 43,200 expected, sd 0.5%
    assert day1 == pytest.approx(0.125 * 86400, rel=0.05)
    # within a day, the morning (sin > 0) is busier than the evening by the sinusoid's share
    morning = np.sum(w.arrival_s < 43200) / 43200
    assert morning == pytest.approx(0.5 * (1 + 2 * 0.6 / np.pi), rel=0.04)


def _rate_curve_scenario(curve, duration_s: float = 60.0):
    base = copy.deepcopy(BASE)
    base["sim"]["duration_s"] = duration_s
    base["workload"] = {**base["workload"], "arrival": "rate_curve", "rate_curve": str(curve)}
    del base["workload"]["rate"]
    return scenario_from_dict(base)


def test_rate_curve_arrivals_follow_the_curve_between_its_points(tmp_path):
    curve = tmp_path / "rate.csv"
    curve.write_text("time_s,rate\n0,2\n1000,10\n2000,10\n", encoding="utf-8")
    s = _rate_curve_scenario(curve, 3000.0)
    rngs = {k: np.random.default_rng(v) for k, v in make_streams(5).items()}
    w = generate_workload(s, resolve(s).trace_files, rngs)
    ramp = np.sum(w.arrival_s < 1000)  # linear 2 -> 10: 6,000 expected
    flat = np.sum(w.arrival_s >= 2000)  # held at the last rate after the last point: 10,000
    assert ramp == pytest.approx(6000, rel=0.05)
    assert flat == pytest.approx(10000, rel=0.04)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("time,rate\n0,1\n", "header time_s,rate"),
        ("time_s,rate\n5,1\n10,2\n", "start at 0 and increase"),
        ("time_s,rate\n0,0\n10,0\n", "not all 0"),
    ],
)
def test_a_bad_rate_curve_is_refused_at_load_time_naming_the_file(tmp_path, text, complaint):
    curve = tmp_path / "rate.csv"
    curve.write_text(text, encoding="utf-8")
    s = _rate_curve_scenario(curve)
    with pytest.raises(UserError, match=f"workload.rate_curve.*{complaint}"):
        resolve(s)
