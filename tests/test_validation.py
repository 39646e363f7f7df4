"""Validation against queueing theory: closed forms, statistics, and the engine's cases."""

from __future__ import annotations

import heapq
import json
import math

import numpy as np
import pytest

from sim.cli import main
from sim.validation import runner, theory
from sim.validation.runner import CI, PROFILES, Profile, run_validation
from sim.validation.stats import Interval, passes, per_check_confidence, t_interval
from tests.conftest import ROOT

REQUIRED_KEYS = {"case", "rho", "metric", "theory", "simulated", "ci_low", "ci_high"}
REQUIRED_KEYS |= {"rel_error", "passed"}


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.9])
def test_closed_forms_agree_on_the_single_exponential_server(rho):
    mm1 = rho / (1.0 - rho)
    assert theory.pk_wait_s(rho, 1.0, 1.0) == pytest.approx(mm1)
    assert theory.mmc_wait_s(1, rho, 1.0) == pytest.approx(mm1)
    assert theory.erlang_arrivals_wait_s(1, rho, 1.0) == pytest.approx(mm1)
    assert theory.erlang_arrivals_sigma(1, rho, 1.0) == pytest.approx(rho)


def test_erlang_c_matches_hand_computed_values():
    # M/M/2 with a = 1: C = (a^2/2 / (1 - 1/2)) / (1 + a + a^2/2 / (1 - 1/2)) = 1/3
    assert theory.erlang_c(2, 1.0, 1.0) == pytest.approx(1.0 / 3.0)
    # M/M/2, rho = 0.8: W = rho^2 / (mu (1 - rho^2)) = 0.64 / 0.36
    assert theory.mmc_wait_s(2, 1.6, 1.0) == pytest.approx(0.64 / 0.36)


def test_deterministic_service_halves_the_exponential_wait():
    assert theory.pk_wait_s(0.8, 1.0, 0.0) == pytest.approx(theory.pk_wait_s(0.8, 1.0, 1.0) / 2)


def test_round_robin_waits_between_central_queue_and_single_server():
    for c in (2, 4, 16):
        lam = 0.9 * c
        assert theory.mmc_wait_s(c, lam, 1.0) < theory.erlang_arrivals_wait_s(c, lam, 1.0) < 9.0


def test_batched_infinite_server_wait_matches_a_direct_simulation_of_its_iterations():
    lam, d, n = 0.8, 0.1, 10
    rng = np.random.default_rng(5)
    total_wait, customers, busy_until = 0.0, 0, -1.0
    arrivals = np.cumsum(rng.exponential(1.0 / lam, 400_000))
    # replica: iterations on a grid that restarts at an arrival to an idle replica
    grid_start = 0.0
    for a in arrivals:
        if a >= busy_until:  # idle: starts now, busy for n iterations
            grid_start, wait = a, 0.0
            busy_until = a + n * d
        else:  # joins at the next boundary of the running grid
            k = math.ceil((a - grid_start) / d)
            start = grid_start + k * d
            wait = start - a
            busy_until = max(busy_until, start + n * d)
        total_wait += wait
        customers += 1
    simulated = total_wait / customers
    assert simulated == pytest.approx(theory.batched_infinite_server_wait_s(lam, d, n), rel=0.01)


def test_batched_infinite_server_wait_tends_to_half_an_iteration_times_busy_probability():
    lam, d, n = 0.5, 1e-4, 10_000  # continuous limit: P(busy) = 1 - exp(-lam n d)
    expected = (1.0 - math.exp(-lam * n * d)) * d / 2.0
    assert theory.batched_infinite_server_wait_s(lam, d, n) == pytest.approx(expected, rel=1e-3)


def test_unstable_loads_are_refused():
    with pytest.raises(ValueError, match="load"):
        theory.pk_wait_s(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="load"):
        theory.erlang_c(4, 4.2, 1.0)


# ----------------------------------------------------------------------------- statistics


def test_t_interval_covers_the_mean_at_its_level():
    # replication means are near-normal (each averages many requests)
    rng = np.random.default_rng(1)
    covered = [
        (ci := t_interval(rng.normal(2.0, 1.0, 10), 0.95)).low <= 2.0 <= ci.high
        for _ in range(4000)
    ]
    assert 0.935 < np.mean(covered) < 0.965


def test_bonferroni_level_keeps_the_family_at_95_percent():
    assert per_check_confidence(50) == pytest.approx(0.999)


def test_pass_rule_needs_theory_inside_the_interval_and_a_small_error():
    ci = Interval(1.0, 0.9, 1.1)
    assert passes("=", 1.02, ci, 0.03)
    assert not passes("=", 1.05, ci, 0.03)  # inside, but 5% off
    assert not passes("=", 1.0, Interval(1.0, 0.99, 0.995), 0.03)  # outside a narrow interval
    assert passes(">=", 1.05, ci, 0.03) and not passes(">=", 1.2, ci, 0.03)
    assert passes("<", 1.2, ci, 0.03) and not passes("<", 1.05, ci, 0.03)
    assert passes("<=", 1.1, ci, 0.0) and not passes("<=", 1.09, ci, 0.0)


