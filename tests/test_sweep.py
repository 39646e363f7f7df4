"""Sweeps: grid parsing, run layout, intervals, resuming, failures and executors."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

import sim.engine
from sim.cli import main
from sim.errors import UserError
from sim.study.grid import grid_points, parse_axis
from sim.study.stats import mean_ci
from sim.study.sweep import sweep
from tests.conftest import BASE, ROOT, scenario

SMALL = {**copy.deepcopy(BASE), "sim": {"seed": 3, "duration_s": 20.0, "warmup_s": 2.0}}
GRID = ["workload.rate=4,8"]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "points").glob("*/seed-*") if p.is_dir())


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A 2-point x 2-seed sweep, run once in process for the tests that only read it."""
    out = tmp_path_factory.mktemp("sweep")
    sweep(SMALL, GRID, seeds=2, out=out, workers=1)
    return out


# ----------------------------------------------------------------------------- grids


def test_range_includes_its_stop_and_keeps_decimal_steps_exact():
    assert parse_axis("workload.rate=10:40:10").values == ("10", "20", "30", "40")
    assert parse_axis("a=0.1:0.3:0.1").values == ("0.1", "0.2", "0.3")


def test_list_values_keep_toml_arrays_and_tables_whole():
    schedule = parse_axis("workload.schedule=[[0.0, 1.0]],[[0.0, 2.0], [5.0, 1.0]]")
    assert schedule.values == ("[[0.0, 1.0]]", "[[0.0, 2.0], [5.0, 1.0]]")
    lengths = parse_axis('c.output_tokens={dist = "fixed", value = 1},{dist = "fixed", value = 2}')
    assert lengths.values == ('{dist = "fixed", value = 1}', '{dist = "fixed", value = 2}')


def test_points_are_the_cartesian_product_first_axis_slowest():
    points = grid_points([parse_axis("workload.rate=1,2"), parse_axis("fleet.gpu=h100,h200")])
    assert [p.values for p in points] == [
        {"workload.rate": 1, "fleet.gpu": "h100"},
        {"workload.rate": 1, "fleet.gpu": "h200"},
        {"workload.rate": 2, "fleet.gpu": "h100"},
        {"workload.rate": 2, "fleet.gpu": "h200"},
    ]
    assert len({p.name for p in points}) == 4


@pytest.mark.parametrize(
    "spec, named",
    [
        ("workload.rate=-1,10", "workload.rate"),
        ("fleet.gpux=h100", "fleet.gpux"),
        ("fleet.gpu=h100,tpu9", "tpu9"),
        ("workload.rate=10:1:1", "workload.rate"),
        ("workload.rate", "workload.rate"),
    ],
)
def test_bad_grid_is_a_user_error_naming_the_key_before_anything_runs(tmp_path, spec, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        sweep(SMALL, [spec], out=tmp_path / "s", workers=1)
    assert not (tmp_path / "s" / "points").exists()


# ----------------------------------------------------------------------------- results


def test_two_points_by_two_seeds_make_four_complete_run_directories(swept):
    dirs = run_dirs(swept)
    assert [d.relative_to(swept / "points").as_posix() for d in dirs] == [
        "workload.rate=4/seed-0",
        "workload.rate=4/seed-1",
        "workload.rate=8/seed-0",
        "workload.rate=8/seed-1",
    ]
    for d in dirs:
        for name in ("requests.parquet", "steps.parquet", "scenario.json", "run.json"):
            assert (d / name).is_file()
        assert json.loads((d / "summary.json").read_text())["seed"] in (3, 4)


def test_seed_k_of_every_point_is_the_scenario_seed_plus_k(swept):
    runs = pd.read_parquet(swept / "runs.parquet")
    assert runs.groupby("point")["seed"].apply(list).to_dict() == {
        "workload.rate=4": [3, 4],
        "workload.rate=8": [3, 4],
    }


def test_results_hold_each_point_mean_and_student_t_interval_over_seeds(swept):
    results = pd.read_parquet(swept / "results.parquet")
    runs = pd.read_parquet(swept / "runs.parquet")
    assert list(results["workload.rate"]) == [4, 8]
    assert list(results["seeds_complete"]) == [2, 2]
    for row in results.itertuples():
        ttft = runs.loc[runs["point"] == row.point, "latency_s.ttft.p99"].to_numpy()
        half = stats.t.ppf(0.975, 1) * ttft.std(ddof=1) / math.sqrt(2)
        got = results.loc[row.Index]
        assert got["latency_s.ttft.p99"] == pytest.approx(ttft.mean())
        assert got["latency_s.ttft.p99.ci_low"] == pytest.approx(ttft.mean() - half)
        assert got["latency_s.ttft.p99.ci_high"] == pytest.approx(ttft.mean() + half)
        assert half > 0
    csv = pd.read_csv(swept / "results.csv")
    assert list(csv.columns) == list(results.columns)


def test_every_numeric_summary_metric_is_aggregated_but_not_seed_or_wall_time(swept):
    results = pd.read_parquet(swept / "results.parquet")
    for metric in ("requests.completed", "throughput.requests_per_s", "economics.margin"):
        assert {metric, f"{metric}.ci_low", f"{metric}.ci_high"} <= set(results.columns)
    assert "saturation.backlog_growth" in results.columns
    assert not {"seed", "wall_s"} & set(results.columns)


def test_mean_ci_of_one_value_has_no_interval_and_ignores_undefined_values():
    mean, low, high = mean_ci([2.0, None])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)


