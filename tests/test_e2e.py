"""End to end: plain traces, step logs, replay, live calibration, step-time noise, validate-e2e.

The measured run is the shared live H200 run copied into benchmarks/e2e/h200_eager_engine/.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from analysis.e2e import read_measured
from analysis.metrics import completed_latencies
from sim.calibration import Calibration, load_calibration, resolve_calibration, write_calibration
from sim.catalog import builtin_accelerators, builtin_models
from sim.cli import main
from sim.engine import run
from sim.errors import UserError
from sim.live_fit import fit_live
from sim.noise import MarkovLognormal, NoiseStream, StepNoise, fit_noise
from sim.resolve import resolve
from sim.scenario import load_scenario
from sim.step_log import read_step_log
from sim.traces import read_trace
from tests.conftest import ROOT, scenario

E2E = ROOT / "benchmarks" / "e2e" / "h200_eager_engine"
STEPS, REQUESTS = E2E / "steps_3.0rps.csv", E2E / "requests_3.0rps.csv"
ENGINE = ROOT / "scenarios" / "h200_eager_engine.toml"
SHIPPED = load_calibration(resolve_calibration("builtin:h200_llama-3-8b"))
HOST = {
    "host_prefill_step_s": 4e-3,
    "host_decode_step_s": 2e-3,
    "host_seq_s": 3e-5,
    "host_prompt_s": 1.5e-3,
}


def percentiles(requests: pd.DataFrame) -> dict[str, float]:
    lat = completed_latencies(requests)
    return {
        f"{m} p{q}": float(np.percentile(lat[m], q)) for m in ("ttft", "tpot") for q in (50, 90)
    }


# ----------------------------------------------------------------------------- plain traces


def test_a_plain_csv_trace_keeps_its_arrival_times_and_ignores_other_columns():
    trace = read_trace(REQUESTS)
    measured = pd.read_csv(REQUESTS).sort_values("arrival_s", kind="stable")
    assert np.array_equal(trace.arrival_s, measured["arrival_s"].to_numpy())  # not shifted to 0
    assert np.array_equal(trace.prompt_tokens, measured["prompt_tokens"].to_numpy())
    assert np.array_equal(trace.output_tokens, measured["output_tokens"].to_numpy())


def test_a_bad_plain_trace_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,3\n-1.0,10,3\n")
    with pytest.raises(UserError, match=r"t.csv:3: malformed line.*arrival_s"):
        read_trace(path)


# ----------------------------------------------------------------------------- replay


def test_replaying_the_shared_run_reproduces_its_iterations_and_latencies():
    measured_steps = pd.read_csv(STEPS)
    replay = ("perf={kind='replay', steps='../benchmarks/e2e/h200_eager_engine/steps_3.0rps.csv'}",)
    slow = run(load_scenario(ENGINE, [*replay, "sim.step_compression=false"]))
    steps = slow.steps.to_pandas()
    kind = np.where(steps["prefill_seqs"] > 0, "prefill", "decode")
    batch = np.where(steps["prefill_seqs"] > 0, steps["prefill_seqs"], steps["decode_seqs"])
    assert list(kind) == list(measured_steps["kind"])
    assert list(batch) == list(measured_steps["batch"])
    want = percentiles(read_measured(REQUESTS))
    for result in (slow, run(load_scenario(ENGINE, replay))):
        got = percentiles(result.requests.to_pandas())
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=0.01), name


def test_a_replay_that_runs_out_of_steps_says_the_scheduling_differed():
    replay = "perf={kind='replay', steps='../benchmarks/e2e/h200_eager_engine/steps_3.0rps.csv'}"
    with pytest.raises(UserError, match="scheduled differently"):
        run(load_scenario(ENGINE, [replay, "batcher.max_num_seqs=8"]))
    with pytest.raises(UserError, match="fleet.replicas must be 1"):
        resolve(load_scenario(ENGINE, [replay, "fleet.replicas=2"]))


# ----------------------------------------------------------------------------- live calibration


@pytest.fixture(scope="module")
def host_calibration(tmp_path_factory):
    """The shipped GPU calibration with known host terms, as a file."""
    path = tmp_path_factory.mktemp("cal") / "host.toml"
    write_calibration(path, replace(SHIPPED, params=replace(SHIPPED.params, **HOST)))
    return path


def simulated_log(calibration, *extra: str):
    """A vLLM-v0 run with fixed-length prompts (so a log's prefills are costed exactly)."""
    return run(
        scenario(
            "fleet.replicas=1",
            "fleet.gpu=h200",
            "workload.rate=6",
            "sim.duration_s=40",
            "batcher.mix_prefill_decode=false",
            "workload.classes.0.prompt_tokens={dist='fixed', value=700}",
            f"perf.calibration='{calibration}'",
            *extra,
        )
    )


def fit_host(path, attention: str = "summed") -> dict[str, float]:
    model, gpu = builtin_models()["llama-3-8b"], builtin_accelerators()["h200"]
    fitted = fit_live(read_step_log(path), SHIPPED, model, gpu, 1, attention)
    return {name: getattr(fitted.calibration.params, name) for name in HOST}


def test_fitting_a_simulated_steps_file_recovers_its_host_terms(host_calibration, tmp_path):
    result = simulated_log(host_calibration)
    result.save(tmp_path)
    steps = result.steps.to_pandas()
    assert steps["iterations"].max() > 1 and steps["prefill_seqs"].max() > 1
    for name, value in fit_host(tmp_path / "steps.parquet").items():
        assert value == pytest.approx(HOST[name], rel=0.05), name


def test_fitting_a_live_format_log_recovers_its_host_terms(host_calibration, tmp_path):
    padded = ("sim.step_compression=false", "perf.decode_attention='padded'")
    steps = simulated_log(host_calibration, *padded).steps.to_pandas()
    prefill = steps["prefill_seqs"] > 0
    live = pd.DataFrame(  # the columns a live engine logs
        {
            "start_s": steps["start_s"],
            "end_s": steps["end_s"],
            "kind": np.where(prefill, "prefill", "decode"),
            "batch": np.where(prefill, steps["prefill_seqs"], steps["decode_seqs"]),
            "tokens": np.where(prefill, steps["prefill_tokens"], steps["decode_seqs"]),
            "max_context": np.where(prefill, 700, steps["decode_max_context"] - 1),
            "sum_context": np.where(
                prefill, steps["prefill_tokens"], steps["decode_context"] - steps["decode_seqs"]
            ),
        }
    )
    live.to_csv(tmp_path / "live.csv", index=False)
    for name, value in fit_host(tmp_path / "live.csv", "padded").items():
        assert value == pytest.approx(HOST[name], rel=0.05), name


def test_a_live_step_lasts_until_the_next_starts_while_sequences_run(tmp_path):
    path = tmp_path / "live.csv"
    path.write_text(
        "start_s,end_s,kind,batch,tokens,max_context,sum_context\n"
        "1.0,1.1,prefill,1,100,100,100\n"  # then one sequence runs: its gap is host time
        "1.2,1.3,decode,1,1,100,100\n"  # the request finishes: the engine idles
        "5.0,5.2,prefill,2,300,200,300\n"
        "5.25,5.3,decode,2,2,200,300\n"
    )
    log = read_step_log(path)
    np.testing.assert_allclose(log.duration_s, [0.2, 0.1, 0.25, 0.05])
    assert log.prefill_attn_pairs[2] == 200 * 201 // 2 + 100 * 101 // 2
    assert list(log.decode_context) == [0, 101, 0, 302]


def test_a_malformed_step_log_names_its_row_and_column(tmp_path):
    path = tmp_path / "live.csv"
    path.write_text(
        "start_s,end_s,kind,batch,tokens,max_context,sum_context\n1.0,1.1,chunk,1,5,5,5\n"
    )
    with pytest.raises(UserError, match="row 2, column kind = 'chunk': allowed: prefill, decode"):
        read_step_log(path)


# ----------------------------------------------------------------------------- noise


def test_noise_fit_recovers_a_known_two_state_chain():
    truth = MarkovLognormal((-1.0, 0.1), (0.1, 0.05), ((0.9, 0.1), (0.02, 0.98)))
    x = np.log(NoiseStream(truth, np.random.default_rng(5)).take(2000))
    result = fit_noise(x)
    fitted = result.params
    assert len(fitted.log_means) == 2
    assert fitted.lag1_autocorrelation() == pytest.approx(result.measured_lag1, abs=0.03)
    shift = np.log(truth.mean())  # the fit scales the chain to a mean of 1
    np.testing.assert_allclose(fitted.log_means, np.array(truth.log_means) - shift, atol=0.03)
    np.testing.assert_allclose(fitted.dwell_iterations(), truth.dwell_iterations(), rtol=0.25)
    assert fitted.mean() == pytest.approx(1.0, rel=1e-9)


def test_noise_streams_hand_back_unused_values_in_order():
    noise = MarkovLognormal((-0.5, 0.2), (0.2, 0.1), ((0.8, 0.2), (0.1, 0.9)))
    one_by_one = NoiseStream(noise, np.random.default_rng(3))
    in_pieces = NoiseStream(noise, np.random.default_rng(3))
    expected = np.concatenate([one_by_one.take(1) for _ in range(700)])
    first = in_pieces.take(500)
    in_pieces.give_back(300)  # a stretch of 500 cut after 200 iterations
    got = np.concatenate([first[:200], in_pieces.take(500)])
    assert np.array_equal(got, expected)


def test_with_noise_on_compressed_and_step_by_step_runs_are_identical():
    noisy = ("perf.noise=true", "workload.load_scale=0.3")  # long decode stretches
    fast = run(load_scenario(ENGINE, noisy))
    slow = run(load_scenario(ENGINE, [*noisy, "sim.step_compression=false"]))
    assert fast.steps["iterations"].to_numpy().max() >= 64  # the numpy path too
    a, b = fast.requests.to_pandas(), slow.requests.to_pandas()
    for column in ("first_scheduled_s", "first_token_s", "finish_s"):
        assert np.array_equal(a[column], b[column]), column
    quiet = run(load_scenario(ENGINE, ["workload.load_scale=0.3"]))
    assert not np.array_equal(quiet.requests.to_pandas()["finish_s"], a["finish_s"])


def test_a_calibration_with_noise_round_trips_through_its_file(tmp_path):
    chain = MarkovLognormal((-0.3, 0.1), (0.2, 0.05), ((0.7, 0.3), (0.05, 0.95)))
    cal = Calibration(
        SHIPPED.params, "h200", "p.csv", 53, "s.csv", "padded", StepNoise(chain, chain)
    )
    write_calibration(tmp_path / "c.toml", cal)
    assert load_calibration(tmp_path / "c.toml") == cal


# ----------------------------------------------------------------------------- validate-e2e


def test_validate_e2e_on_a_run_of_the_simulator_itself_reports_no_error(tmp_path):
    measured = run(load_scenario(ENGINE)).requests.to_pandas()
    columns = ["request_id", "arrival_s", "prompt_tokens", "output_tokens"]
    columns += ["first_token_s", "finish_s"]
    measured[columns].to_csv(tmp_path / "measured.csv", index=False, float_format="%.17g")
    argv = ["validate-e2e", "--scenario", str(ENGINE), "--measured", str(tmp_path / "measured.csv")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "e2e.json").read_text())
    assert report["requests"]["completed_both"] == len(measured)
    for metric in report["metrics"].values():
        for entry in metric.values():
            assert entry["error"] == 0.0