# ----------------------------------------------------------------------------- the engine


@pytest.mark.slow
def test_quick_validation_passes_every_check(tmp_path):
    """The default profile of `sim validate` (3 to 4 minutes on 2 cores)."""
    status = main(["validate", "--out", str(tmp_path), "--workers", "2"])
    entries = json.loads((tmp_path / "validation.json").read_text())
    assert {e["rho"] for e in entries} == {0.5, 0.8}
    assert [e for e in entries if not e["passed"]] == []
    assert status == 0


# every case at one load, 2 small replications: the command's output, not its statistics
# (the profiles above are the statistics)
SMOKE = Profile("quick", (0.5,), target_rse=0.5, replications=2, tolerance=1.0)


def test_validate_command_writes_json_markdown_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(PROFILES, "quick", SMOKE)
    monkeypatch.setattr(runner, "MIN_REQUESTS_PER_REPLICATION", 300)
    main(["validate", "--out", str(tmp_path), "--workers", "2"])
    assert "checks pass; report in" in capsys.readouterr().out
    entries = json.loads((tmp_path / "validation.json").read_text())
    assert all(REQUIRED_KEYS <= set(e) for e in entries)
    cases = {e["case"] for e in entries}
    assert {"M/M/1", "M/D/1", "M/G/1-PS (batch-proportional iterations)"} <= cases
    assert {e["rho"] for e in entries} == {0.5}
    text = (tmp_path / "validation.md").read_text()
    assert "| M/M/1 | 0.5 | mean_wait_s |" in text
    assert f"python -m sim validate --profile quick --out {tmp_path}" in text
    assert (tmp_path / "validation_mean_wait.png").stat().st_size > 10_000


def test_validate_help_states_what_each_profile_costs(capsys):
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "quick (the default" in text
    assert "full (rho up to 0.95 at 1%, about 95 minutes" in text


@pytest.fixture(scope="module")
def full_precision_entries():
    return run_validation(CI)


@pytest.mark.slow
def test_full_precision_validation_passes_every_check(full_precision_entries):
    """The ci profile: every case at rho = 0.5, 0.8 and 0.9 at full precision (the same
    replications as docs/validation.md, which adds rho = 0.95)."""
    assert len(full_precision_entries) == 3 * 25
    assert [e for e in full_precision_entries if not e["passed"]] == []


def test_published_validation_covers_every_case_and_load_and_passes():
    entries = json.loads((ROOT / "docs" / "validation.json").read_text())
    assert {e["rho"] for e in entries} == {0.5, 0.8, 0.9, 0.95}
    for name in ("M/M/1", "M/D/1", "M/M/2 central queue (Erlang C)", "M/M/16 join-shortest-queue"):
        assert {e["rho"] for e in entries if e["case"] == name} == {0.5, 0.8, 0.9, 0.95}
    erlang = {(e["case"], e["metric"]) for e in entries if "central queue" in e["case"]}
    assert len(erlang) == 6  # P(wait) and mean wait for c = 2, 4, 16
    assert [e for e in entries if not e["passed"]] == []


def _fcfs_waits(arrival: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Kiefer-Wolfowitz: FCFS with one queue and `servers` servers (Lindley's W for one).

    Each request, in arrival order, starts when it arrives or when the earliest server frees.
    """
    free_at = [0.0] * servers
    waits = np.empty(len(arrival))
    for i, a in enumerate(arrival):
        start = max(a, heapq.heappop(free_at))
        waits[i] = start - a
        heapq.heappush(free_at, start + service[i])
    return waits


@pytest.mark.parametrize(
    ("servers", "distribution"),
    [(1, "deterministic"), (1, "exponential"), (4, "exponential"), (16, "exponential")],
)
def test_fcfs_waits_equal_the_queueing_recursion_on_the_same_inputs(servers, distribution):
    """Request by request, the engine's FCFS queue is exact: one server (single replica) or a
    central queue before c replicas give the waits of the recursion on the same arrival and
    service times."""
    from analysis.rundata import RunData
    from sim.engine import run
    from sim.scenario import scenario_from_dict
    from sim.validation.cases import central_queue, single_server

    if servers == 1:
        case = single_server("M/M/1", 0.8, {"distribution": distribution}, 1.0)
    else:
        case = central_queue(servers, 0.8)
    scenario = scenario_from_dict({**case.scenario, "sim": {"seed": 4, "num_requests": 5_000}})
    req = RunData.from_result(run(scenario)).requests.sort_values("arrival_s", kind="stable")
    arrival = req["arrival_s"].to_numpy()
    service = (req["finish_s"] - req["first_scheduled_s"]).to_numpy()
    waits = (req["first_scheduled_s"] - req["arrival_s"]).to_numpy()
    assert np.max(np.abs(waits - _fcfs_waits(arrival, service, servers))) < 1e-6
    assert (waits > 1e-6).mean() > 0.2  # the queue was really used
    if distribution == "deterministic":
        assert np.allclose(service, 1.0)
