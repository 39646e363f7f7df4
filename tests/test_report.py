"""Curves over run directories, figures, and the `report` command (no re-simulation)."""

from __future__ import annotations

import copy
import io
import shutil
from contextlib import redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from analysis import curves, plots
from analysis.summary import write_summary
from sim import engine
from sim.cli import main
from sim.scenario import scenario_from_dict
from tests.conftest import BASE, SCENARIOS, scenario

SHORT = ("sim.duration_s=20", "sim.warmup_s=2")


def save_run(path: Path, *overrides: str) -> Path:
    """Simulate the base test scenario and save it as a run directory with its summary."""
    engine.run(scenario(*SHORT, *overrides)).save(path)
    write_summary(path)
    return path


@pytest.fixture(scope="module")
def load_sweep(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("sweep")
    return [save_run(root / f"load-{r}", f"workload.rate={r}") for r in (4, 8, 16)]


@pytest.fixture(scope="module")
def sweep_report(load_sweep, tmp_path_factory) -> tuple[Path, str]:
    """`sim report` of the load sweep with a 30% target margin, with simulation forbidden:
    the report folder and what the command printed."""

    def no_simulation(*args, **kwargs):
        raise AssertionError("report must not simulate")

    out = tmp_path_factory.mktemp("report") / "report"
    argv = ["report", *map(str, load_sweep), "--out", str(out), "--target-margin", "0.3"]
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()) as printed:
        patch.setattr(engine, "run", no_simulation)
        assert main(argv) == 0
    return out, printed.getvalue()


