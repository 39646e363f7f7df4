"""Bad input gets a clear message naming the file, the field and what is allowed; no traceback."""

from __future__ import annotations

import shutil

import pytest

from sim.cli import main
from tests.conftest import ROOT

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"


def _run_cli(capsys, *args: str) -> str:
    status = main(["run", *args])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    return err


def _scenario_with(tmp_path, old: str, new: str):
    text = CHAT.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new))
    return path


def test_misspelt_key_names_file_field_and_allowed_keys(tmp_path, capsys):
    path = _scenario_with(tmp_path, "warmup_s = 30", "warmup = 30")
    err = _run_cli(capsys, str(path), "--out", str(tmp_path / "o"))
    assert str(path) in err
    assert "sim.warmup: unknown field" in err
    assert "warmup_s" in err


def test_negative_rate_is_refused_with_its_value_and_bound(tmp_path, capsys):
    err = _run_cli(capsys, str(CHAT), "--set", "workload.rate=-5", "--out", str(tmp_path / "o"))
    assert "workload.rate = -5 (from --set): Input should be greater than 0" in err


def test_unknown_gpu_lists_the_catalogue(tmp_path, capsys):
    err = _run_cli(capsys, str(CHAT), "--set", "fleet.gpu=h900", "--out", str(tmp_path / "o"))
    assert "unknown accelerator 'h900'" in err
    assert "a100, b200, h100, h200, mi300x" in err


def test_unknown_policy_name_lists_the_allowed_ones(tmp_path, capsys):
    err = _run_cli(capsys, str(CHAT), "--set", "fleet.router=fastest", "--out", str(tmp_path / "o"))
    assert "fleet.router = 'fastest'" in err
    assert (
        "'round_robin', 'least_outstanding', 'central_queue', 'least_work', 'power_of_two'" in err
    )


def test_prompt_longer_than_the_kv_cache_is_explained(tmp_path, capsys):
    path = _scenario_with(
        tmp_path,
        'prompt_tokens = { dist = "lognormal", mean = 1155, median = 800, max = 8000 }',
        'prompt_tokens = { dist = "fixed", value = 900000 }',
    )
    err = _run_cli(capsys, str(path), "--out", str(tmp_path / "o"))
    assert "prompt_tokens of at least 900000 tokens never fit the KV cache" in err
    assert "fleet.tp = 1 x 'h100'" in err


def test_model_that_does_not_fit_the_gpus_is_explained(tmp_path, capsys):
    err = _run_cli(
        capsys, str(CHAT), "--set", "model.name=llama-3-70b", "--out", str(tmp_path / "o")
    )
    assert "does not fit on fleet.tp = 1 x fleet.gpu = 'h100'" in err


def test_malformed_trace_line_names_file_and_line(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    shutil.copy(ROOT / "sim" / "data" / "traces" / "azure2023_code.csv", trace)
    lines = trace.read_text().splitlines()
    lines[5] = "2023-11-16 18:15:50.99,oops,109"
    trace.write_text("\n".join(lines))
    scenario = tmp_path / "replay.toml"
    scenario.write_text(
        (ROOT / "scenarios" / "azure_conv_replay.toml")
        .read_text()
        .replace('"builtin:azure2023_conv"', '"trace.csv"')
    )
    err = _run_cli(capsys, str(scenario), "--out", str(tmp_path / "o"))
    assert f"{trace}:6: malformed line" in err
    assert "oops" in err


def test_missing_scenario_file_is_one_line(tmp_path, capsys):
    err = _run_cli(capsys, str(tmp_path / "nope.toml"))
    assert err.strip() == f"error: {tmp_path / 'nope.toml'}: no such scenario file"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("workload.arrival=gamma", "arrival = 'gamma' needs cv"),
        ("sim.duration_s=0", "sim.duration_s = 0"),
        ("workload.classes.0.share=0", "workload.classes.0.share = 0"),
        ("batcher.kind=magic", "batcher.kind = 'magic'"),
        ("sim", "expected section.field=value"),
    ],
)
def test_other_bad_values_are_named(tmp_path, capsys, override, message):
    err = _run_cli(capsys, str(CHAT), "--set", override, "--out", str(tmp_path / "o"))
    assert message in err


def test_gpu_without_a_default_price_fails_before_simulating(tmp_path, capsys):
    margin = ROOT / "scenarios" / "chat_llama3-8b_margin.toml"
    err = _run_cli(capsys, str(margin), "--set", "fleet.gpu=mi300x", "--out", str(tmp_path / "o"))
    assert "no default price for gpu 'mi300x'" in err
    assert not (tmp_path / "o").exists()


def test_a_schedule_without_arrivals_before_the_end_is_refused_at_load_time(tmp_path, capsys):
    path = _scenario_with(
        tmp_path, 'arrival = "poisson"\nrate = 30.0', 'arrival = "schedule"\nschedule = [[0, 0.0]]'
    )
    err = _run_cli(capsys, str(path), "--out", str(tmp_path / "o"))
    assert f"{path}: invalid scenario" in err
    assert "workload.schedule: no rate > 0 starts before the arrivals end" in err
    assert not (tmp_path / "o").exists()