@pytest.fixture(scope="module")
def in_sample(tmp_path_factory) -> dict:
    """validate-e2e of the shipped scenario (calibrated on the run's own steps), noise off."""
    out = tmp_path_factory.mktemp("e2e")
    argv = ["validate-e2e", "--scenario", str(ENGINE), "--measured", str(REQUESTS)]
    assert main([*argv, "--out", str(out)]) == 0
    return json.loads((out / "e2e.json").read_text())["metrics"]


@pytest.mark.parametrize(
    ("metric", "stat", "target"),
    [("ttft", "p50", 0.10), ("tpot", "p50", 0.10), ("tpot", "p90", 0.20)],
)
def test_calibrated_on_its_own_steps_the_shared_run_is_predicted_within_the_targets(
    in_sample, metric, stat, target
):
    assert abs(in_sample[metric][stat]["error"]) <= target


@pytest.mark.xfail(strict=True, reason="not met: +20.1% (docs/fidelity.md, end to end)")
def test_calibrated_on_its_own_steps_the_shared_run_has_ttft_p90_within_20_percent(in_sample):
    assert abs(in_sample["ttft"]["p90"]["error"]) <= 0.20


def test_validate_e2e_names_a_bad_measured_file(tmp_path, capsys):
    bad = tmp_path / "measured.csv"
    bad.write_text(
        "request_id,arrival_s,prompt_tokens,output_tokens,first_token_s\n0,0.1,5,5,0.2\n"
    )
    argv = ["validate-e2e", "--scenario", str(ENGINE), "--measured", str(bad)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "measured.csv: missing columns finish_s" in capsys.readouterr().err


def test_a_padded_fit_needs_the_longest_contexts(host_calibration, tmp_path):
    simulated_log(host_calibration).save(tmp_path)  # summed attention: no decode_max_context
    with pytest.raises(UserError, match="padded decode attention needs each decode's longest"):
        fit_host(tmp_path / "steps.parquet", "padded")