# ----------------------------------------------------------------------------- resuming


def copy_of(swept: Path, tmp_path: Path) -> Path:
    """A copy of the module's finished sweep, for a test that changes its folder."""
    out = tmp_path / "s"
    shutil.copytree(swept, out)
    return out


def test_rerun_does_no_new_run_and_deleting_one_run_redoes_exactly_it(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    mtimes = {d: d.stat().st_mtime_ns for d in run_dirs(out)}
    again = sweep(SMALL, GRID, seeds=2, out=out, workers=1)
    assert not again.runs["new"].any()
    assert {d: d.stat().st_mtime_ns for d in run_dirs(out)} == mtimes
    pd.testing.assert_frame_equal(again.results, pd.read_parquet(swept / "results.parquet"))
    shutil.rmtree(out / "points" / "workload.rate=8" / "seed-1")
    redone = sweep(SMALL, GRID, seeds=2, out=out, workers=1)
    assert list(redone.runs.loc[redone.runs["new"], "run_dir"]) == [
        str(out / "points" / "workload.rate=8" / "seed-1")
    ]
    pd.testing.assert_frame_equal(redone.results, again.results)


def test_half_written_run_from_an_interruption_is_removed_and_redone(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    shutil.rmtree(out / "points" / "workload.rate=4" / "seed-1")  # interrupted while writing
    leftover = out / "points" / "workload.rate=4" / ".seed-1.tmp-0123456789ab"
    leftover.mkdir()
    (leftover / "requests.parquet").write_bytes(b"partial")
    result = sweep(SMALL, GRID, seeds=2, out=out, workers=1)
    assert not leftover.exists()
    assert list(result.runs["new"]) == [False, True, False, False]


def test_runs_of_another_scenario_in_the_folder_are_an_error_not_reused(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    with pytest.raises(UserError, match="another scenario or seed"):
        sweep(SMALL, GRID, seeds=2, out=out, workers=1, overrides=["fleet.replicas=3"])


def test_a_point_that_cannot_be_deployed_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "s"
    result = sweep(SMALL, ["batcher.gpu_memory_utilization=0.9,0.1"], out=out, workers=1)
    failed = result.failed
    assert len(failed) == 1 and "does not fit" in failed.iloc[0]["error"]
    error_file = Path(failed.iloc[0]["run_dir"] + ".error.txt")
    assert "does not fit" in error_file.read_text()
    assert list(result.results["seeds_complete"]) == [1, 0]
    assert list(result.results["seeds_failed"]) == [0, 1]


def test_a_run_that_raises_is_recorded_with_its_traceback_and_the_sweep_goes_on(
    tmp_path, monkeypatch
):
    real_run = sim.engine.run

    def run_or_raise(spec, seed=None, progress=False):
        if spec.scenario.workload.rate > 5:
            raise RuntimeError("a bug in the engine")
        return real_run(spec, seed, progress)

    monkeypatch.setattr(sim.engine, "run", run_or_raise)  # workers=1 runs in this process
    result = sweep(SMALL, ["workload.rate=4,8"], out=tmp_path / "s", workers=1)
    failed = result.failed
    assert len(failed) == 1 and "a bug in the engine" in failed.iloc[0]["error"]
    error_file = Path(failed.iloc[0]["run_dir"] + ".error.txt")
    assert "Traceback" in error_file.read_text()
    assert list(result.results["seeds_complete"]) == [1, 0]


# ----------------------------------------------------------------------------- executors


@pytest.mark.dask
def test_dask_local_cluster_gives_results_identical_to_the_process_pool(tmp_path):
    pytest.importorskip("distributed", reason="needs the [dask] extra: pip install '.[dask]'")
    pool = sweep(SMALL, GRID, seeds=2, out=tmp_path / "pool", workers=2)
    dask = sweep(SMALL, GRID, seeds=2, out=tmp_path / "dask", workers=1, scheduler="local")
    pd.testing.assert_frame_equal(dask.results, pool.results)
    assert dask.runs["new"].all() and pool.runs["new"].all()


# ----------------------------------------------------------------------------- command line


def write_small_scenario(path: Path) -> Path:
    path.write_text(
        """
name = "small"
[sim]
seed = 3
duration_s = 20.0
warmup_s = 2.0
[workload]
rate = 4.0
[[workload.classes]]
name = "chat"
prompt_tokens = { dist = "fixed", value = 200 }
output_tokens = { dist = "fixed", value = 100 }
[model]
name = "llama-3-8b"
[fleet]
gpu = "h100"
""",
        encoding="utf-8",
    )
    return path


def test_sweep_command_prints_one_line_per_point_and_writes_results(tmp_path, capsys):
    scenario = write_small_scenario(tmp_path / "small.toml")
    argv = ["sweep", str(scenario), "--grid", "workload.rate=2:4:2", "--seeds", "2"]
    assert main([*argv, "--workers", "1", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "2 points x 2 seeds: 4 runs now, 0 reused, 0 failed" in out
    assert (tmp_path / "s" / "results.csv").is_file()


def test_sweep_command_names_a_bad_grid_key_without_traceback(tmp_path, capsys):
    scenario = write_small_scenario(tmp_path / "small.toml")
    argv = ["sweep", str(scenario), "--grid", "fleet.replicas=0", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid point fleet.replicas=0") and "fleet.replicas" in err


def test_import_sim_stays_light_until_an_api_function_is_used():
    code = "import sys, sim; print([m for m in ('pandas', 'simpy', 'pyarrow') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_python_api_takes_a_validated_scenario_as_well_as_a_dict(tmp_path):
    import sim

    def without_wall_time(run: sim.Run) -> dict:
        return {k: v for k, v in run.summary.items() if k != "wall_s"}

    validated = scenario("sim.duration_s=20.0", "sim.warmup_s=2.0")
    from_object, from_dict = sim.run(validated, seed=4), sim.run(SMALL, seed=4)
    assert without_wall_time(from_object) == without_wall_time(from_dict)
    pd.testing.assert_frame_equal(from_object.requests, from_dict.requests)
    swept = sim.sweep(validated, {"workload.rate": [4]}, out=tmp_path, workers=1)
    assert swept.results["seeds_complete"].tolist() == [1]
