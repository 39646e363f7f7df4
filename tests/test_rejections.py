"""Rejected requests: refused for a recorded reason, counted by reason, and said out loud."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from analysis.invariants import check_run, failures
from analysis.summary import summarize
from sim.cli import main
from sim.request import REJECTION_REASONS
from tests.conftest import ROOT, simulate

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"
FIXED = 'workload.classes.0.{}_tokens={{dist="fixed", value={}}}'


def lengths(prompt: int, output: int) -> tuple[str, str]:
    return FIXED.format("prompt", prompt), FIXED.format("output", output)


def test_prompt_longer_than_the_context_is_rejected_on_arrival_for_that_reason():
    """The issue's case: an 81,920-token prompt on Llama-3-8B (8k context) used to complete."""
    data = simulate("model.name=llama-3-8b", *lengths(81_920, 100))
    req = data.requests
    assert (req["status"] == "rejected").all()
    assert (req["replica"] == -1).all()  # refused before any router or replica saw it
    assert set(data.rejections["reason"]) == {"max_context"}
    assert failures(check_run(data)) == []


def test_context_limit_is_prompt_plus_output_as_vllm_checks_it():
    """vLLM's OpenAI server refuses prompt + max_tokens > max_model_len; equal is served."""
    at_limit = simulate("model.name=llama-3-8b", *lengths(8092, 100))
    over = simulate("model.name=llama-3-8b", *lengths(8092, 101))
    assert (at_limit.requests["status"] == "completed").all()
    assert (over.requests["status"] == "rejected").all()


def test_the_same_prompt_is_served_by_the_128k_context_of_llama_3_1():
    data = simulate(
        "model.name=llama-3.1-8b",
        *lengths(81_920, 100),
        "workload.rate=0.2",
        "batcher.chunked_prefill=true",  # else longer than max_num_batched_tokens (8192)
    )
    assert (data.requests["status"] == "completed").all()
    assert data.rejections.empty


def test_summary_counts_rejections_by_reason_and_they_add_up():
    data = simulate("batcher.gpu_memory_utilization=0.215", *lengths(6000, 3000))
    summary = summarize(data)["requests"]
    by_reason = summary["rejected_by_reason"]
    assert set(by_reason) == set(REJECTION_REASONS)
    assert by_reason["kv_cache"] == summary["rejected"] > 0
    assert sum(by_reason.values()) == summary["rejected"]


def test_reasons_of_a_run_directory_are_read_back_and_count_only_measured_requests(tmp_path):
    out = tmp_path / "r"
    argv = ["run", str(CHAT), "--set", "model.name=llama-3-8b", "--out", str(out)]
    argv += ["--set", "sim.duration_s=60", "--set", "sim.warmup_s=20"]
    argv += ["--set", "workload.classes.0.prompt_tokens.max=12000"]  # some exceed 8192
    assert main(argv) == 0
    requests = pq.read_table(out / "requests.parquet").to_pandas()
    reasons = pq.read_table(out / "rejections.parquet").to_pandas()
    rejected = requests[requests["status"] == "rejected"]
    assert list(reasons["request_id"]) == list(rejected["request_id"])
    measured = rejected[rejected["arrival_s"] >= 20]
    summary = pd.read_json(out / "summary.json", typ="series")
    assert summary["requests"]["rejected_by_reason"]["max_context"] == len(measured) > 0


def test_run_where_most_requests_are_rejected_warns_with_the_reason(tmp_path, capsys):
    argv = ["run", str(CHAT), "--set", "model.name=llama-3-8b", "--out", str(tmp_path / "r")]
    argv += ["--set", FIXED.format("prompt", 9000), "--set", "sim.duration_s=40"]
    argv += ["--set", "sim.warmup_s=5"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    line = [x for x in captured.err.splitlines() if x.startswith("warning:")]
    assert len(line) == 1
    assert " requests were rejected: " in line[0]
    assert "longer than the model's context (prompt + output tokens > max_context)" in line[0]
    assert "rejected   " in captured.out  # the summary's reasons line


def test_run_without_rejections_writes_no_rejections_file_and_no_warning(tmp_path, capsys):
    argv = ["run", str(CHAT), "--set", "sim.duration_s=40", "--set", "sim.warmup_s=5"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "rejections.parquet").exists()
    assert "warning" not in capsys.readouterr().err


def test_rejections_of_a_run_saved_before_reasons_were_recorded_count_as_unrecorded():
    from analysis.metrics import rejected_by_reason
    from analysis.rundata import no_rejections

    requests = pd.DataFrame(
        {"request_id": [0, 1, 2], "status": ["rejected", "completed", "rejected"]}
    )
    counts = rejected_by_reason(requests, no_rejections())
    assert counts == {**dict.fromkeys(REJECTION_REASONS, 0), "unrecorded": 2}
