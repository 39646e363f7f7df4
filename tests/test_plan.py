"""Capacity planning against fleets whose answer follows from arithmetic.

Each request is one iteration of a deterministic service time s (service_time perf model,
max_num_seqs = 1, one output token) and arrivals are nearly regular (gamma, CV 0.01): c replicas
serve at most c / s requests per second, and below that no request waits, so TTFT = s exactly.
At rate R the fewest replicas are the smallest c > R * s.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.cli import main
from sim.errors import UserError
from sim.prices import GPU_PRICE_DEFAULTS
from sim.study.plan import (
    Verdict,
    fewest_replicas,
    highest_rate,
    judge,
    max_rate,
    parse_slo,
    plan,
)
from tests.conftest import BASE, regular_workload


def fleet(service_s: float, rate: float, replicas: int = 1) -> dict:
    """The base scenario turned into a D/D/c queue of service time `service_s`."""
    data = copy.deepcopy(BASE)
    data["sim"] = {"seed": 3, "duration_s": 60.0, "warmup_s": 5.0}
    data["perf"] = {"kind": "service_time", "distribution": "deterministic", "mean_s": service_s}
    data["batcher"] = {"max_num_seqs": 1}
    data["fleet"] = {"gpu": "h100", "replicas": replicas}
    data["workload"] = regular_workload(rate, "one-step", output_tokens=1)
    return data


@pytest.mark.parametrize("service_s, rate, needed", [(0.25, 10.0, 3), (0.35, 10.0, 4)])
def test_plan_finds_the_fewest_replicas_that_arithmetic_requires(tmp_path, service_s, rate, needed):
    assert needed - 1 < rate * service_s < needed
    result = plan(
        fleet(service_s, rate),
        rate=rate,
        slos={"ttft_p99": 1.2 * service_s},
        seeds=2,
        out=tmp_path,
        workers=1,
    )
    option = result.options.iloc[0]
    assert option["replicas"] == needed
    assert option["usd_per_hour"] == pytest.approx(needed * 4.0)  # BASE prices a GPU at $4/h
    assert option["ttft_p99"] == pytest.approx(service_s)
    assert option["slo_headroom"] == pytest.approx(1 - 1 / 1.2)
    tried = result.evaluations.set_index("fleet.replicas")["feasible"]
    assert tried[needed] and not tried[needed - 1]
    assert (tmp_path / "plan.csv").is_file()


def test_plan_ranks_options_by_cost_per_hour(tmp_path):
    """At 2 req/s one replica of each type meets the SLO (0.5 busy): each option's cost is the
    price of one GPU."""
    result = plan(
        fleet(0.25, 2.0),
        rate=2.0,
        slos=["ttft_p99=0.3"],
        gpus=["h100", "h200", "b200"],
        prices={"h200": 3.0},
        seeds=2,
        out=tmp_path,
        workers=1,
    )
    options = result.options.set_index("gpu")
    assert list(options.index) == ["h200", "h100", "b200"]
    # h100: the scenario's own $4/h; h200: --price; b200: the on-demand default of economics
    assert list(options["usd_per_gpu_hour"]) == [
        3.0,
        4.0,
        GPU_PRICE_DEFAULTS["b200", "on_demand"].usd_per_gpu_hour,
    ]
    assert list(options["replicas"]) == [1, 1, 1]
    assert options["usd_per_hour"].tolist() == pytest.approx(
        [3.0, 4.0, GPU_PRICE_DEFAULTS["b200", "on_demand"].usd_per_gpu_hour]
    )


def test_max_rate_is_within_five_percent_below_the_fleet_capacity(tmp_path):
    """3 replicas of 0.2 s serve 15 req/s; the search starts at 22.5 req/s."""
    service_s, replicas = 0.2, 3
    capacity = replicas / service_s
    result = max_rate(
        fleet(service_s, rate=1.5 * capacity, replicas=replicas),
        slos={"ttft_p99": 20 * service_s},  # loose: saturation is what must bind
        seeds=2,
        out=tmp_path,
        workers=1,
    )
    option = result.options.iloc[0]
    assert 0.95 * capacity <= option["max_rate_per_s"] <= capacity
    assert option["limited_by"].startswith("saturated")


def test_saturated_point_is_infeasible_even_when_its_latency_meets_the_slo():
    row = {
        "latency_s.ttft.p99": 0.5,
        "latency_s.ttft.p99.ci_high": 0.6,
        "saturation.backlog_growth": 12.0,
        "saturation.backlog_growth.ci_low": 8.0,
        "saturation.offered_per_s": 10.0,
        "window.duration_s": 100.0,
    }
    verdict = judge(row, [parse_slo("ttft_p99=1.0")])
    assert verdict.saturated and not verdict.feasible
    stable = {**row, "saturation.backlog_growth.ci_low": -3.0}
    assert judge(stable, [parse_slo("ttft_p99=1.0")]).feasible


def test_an_slo_is_met_only_if_the_upper_end_of_the_interval_is():
    row = {
        "latency_s.ttft.p99": 0.9,
        "latency_s.ttft.p99.ci_high": 1.1,
        "saturation.backlog_growth": 0.0,
        "saturation.backlog_growth.ci_low": -1.0,
        "saturation.offered_per_s": 10.0,
        "window.duration_s": 100.0,
    }
    verdict = judge(row, [parse_slo("ttft_p99=1.0")])
    assert not verdict.feasible and "ttft_p99 1.1 > 1" in verdict.reason


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40))
def test_fewest_replicas_finds_the_threshold_from_any_guess(needed, guess, max_replicas):
    tried = []

    def feasible(n: int) -> bool:
        assert 1 <= n <= max_replicas
        tried.append(n)
        return n >= needed

    found = fewest_replicas(feasible, guess, max_replicas)
    assert found == (needed if needed <= max_replicas else None)
    assert len(tried) <= 2 * math.ceil(math.log2(max_replicas + 1)) + 2


@given(st.floats(0.5, 500.0), st.floats(0.1, 1000.0))
def test_highest_rate_brackets_then_bisects_to_the_tolerance(capacity, start):
    def check(rate: float) -> Verdict:
        return Verdict(rate <= capacity, False, 0.0, "", {})

    found = highest_rate(check, start, 0.02)
    assert 0.98 * capacity <= found.rate <= capacity


@pytest.mark.parametrize(
    "text, message",
    [
        ("ttft_p99", "expected NAME=SECONDS"),
        ("ttft_p95=1", "expected NAME=SECONDS"),
        ("ttft_p99=fast", "not a number"),
        ("tpot_p99=0", "must be > 0"),
    ],
)
def test_bad_slo_is_a_user_error(text, message):
    with pytest.raises(UserError, match=message):
        parse_slo(text)


def test_an_option_whose_runs_raise_is_reported_and_the_others_still_planned(tmp_path):
    result = plan(
        fleet(0.25, 2.0),
        rate=2.0,
        slos=["ttft_p99=0.3"],
        tps=[1, 2],
        overrides=["batcher.gpu_memory_utilization=0.15"],  # 12 GB of an H100: no 8B at tp=1
        seeds=2,
        out=tmp_path,
        workers=1,
    )
    status = result.options.set_index("tp")["status"]
    assert status[2] == "ok"
    assert status[1].startswith("error:") and "does not fit" in status[1]


def test_plan_where_no_option_meets_the_slos_writes_every_option_as_failing_and_why(tmp_path):
    """Three replicas are needed (10 req/s x 0.25 s); at most two may be tried."""
    plan(
        fleet(0.25, 10.0),
        rate=10.0,
        slos=["ttft_p99=0.3"],
        gpus=["h100", "h200"],
        prices={"h200": 3.0},
        max_replicas=2,
        seeds=2,
        out=tmp_path,
        workers=1,
    )
    table = pd.read_csv(tmp_path / "plan.csv")
    assert list(table["gpu"]) == ["h100", "h200"]
    assert table["usd_per_hour"].isna().all()
    for status in table["status"]:
        assert status.startswith("not met with 2 replicas: saturated (backlog grows by")
        assert "ttft_p99" in status


def test_a_gpu_without_a_price_is_named(tmp_path):
    with pytest.raises(UserError, match="no price for gpu 'mi300x' with pricing 'on_demand'"):
        plan(fleet(0.25, 10.0), 10.0, ["ttft_p99=1"], gpus=["h100", "mi300x"], out=tmp_path)


def test_planning_needs_two_seeds_for_an_interval(tmp_path):
    with pytest.raises(UserError, match="at least 2 seeds"):
        plan(fleet(0.25, 10.0), 10.0, ["ttft_p99=1"], seeds=1, out=tmp_path)


def test_plan_command_prints_the_options(tmp_path, capsys):
    scenario = tmp_path / "dd.toml"
    scenario.write_text(
        """