class ImageCounter(HTMLParser):
    """Counts <img> tags whose source is an embedded PNG, and figure ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []
        self.figure_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and (a.get("src") or "").startswith("data:image/png;base64,"):
            self.embedded.append(a["src"] or "")
        if tag == "figure":
            self.figure_ids.append(a.get("id") or "")


def test_report_on_saved_runs_embeds_every_figure_without_simulating(sweep_report):
    out, printed = sweep_report
    expected = [
        "margin_vs_load",
        "margin_vs_utilization",
        "latency_vs_load",
        "latency_cdfs",
        *(
            name
            for r in (4, 8, 16)
            for name in (f"utilization_timeline_load-{r}", f"fleet_over_time_load-{r}")
        ),
    ]
    parser = ImageCounter()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    assert parser.figure_ids == expected
    assert len(parser.embedded) == len(expected)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in expected:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 0
        assert f"](figures/{name}.png)" in markdown
    assert "not drawn: cost_vs_batch_limit" in printed
    assert "cost_vs_batch_limit" in markdown


def test_one_run_gets_its_timeline_and_cdfs_and_names_the_curves_it_cannot_draw(
    load_sweep, tmp_path
):
    from analysis.report import build_report

    report = build_report([load_sweep[0]], tmp_path / "one")
    assert [f.name for f in report.figures] == [
        "latency_cdfs",
        "utilization_timeline_load-4",
        "fleet_over_time_load-4",
    ]
    assert [s.split(":")[0] for s in report.skipped] == [
        "margin_vs_load",
        "margin_vs_utilization",
        "latency_vs_load",
        "cost_vs_batch_limit",
    ]


def test_margin_curve_has_one_row_per_run_in_order_of_load_and_matches_the_summaries(load_sweep):
    runs = curves.load_runs(list(reversed(load_sweep)))
    curve = curves.margin_vs_load(curves.run_table(runs))
    assert curve["offered_rate_rps"].tolist() == [4.0, 8.0, 16.0]
    by_run = {r.label: r.summary["economics"]["margin"] for r in runs}
    assert curve["margin"].tolist() == [by_run[r] for r in curve["run"]]
    assert curve["series"].nunique() == 1


def test_series_are_told_apart_by_the_fields_that_differ(load_sweep, tmp_path):
    other = save_run(tmp_path / "h200-8", "workload.rate=8", "fleet.gpu=h200")
    table = curves.run_table(curves.load_runs([*load_sweep, other]))
    series = curves.margin_vs_load(table)["series"].unique().tolist()
    assert series == ["test (h100)", "test (h200)"]


def test_cost_against_batch_limit_is_a_curve_when_runs_differ_in_max_num_seqs(tmp_path):
    dirs = [save_run(tmp_path / f"seqs-{n}", f"batcher.max_num_seqs={n}") for n in (2, 64)]
    curve = curves.cost_vs_batch_limit(curves.run_table(curves.load_runs(dirs)))
    assert curves.swept_values(curve, "max_num_seqs") == 2
    assert curve["max_num_seqs"].tolist() == [2, 64]
    png, svg = plots.cost_vs_batch_limit(curve, "test", tmp_path / "fig" / "cost")
    assert png.stat().st_size > 0 and svg.stat().st_size > 0


def test_latency_cdfs_rise_from_zero_to_one_for_every_metric(load_sweep):
    cdfs = curves.latency_cdfs(curves.load_runs(load_sweep[:1]))
    for _, group in cdfs.groupby("metric"):
        assert group["cdf"].iloc[0] == 0.0 and group["cdf"].iloc[-1] == 1.0
        assert group["latency_s"].is_monotonic_increasing


def test_report_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a complete run directory" in capsys.readouterr().err


def test_runs_without_prices_get_no_margin_curves_and_the_report_says_why(tmp_path):
    from analysis.report import build_report

    base = copy.deepcopy(BASE)
    del base["economics"]
    dirs = []
    for rate in (4, 8):
        s = scenario_from_dict(base, "test", [*SHORT, f"workload.rate={rate}"])
        engine.run(s).save(tmp_path / f"free-{rate}")
        dirs.append(tmp_path / f"free-{rate}")
    report = build_report(dirs, tmp_path / "report")
    assert "margin_vs_load" not in [f.name for f in report.figures]
    assert "margin_vs_load: no run has a margin (an [economics] section?)" in report.skipped
    assert "latency_vs_load" in [f.name for f in report.figures]


def test_bf16_and_fp8_runs_form_two_series_even_when_only_the_batch_limit_was_swept(tmp_path):
    dirs = [
        save_run(
            tmp_path / f"{dtype}-{n}", f"batcher.max_num_seqs={n}", f"model.weight_dtype={dtype}"
        )
        for dtype in ("bf16", "fp8")
        for n in (2, 64)
    ]
    curve = curves.cost_vs_batch_limit(curves.run_table(curves.load_runs(dirs)))
    assert sorted(curve["series"].unique()) == ["test (bf16)", "test (fp8)"]
    assert curve.groupby("series")["max_num_seqs"].apply(list).to_dict() == {
        "test (bf16)": [2, 64],
        "test (fp8)": [2, 64],
    }


def test_two_runs_whose_paths_differ_only_after_a_dot_get_two_timelines(load_sweep, tmp_path):
    from analysis.report import build_report

    dirs = [tmp_path / f"workload.rate={r}" / "seed-0" for r in (4, 8)]
    for run_dir in dirs:  # copies of one run: only their paths matter here
        shutil.copytree(load_sweep[0], run_dir)
    report = build_report(dirs, tmp_path / "report")
    timelines = [f for f in report.figures if f.name.startswith("utilization_timeline")]
    assert [f.name for f in timelines] == [
        "utilization_timeline_workload.rate=4_seed-0",
        "utilization_timeline_workload.rate=8_seed-0",
    ]
    assert len({f.csv for f in timelines}) == len({f.png for f in timelines}) == 2
    for f in timelines:
        assert f.csv.name == f"{f.name}.csv" and f.csv.stat().st_size > 0


def test_margin_and_cost_per_million_tokens_against_capacity_utilization_mark_the_slo_misses(
    tmp_path,
):
    slo = "workload.classes.0.slo_ttft_s=1.0"
    dirs = [save_run(tmp_path / f"load-{r}", f"workload.rate={r}", slo) for r in (4, 16, 400)]
    curve = curves.margin_vs_utilization(curves.run_table(curves.load_runs(dirs)))
    assert curve["series"].nunique() == 1
    assert curve["offered_rate_rps"].tolist() == [4.0, 16.0, 400.0]
    assert curve["capacity_utilization"].is_monotonic_increasing
    assert curve["slo_missed"].tolist() == [False, False, True]  # 400 req/s: TTFT p99 >> 1 s
    assert curve["saturated"].tolist() == [False, False, True]
    for column in ("margin", "cost_per_million_input_tokens_usd", "cost_per_million_tokens_usd"):
        assert curve[column].notna().all()
    png, _ = plots.margin_vs_utilization(curve, "test", tmp_path / "fig" / "margin")
    assert png.stat().st_size > 0


def test_report_keeps_the_target_margin_in_each_runs_price_cut_headroom(sweep_report):
    out, _ = sweep_report
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3
    for _, row in runs.iterrows():
        assert row["price_cut_headroom"] == pytest.approx(
            1.0 - row["break_even_price_multiplier"] / 0.7
        )


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_target_margin_of_one_or_more_is_a_clear_error(command, tmp_path, capsys):
    target = str(SCENARIOS[0]) if command == "run" else str(tmp_path)
    argv = [command, target, "--out", str(tmp_path / "out"), "--target-margin", "1.5"]
    assert main(argv) == 2
    assert "--target-margin 1.5: must be a fraction below 1" in capsys.readouterr().err


def test_a_saved_run_of_a_calibrated_scenario_is_analysed_again(tmp_path):
    calibrated = ("fleet.gpu=h200", "perf.calibration=builtin:h200_llama-3-8b")
    run_dir = save_run(tmp_path / "calibrated", *calibrated)
    summary = curves.load_runs([run_dir])[0].summary
    assert summary["utilization"]["capacity_per_s"] > 0
    assert summary["economics"]["input_cost_usd"] > 0
