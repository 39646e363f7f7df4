"""End-to-end behaviour of the engine: determinism, conservation, Little's law, directions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.metrics import latencies, number_in_system, request_counts
from analysis.rundata import RunData, load_run
from analysis.summary import summarize
from sim.cli import main
from sim.engine import run
from sim.scenario import load_scenario, scenario_from_dict
from sim.traces import read_trace, resolve_trace
from tests.conftest import SCENARIOS, scenario, simulate


def test_same_seed_gives_identical_trace_files(tmp_path):
    for name in ("a", "b"):
        run(scenario(), seed=11).save(tmp_path / name)
    for table in ("requests.parquet", "steps.parquet"):
        a = pq.read_table(tmp_path / "a" / table)
        b = pq.read_table(tmp_path / "b" / table)
        assert a.equals(b)


def test_different_seeds_give_different_traces():
    a = run(scenario(), seed=1).requests.to_pandas()
    b = run(scenario(), seed=2).requests.to_pandas()
    assert len(a) != len(b) or not np.allclose(a["arrival_s"], b["arrival_s"])


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_conserves_requests(path):
    s = load_scenario(path, ["sim.num_requests=800", "sim.warmup_s=0"])
    data = RunData.from_result(run(s))
    counts = request_counts(data.requests)
    wl = s.workload
    if wl.arrival == "trace":  # a trace may hold fewer requests than the cap
        trace = read_trace(resolve_trace(wl.trace or "", Path(s.base_dir)), wl.trace_format)
        assert counts["arrived"] == min(800, len(trace.arrival_s))
    else:
        assert counts["arrived"] == 800
    assert counts["arrived"] == counts["completed"] + counts["rejected"] + counts["in_flight"]
    assert counts["completed"] > 0


def test_undrained_run_leaves_requests_in_flight_and_still_conserves():
    data = simulate("sim.drain=false", "workload.rate=40")
    counts = request_counts(data.requests)
    assert counts["in_flight"] > 0
    assert counts["arrived"] == counts["completed"] + counts["rejected"] + counts["in_flight"]
    unfinished = data.requests[data.requests["status"] == "in_flight"]
    assert unfinished["finish_s"].isna().all()


def test_littles_law_holds_on_the_traces():
    data = simulate("sim.duration_s=400", "workload.rate=12")
    t0, t1 = 50.0, 350.0
    req = data.requests
    inside = req[(req["arrival_s"] >= t0) & (req["arrival_s"] < t1)]
    arrival_rate = len(inside) / (t1 - t0)
    mean_sojourn = (inside["finish_s"] - inside["arrival_s"]).mean()
    mean_in_system = number_in_system(req, t0, t1)
    assert mean_in_system == pytest.approx(arrival_rate * mean_sojourn, rel=0.05)


def _mean_e2e(data: RunData) -> float:
    return float(latencies(data.measured)["e2e"].mean())


def test_more_load_raises_latency():
    low = simulate("workload.rate=4", "fleet.replicas=1")
    high = simulate("workload.rate=16", "fleet.replicas=1")
    assert _mean_e2e(high) > _mean_e2e(low)


def test_more_replicas_lower_latency():
    few = simulate("workload.rate=16", "fleet.replicas=1")
    many = simulate("workload.rate=16", "fleet.replicas=3")
    assert _mean_e2e(many) < _mean_e2e(few)


def test_bigger_kv_cache_means_fewer_preemptions():
    # 0.22 x 80 GB leaves about 1.6 GB beside the 16 GB of weights: 734 blocks of 16 tokens
    squeeze = ("fleet.replicas=1", "workload.rate=12", "batcher.gpu_memory_utilization=0.22")
    roomy = ("fleet.replicas=1", "workload.rate=12", "batcher.gpu_memory_utilization=0.24")
    tight = simulate(*squeeze)
    loose = simulate(*roomy)
    assert tight.requests["preemptions"].sum() > loose.requests["preemptions"].sum()


def test_preempted_requests_still_complete_with_all_their_tokens():
    data = simulate("fleet.replicas=1", "workload.rate=12", "batcher.gpu_memory_utilization=0.21")
    req = data.requests
    assert req["preemptions"].sum() > 0
    assert (req["status"] == "completed").all()
    done = req[req["status"] == "completed"]
    assert (done["first_token_s"] <= done["finish_s"]).all()


def test_timestamps_are_ordered_for_every_request(tiny_run):
    done = tiny_run.requests[tiny_run.requests["status"] == "completed"]
    assert (done["arrival_s"] <= done["first_scheduled_s"]).all()
    assert (done["first_scheduled_s"] < done["first_token_s"]).all()
    assert (done["first_token_s"] <= done["finish_s"]).all()


def test_steps_never_overlap_on_a_replica(tiny_run):
    for _, steps in tiny_run.steps.groupby("replica"):
        steps = steps.sort_values("start_s")
        assert (steps["start_s"].to_numpy()[1:] >= steps["end_s"].to_numpy()[:-1] - 1e-12).all()


def test_summary_numbers_are_consistent(tiny_run):
    s = summarize(tiny_run)
    assert set(s) >= {
        "scenario",
        "seed",
        "simulated_s",
        "wall_s",
        "events",
        "requests",
        "latency_s",
        "throughput",
        "utilization",
        "saturation",
        "economics",
        "window",
    }
    for name in ("ttft", "tpot", "e2e", "queue"):
        block = s["latency_s"][name]
        assert block["p50"] <= block["p90"] <= block["p99"]
    eco, window = s["economics"], s["window"]
    assert window["duration_s"] == 60.0 - 5.0  # arrivals for 60 s after a 5 s warm-up
    assert eco["gpu_hours"] == pytest.approx(2 * window["duration_s"] / 3600)
    assert eco["cost_usd"] == pytest.approx(eco["gpu_hours"] * 4.0)
    assert eco["totals"]["gpu_hours"] == pytest.approx(2 * tiny_run.simulated_s / 3600)
    assert eco["margin"] == pytest.approx(
        (eco["revenue_usd"] - eco["cost_usd"]) / eco["revenue_usd"]
    )
    assert 0 < s["utilization"]["capacity_utilization"] <= 1
    assert 0 < s["utilization"]["nonidle_fraction"] <= 1
    assert 0 < s["utilization"]["kv_occupancy_mean"] <= 1


def test_cli_run_writes_traces_and_a_summary_that_reanalyses_identically(tmp_path, capsys):
    out = tmp_path / "run"
    path = str(SCENARIOS[0])
    assert main(["run", path, "--out", str(out), "--set", "sim.num_requests=300"]) == 0
    assert "traces and summary in" in capsys.readouterr().out
    for f in ("requests.parquet", "steps.parquet", "scenario.json", "summary.json"):
        assert (out / f).exists()
    saved = json.loads((out / "summary.json").read_text())
    again = summarize(load_run(out))
    assert saved["latency_s"] == again["latency_s"]
    assert saved["economics"] == again["economics"]


def test_replay_load_scale_doubles_the_arrival_rate():
    base = {"sim.num_requests=2000"}
    one = RunData.from_result(
        run(load_scenario(SCENARIOS[0].parent / "azure_conv_replay.toml", sorted(base)))
    )
    two = RunData.from_result(
        run(
            load_scenario(
                SCENARIOS[0].parent / "azure_conv_replay.toml",
                [*sorted(base), "workload.load_scale=2.0"],
            )
        )
    )
    span_one = one.requests["arrival_s"].max()
    span_two = two.requests["arrival_s"].max()
    assert span_two == pytest.approx(span_one / 2)


@pytest.mark.parametrize(
    ("num_requests", "arrivals_end_s"), [(100, "last arrival"), (100_000, "duration_s")]
)
def test_arrivals_stop_at_num_requests_or_duration_whichever_comes_first(
    num_requests, arrivals_end_s
):
    data = simulate(f"sim.num_requests={num_requests}")  # 8 req/s for duration_s = 60
    window = summarize(data)["window"]
    last = float(data.requests["arrival_s"].max())
    if arrivals_end_s == "last arrival":
        assert len(data.requests) == num_requests
        assert window["end_s"] == last < 20.0
        # the run ends when the last request is served, not at duration_s
        assert data.simulated_s == pytest.approx(last + window["drain_s"])
        assert data.simulated_s < 30.0
    else:
        assert len(data.requests) < num_requests
        assert window["end_s"] == 60.0


def _replay(tmp_path, arrivals_ms: list[int], output_tokens: int, compression: bool):
    """Requests arriving at `arrivals_ms` on one replica whose every iteration takes 1 s."""
    trace = tmp_path / "trace.jsonl"
    rows = [
        {"timestamp": t, "input_length": 10, "output_length": output_tokens} for t in arrivals_ms
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {
        "sim": {"seed": 1, "step_compression": compression},
        "workload": {"arrival": "trace", "trace": str(trace)},
        "model": {"name": "llama-3.1-8b"},
        "fleet": {"gpu": "h100", "replicas": 1},
        "perf": {"kind": "service_time", "distribution": "deterministic", "mean_s": 1.0},
    }
    return run(scenario_from_dict(data)).requests.to_pandas()


@pytest.mark.parametrize("compression", [True, False], ids=["compressed", "step_by_step"])
def test_an_arrival_at_an_iteration_boundary_joins_the_iteration_that_starts_then(
    tmp_path, compression
):
    """The documented tie order: at equal times, arrivals come before iteration boundaries.

    The first request's prefill runs over [0, 1] s. The one arriving at exactly 1 s is in the
    queue when the replica forms its iteration at 1 s (processed after the boundary, it would
    wait for the next one, at 2 s). Both the boundary at 1 s and that arrival are scheduled
    earlier (at 0 s and at the arrival of 0.5 s), the boundary first.
    """
    req = _replay(tmp_path, [0, 500, 1000], output_tokens=5, compression=compression)
    assert req["first_scheduled_s"].tolist() == [0.0, 1.0, 1.0]
