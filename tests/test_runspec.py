"""scenario.json stores the resolved run; it reads back equal and re-runs to identical traces."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from sim.cli import main
from sim.resolve import resolve
from sim.runspec import RunSpec, read_run_spec
from sim.scenario import load_scenario
from tests.conftest import ROOT, SCENARIOS, scenario
from tests.test_golden_traces import assert_tables_identical

CALIBRATION = ROOT / "sim" / "data" / "calibrations" / "h200_llama-3-8b.toml"
SERVICE_TIME = 'perf={kind="service_time", distribution="gamma", mean_s=0.01, cv=2.0}'


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_resolved_shipped_scenario_reads_back_equal_from_json(path):
    spec = resolve(load_scenario(path))
    assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_service_time_and_non_finite_parameters_read_back_equal():
    spec = resolve(scenario(SERVICE_TIME))
    text = json.dumps(spec.to_json(), allow_nan=False)  # valid JSON: no Infinity
    assert RunSpec.from_json(json.loads(text)) == spec
    roofline = resolve(scenario()).to_json()
    assert roofline["pools"][0]["perf"]["params"]["overlap"] == "inf"
    json.dumps(roofline, allow_nan=False)


@pytest.mark.parametrize(
    "overrides",
    [
        ["perf.noise=true"],
        ["perf={kind='replay', steps='../benchmarks/e2e/h200_eager_engine/steps_3.0rps.csv'}"],
    ],
    ids=["noise", "replay"],
)
def test_step_time_noise_and_replayed_step_logs_read_back_equal(overrides):
    spec = resolve(load_scenario(ROOT / "scenarios" / "h200_eager_engine.toml", overrides))
    assert RunSpec.from_json(json.loads(json.dumps(spec.to_json(), allow_nan=False))) == spec


def _tables(run_dir):
    return {t: pq.read_table(run_dir / f"{t}.parquet") for t in ("requests", "steps")}


def test_a_saved_run_reruns_to_identical_traces_after_its_calibration_file_changed(tmp_path):
    """The run uses a calibration file next to its scenario; after the run the file is changed
    and then deleted: re-running scenario.json still uses the parameters the run loaded."""
    (tmp_path / "cal.toml").write_text(CALIBRATION.read_text())
    source = (ROOT / "scenarios" / "chat_llama3-8b_h200_calibrated.toml").read_text()
    path = tmp_path / "s.toml"
    path.write_text(source.replace('"builtin:h200_llama-3-8b"', '"cal.toml"'))
    first, again = tmp_path / "first", tmp_path / "again"
    cap = ["--set", "sim.num_requests=400"]
    assert main(["run", str(path), "--seed", "2", "--out", str(first), *cap]) == 0
    saved = json.loads((first / "scenario.json").read_text())
    assert saved["scenario"]["sim"]["seed"] == 2  # the seed the run used, not the file's 1

    text = (tmp_path / "cal.toml").read_text()
    assert "step_overhead_s = 0.0" in text
    (tmp_path / "cal.toml").write_text(
        text.replace("step_overhead_s = 0.0", "step_overhead_s = 1.0")
    )
    changed = resolve(load_scenario(path, cap[1:])).pools[0].perf
    assert changed != read_run_spec(first / "scenario.json").pools[0].perf
    (tmp_path / "cal.toml").unlink()

    assert main(["run", str(first / "scenario.json"), "--out", str(again)]) == 0
    for name, table in _tables(again).items():
        assert_tables_identical(table, _tables(first)[name], name)
    assert (again / "scenario.json").read_text() == (first / "scenario.json").read_text()


def test_a_saved_trace_replay_reruns_to_identical_traces_from_another_folder(tmp_path):
    trace = ROOT / "sim" / "data" / "traces" / "azure2023_code.csv"
    shutil.copy(trace, tmp_path / "code.csv")
    path = tmp_path / "replay.toml"
    path.write_text(
        (ROOT / "scenarios" / "azure_conv_replay.toml")
        .read_text()
        .replace('"builtin:azure2023_conv"', '"code.csv"')
    )
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["run", str(path), "--set", "sim.num_requests=300", "--out", str(first)]) == 0
    moved = tmp_path / "elsewhere" / "scenario.json"
    moved.parent.mkdir()
    shutil.copy(first / "scenario.json", moved)
    assert main(["run", str(moved), "--out", str(again)]) == 0
    for name, table in _tables(again).items():
        assert_tables_identical(table, _tables(first)[name], name)


def test_set_does_not_apply_to_a_saved_run(tmp_path, capsys):
    first = tmp_path / "first"
    args = ["--set", "sim.num_requests=50", "--out", str(first)]
    assert main(["run", str(ROOT / "scenarios" / "policies" / "static.toml"), *args]) == 0
    capsys.readouterr()
    saved = str(first / "scenario.json")
    assert main(["run", saved, "--set", "workload.rate=5", "--out", str(tmp_path / "x")]) == 2
    assert "--set applies to scenario TOML files" in capsys.readouterr().err


def test_a_scenario_json_of_another_format_is_a_one_line_error(tmp_path, capsys):
    old = tmp_path / "scenario.json"
    old.write_text(json.dumps({"scenario": {}, "resolved": {}}))
    assert main(["run", str(old)]) == 2
    err = capsys.readouterr().err
    assert "not a scenario.json this version can read" in err and "Traceback" not in err