[sim]
seed = 3
duration_s = 60.0
warmup_s = 5.0
[workload]
arrival = "gamma"
rate = 10.0
cv = 0.01
[[workload.classes]]
name = "one-step"
prompt_tokens = { dist = "fixed", value = 100 }
output_tokens = { dist = "fixed", value = 1 }
[model]
name = "llama-3-8b"
[fleet]
gpu = "h100"
[batcher]
max_num_seqs = 1
[perf]
kind = "service_time"
distribution = "deterministic"
mean_s = 0.25
""",
        encoding="utf-8",
    )
    argv = ["plan", str(scenario), "--rate", "10", "--slo", "ttft_p99=0.3", "--seeds", "2"]
    argv += ["--price", "h100=4", "--workers", "1", "--out", str(tmp_path / "plan")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["gpu", "tp", "replicas"]
    assert lines[1].split()[:3] == ["h100", "1", "3"]


def test_plan_help_shows_percent_signs_and_the_defaults_of_gpu_and_tp(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "95% interval" in text and "%%" not in text
    assert "(default: the scenario's fleet.gpu)" in text
    assert "(default: the scenario's fleet.tp)" in text


@pytest.fixture(scope="module")
def h100_and_h200_plan(tmp_path_factory):
    """D/D/c at 10 req/s and 0.25 s per request on h100 ($4/h, the scenario's price) and h200
    ($3/h by --price), alone and mixed; h200 is written "H200" in --gpu and --price."""
    return plan(
        fleet(0.25, 10.0),
        rate=10.0,
        slos=["ttft_p99=0.3"],
        gpus=["h100", "H200"],
        prices={"H200": 3.0},
        mix=True,
        seeds=2,
        out=tmp_path_factory.mktemp("plan"),
        workers=1,
    )


def test_gpu_names_of_plan_options_and_prices_are_case_insensitive(h100_and_h200_plan):
    options = h100_and_h200_plan.options
    alone = options[options["mix"] == ""]
    assert alone[["gpu", "usd_per_gpu_hour"]].values.tolist() == [["h200", 3.0], ["h100", 4.0]]
    assert set(options["gpu"]) == {"h100", "h200", "h100+h200"}


def test_mixes_of_two_gpu_types_need_what_arithmetic_requires_and_rank_by_cost(h100_and_h200_plan):
    """D/D/c at 10 req/s and 0.25 s per request needs 3 servers of either type; the mixes
    1 + 2 and 2 + 1 need 3 too. At $4/h (h100) and $3/h (h200): 9 < 10 < 11 < 12 $/h."""
    result = h100_and_h200_plan
    options = result.options
    assert options["gpu"].tolist() == ["h200", "h100+h200", "h100+h200", "h100"]
    assert options["mix"].tolist() == ["", "1 h100 + 2 h200", "2 h100 + 1 h200", ""]
    assert options["replicas"].tolist() == [3, 3, 3, 3]
    assert options["usd_per_hour"].tolist() == pytest.approx([9.0, 10.0, 11.0, 12.0])
    mixes = result.evaluations.dropna(subset=["fleet.pools.1.replicas"])
    assert {(1, 1), (1, 2), (2, 1)} <= set(
        zip(mixes["fleet.pools.0.replicas"], mixes["fleet.pools.1.replicas"], strict=True)
    )


def test_mix_needs_two_gpu_types_and_a_single_pool_scenario(tmp_path):
    with pytest.raises(UserError, match="--mix needs exactly two GPU types"):
        plan(fleet(0.25, 10.0), 10.0, ["ttft_p99=1"], gpus=["h100"], mix=True, out=tmp_path)
    pooled = fleet(0.25, 10.0)
    pooled["fleet"] = {"pools": [{"name": "a", "gpu": "h100"}]}
    with pytest.raises(UserError, match="give a scenario whose \\[fleet\\] is a single pool"):
        plan(pooled, 10.0, ["ttft_p99=1"], out=tmp_path)
