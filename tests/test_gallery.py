"""The gallery's studies: study files checked at load time, `sim study run` writing the table,
the figure in three formats and provenance, resuming, and the tables' arithmetic."""

from __future__ import annotations

import hashlib
import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from analysis.study_tables import (
    COST_PER_M,
    COST_PER_M_INPUT,
    COST_PER_M_OUTPUT,
    MARGIN,
    MULTIPLIER,
    FleetDayParams,
    FleetSloParams,
    NoParams,
    PricePressureParams,
    ProjectionParams,
    UtilizationParams,
    cheapest_fleets,
    fleet_day,
    hardware,
    levers,
    margin_after_cut,
    margin_arc,
    price_pressure,
    projection,
    utilization,
)
from sim.cli import main
from sim.errors import UserError
from sim.study.gallery import run_study
from sim.study.studyfile import load_study
from tests.conftest import ROOT

SCENARIO = """\
name = "tiny"
[sim]
seed = 5
duration_s = 15.0
warmup_s = 2.0
[workload]
arrival = "poisson"
rate = 4.0
[[workload.classes]]
name = "chat"
prompt_tokens = { dist = "lognormal", mean = 400, median = 300, max = 2000 }
output_tokens = { dist = "lognormal", mean = 80, cv = 1.0, max = 500 }
[model]
name = "llama-3.1-8b"
[fleet]
gpu = "h100"
replicas = 1
[economics]
gpu_usd_per_hour = 4.0
input_usd_per_million = 0.2
output_usd_per_million = 0.6
"""

STUDY = """\
title = "Two fixed fleets"
question = "Which of two fleets costs less per token?"
figure = "cheapest_fleets"
scenario = "scenario.toml"
seeds = 2

[[cases]]
name = "one"
kind = "sweep"

[[cases]]
name = "two"
kind = "sweep"
set = ["fleet.replicas=2"]

[params]
ttft_p99_s = 5.0
tpot_p99_s = 1.0
"""
PARAMS = "[params]\nttft_p99_s = 5.0\ntpot_p99_s = 1.0\n"


def make_study(folder: Path, study: str = STUDY, scenario: str = SCENARIO) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(textwrap.dedent(study), encoding="utf-8")
    (folder / "scenario.toml").write_text(scenario, encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- study files


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('figure = "cheapest_fleets"', 'figure = "pie"'), "figure = 'pie': allowed: "),
        (("seeds = 2", "seeds = 0"), "seeds = 0: Input should be greater than or equal to 1"),
        (
            ('kind = "sweep"\n\n[[', 'kind = "grid"\n\n[['),
            "cases.0.kind = 'grid': allowed: 'plan', 'sweep'",
        ),
        (('name = "two"', 'name = "one"'), "case names must differ"),
        (('name = "two"', 'name = "Two/x"'), "cases.1.name = 'Two/x': use lower-case letters"),
        (("seeds = 2", "seeds = 2\ncolour = 1"), "colour: unknown field; allowed here: title,"),
        (
            ('kind = "sweep"\nset', 'kind = "sweep"\nrate = 3\nset'),
            "cases.1.rate: unknown field; allowed here: name, scenario, set, kind, grid",
        ),
        (('"scenario.toml"', '"missing.toml"'), "case one: no scenario file"),
    ],
)
def test_bad_study_file_is_refused_naming_the_file_and_field(tmp_path, change, message):
    folder = make_study(tmp_path / "s", STUDY.replace(*change))
    with pytest.raises(UserError) as err:
        load_study(folder)
    assert str(folder / "study.toml") in str(err.value)
    assert message in str(err.value)


def test_study_params_are_checked_by_the_figure_they_feed(tmp_path):
    study = STUDY.replace('figure = "cheapest_fleets"', 'figure = "price_pressure"')
    folder = make_study(tmp_path / "s", study.replace(PARAMS, "[params]\ncut = 1.5\nkut = 1\n"))
    with pytest.raises(
        UserError, match=r"invalid params of figure 'price_pressure'\n  cut = 1.5: "
    ) as err:
        load_study(folder)
    assert "kut: unknown field; allowed here: cut, margin_floor, cuts" in str(err.value)


def test_figure_that_reads_named_cases_refuses_others(tmp_path):
    study = STUDY.replace('figure = "cheapest_fleets"', 'figure = "utilization"').replace(
        PARAMS, ""
    )
    with pytest.raises(UserError, match=r"figure 'utilization' reads exactly load \(sweep\)"):
        load_study(make_study(tmp_path / "s", study))


def test_plan_cases_need_an_slo(tmp_path):
    study = STUDY.replace('figure = "cheapest_fleets"', 'figure = "levers"').replace(PARAMS, "")
    study = study.replace('kind = "sweep"', 'kind = "plan"\nrate = 4')
    with pytest.raises(UserError, match="slos: plan cases need at least one SLO"):
        load_study(make_study(tmp_path / "s", study))


# ----------------------------------------------------------------------------- sim study run


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, Path, int, str]:
    """A tiny two-case study run once through the command line, in process."""
    folder = make_study(tmp_path_factory.mktemp("study") / "tiny")
    out = folder / "results"
    status = main(["study", "run", str(folder), "--workers", "1"])
    return folder, out, status, (out / "tiny.csv").read_text(encoding="utf-8")


def test_study_run_writes_table_figure_in_three_formats_and_provenance(ran):
    folder, out, status, table = ran
    assert status == 0
    rows = pd.read_csv(out / "tiny.csv")
    assert list(rows["fleet"]) == ["one", "two"] and rows["cheapest"].all()
    assert rows["usd_per_hour"].tolist() == pytest.approx([4.0, 8.0])
    for fmt in ("png", "svg", "pdf"):
        assert (out / f"tiny.{fmt}").stat().st_size > 1000
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    digests = {Path(k).name: v for k, v in provenance["files"].items()}
    for name in ("study.toml", "scenario.toml"):
        assert digests[name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert provenance["seeds"] == {"one": [5, 6], "two": [5, 6]}
    assert provenance["command"].endswith(f"study run {folder} --workers 1")
    assert provenance["project"]["version"] and provenance["packages"]["simpy"]


def test_rerun_reuses_every_finished_run_and_writes_the_same_table(ran):
    folder, out, _, table = ran
    main(["study", "run", str(folder), "--workers", "1"])
    runs = pd.read_parquet(out / "cases" / "two" / "runs.parquet")
    assert len(runs) == 2 and not runs["new"].any()
    assert (out / "tiny.csv").read_text(encoding="utf-8") == table


# ----------------------------------------------------------------------------- tables


def plan_options(margins: dict[str, float]) -> pd.DataFrame:
    """Plan options of one replica each, with the metrics of their chosen points."""
    return pd.DataFrame(
        [
            {
                "gpu": gpu,
                "tp": 1,
                "replicas": 1,
                "gpus": 1,
                "usd_per_hour": 10.0 + i,
                "margin": m,
                MULTIPLIER: 1.0 - m,
                COST_PER_M: 1.0,
                "status": "ok",
            }
            for i, (gpu, m) in enumerate(margins.items())
        ]
    )


def test_levers_keep_a_case_whose_plan_met_nothing_with_its_status():
    unmet = pd.DataFrame({"gpu": ["h100"], "tp": [1], "status": ["not met with 24 replicas: x"]})
    table = levers({"static": unmet, "continuous": plan_options({"h100": 0.5})}, NoParams())
    assert table["fleet"].tolist() == ["static", "continuous"]
    assert table["status"].tolist() == ["not met with 24 replicas: x", "ok"]
    assert math.isnan(table["usd_per_hour"].iloc[0]) and table["usd_per_hour"].iloc[1] == 10.0


def test_hardware_lists_mixes_and_keeps_a_type_that_met_nothing_last():
    unmet = pd.DataFrame({"gpu": ["a100"], "tp": [1], "status": ["not met with 64 replicas: x"]})
    types = pd.concat([unmet, plan_options({"h200": 0.6})], ignore_index=True)
    mix = plan_options({"h100+h200": 0.5}).assign(mix="1 h100 + 1 h200", replicas=2, gpus=2)
    table = hardware({"types": types, "mix": mix}, NoParams())
    assert table["fleet"].tolist() == ["1 h200", "1 h100 + 1 h200", "a100"]
    assert table["status"].tolist() == ["ok", "ok", "not met with 64 replicas: x"]
    assert table["gpus"].tolist()[:2] == [1, 2] and pd.isna(table["usd_per_hour"].iloc[2])


def test_margin_after_a_uniform_price_cut_keeps_the_cost_and_scales_the_revenue():
    # revenue 100, cost 40 (margin 0.6): after a 30% cut revenue 70, margin 30/70
    assert margin_after_cut(0.4, 0.3) == pytest.approx(30 / 70)
    assert margin_after_cut(0.4, 0.6) == pytest.approx(0.0)


def test_price_pressure_gives_break_even_cut_and_who_keeps_half_after_30_percent():
    table = price_pressure({"types": plan_options({"a": 0.7, "b": 0.6})}, PricePressureParams())
    assert table["break_even_cut"].tolist() == pytest.approx([0.7, 0.6])
    # a: cost 30 of revenue 100 -> 30 of 70 after the cut: margin 4/7; b: 40 of 70 -> 3/7
    assert table["margin_after_30pct_cut"].tolist() == pytest.approx([4 / 7, 3 / 7])
    assert table["above_50pct_after_cut"].tolist() == [True, False]


def test_projection_band_compounds_yearly_declines_and_gains():
    params = ProjectionParams(
        months=18,
        step_months=6,
        gpu_price_decline=[
            {"name": "rent", "low": 0.1, "high": 0.2, "source": "assumption: test"},
            {"name": "more", "low": 0.0, "high": 0.5, "source": "assumption: test"},
        ],
        software_gain=[{"name": "sw", "low": 0.0, "high": 1.0, "source": "assumption: test"}],
    )
    today = pd.DataFrame({COST_PER_M: [2.0]})
    table = projection({"today": today}, params).set_index("month")
    assert list(table.index) == [0, 6, 12, 18]
    assert table.loc[0].tolist() == pytest.approx([2.0, 2.0, 2.0])
    # after 12 months: cheapest = 2 x (0.8 x 0.5) / 2 = 0.4; dearest = 2 x 0.9 / 1 = 1.8;
    # central: declines 0.1 and 0.6 combined (1 - 0.9 x 1.0 = 0.1, 1 - 0.8 x 0.5 = 0.6) -> 0.35,
    # gain 0.5: 2 x 0.65 / 1.5
    assert table.loc[12, "usd_per_million_tokens_low"] == pytest.approx(0.4)
    assert table.loc[12, "usd_per_million_tokens_high"] == pytest.approx(1.8)
    assert table.loc[12, "usd_per_million_tokens_central"] == pytest.approx(2 * 0.65 / 1.5)
    assert table.loc[18, "usd_per_million_tokens_low"] == pytest.approx(2 * 0.2**1.5)


def test_cheapest_fleet_of_a_case_is_the_cheapest_whose_upper_p99s_meet_the_slos():
    def point(name, usd, ttft_high):
        return {
            "point": name,
            "economics.cost_usd": usd,
            "window.duration_s": 3600.0,
            COST_PER_M: usd / 10,
            MARGIN: 0.1,
            "latency_s.ttft.p99": 0.5,
            "latency_s.ttft.p99.ci_high": ttft_high,
            "latency_s.tpot.p99": 0.02,
            "latency_s.tpot.p99.ci_high": math.nan,  # one seed: the mean stands in
            "utilization.capacity_utilization": 0.5,
        }

    design = pd.DataFrame([point("n=1", 1.0, 1.2), point("n=3", 3.0, 0.6), point("n=2", 2.0, 0.9)])
    table = cheapest_fleets({"d": design}, FleetSloParams(ttft_p99_s=1.0, tpot_p99_s=0.05))
    assert table["meets_slos"].tolist() == [False, True, True]
    assert table.loc[table["cheapest"], "point"].tolist() == ["n=2"]


def test_utilization_headline_is_interpolated_between_the_points_around_it():
    load = pd.DataFrame(
        {
            "workload.rate": [1.0, 4.0],
            "utilization.capacity_utilization": [0.1, 0.4],
            COST_PER_M_INPUT: [1.0, 0.25],
            COST_PER_M_OUTPUT: [8.0, 2.0],
            COST_PER_M: [2.0, 0.5],
            MARGIN: [-1.0, 0.5],
        }
    )
    table = utilization({"load": load}, UtilizationParams(headline=[0.2, 0.9]))
    headline = table[table["interpolated"]]
    assert headline["capacity_utilization"].tolist() == [0.2]  # 0.9 is outside: not invented
    assert headline["usd_per_million_tokens"].iloc[0] == pytest.approx(1.5)
    assert headline["margin"].iloc[0] == pytest.approx(-0.5)  # a third of the way from -1 to 0.5
    assert not math.isnan(headline["rate_per_s"].iloc[0])


def day_run(gpu_hours: float, cost: float, revenue: float, **extra: float) -> pd.DataFrame:
    """One sweep point of a 24-hour run on $2.70 GPUs: the summary means fleet_day reads."""
    row = {
        "window.duration_s": 86400.0,
        "economics.gpu_hours": gpu_hours,
        "economics.gpu_usd_per_hour": 2.7,
        "economics.cost_usd": cost,
        "economics.revenue_usd": revenue,
        COST_PER_M: 0.3,
        MARGIN: (revenue - cost) / revenue,
        "fleet.serving_replicas_mean": gpu_hours / 24.0,
        "economics.slo_missed_requests": 10.0,
        **extra,
    }
    return pd.DataFrame([row])


def test_fleet_day_splits_gpu_hours_by_use_and_counts_training_value_as_revenue():
    lent = day_run(
        72.0, 194.4, 120.0, **{"fleet.background.gpu_hours": 20.0, "fleet.background.value_usd": 18}
    )
    split = day_run(48.0, 129.6, 110.0)  # 2 GPUs serve; params add 1 training all day
    params = FleetDayParams(static_training_gpus={"split": 1}, training_usd_per_gpu_hour=1.2)
    table = fleet_day({"lent": lent, "split": split}, params).set_index("fleet")
    # lent: training hours are inside the serving fleet's 72; value 18 counts as revenue
    assert table.loc["lent", "gpu_hours"] == 72.0
    assert table.loc["lent", "serving_gpu_hours"] == 52.0
    assert table.loc["lent", "training_gpu_hours"] == 20.0
    assert table.loc["lent", "margin_with_training"] == pytest.approx((138.0 - 194.4) / 138.0)
    # split: + 24 GPU-hours at $2.70 (64.80) worth 24 x 1.2 = 28.80, every hour useful
    assert table.loc["split", "gpu_hours"] == 72.0
    assert table.loc["split", "serving_gpu_hours"] == 48.0
    assert table.loc["split", "training_gpu_hours"] == 24.0
    assert table.loc["split", "cost_usd"] == pytest.approx(194.4)
    assert table.loc["split", "training_value_usd"] == pytest.approx(28.8)
    assert table.loc["split", "margin_with_training"] == pytest.approx((138.8 - 194.4) / 138.8)
    assert table.loc["split", "margin"] == pytest.approx((110.0 - 129.6) / 110.0)  # serving only


def test_static_training_for_a_case_the_study_does_not_run_is_refused_at_load(tmp_path):
    study = STUDY.replace('figure = "cheapest_fleets"', 'figure = "fleet_day"')
    study = study.replace(PARAMS, "[params]\nstatic_training_gpus = { splt = 1 }\n")
    folder = make_study(tmp_path / "s", study)
    with pytest.raises(UserError, match=r"study.toml: params: cases \['splt'\] are not cases"):
        load_study(folder)


def test_margin_arc_gains_add_up_from_the_baseline_margin_to_the_last():
    runs = {
        "baseline": day_run(72.0, 200.0, 100.0),  # margin -1.0
        "lever-a": day_run(24.0, 120.0, 100.0),  # -0.2: gains 0.8
        "lever-b": day_run(24.0, 70.0, 100.0),  # 0.3: gains 0.5
    }
    table = margin_arc(runs, NoParams())
    assert table["margin_gain"].tolist() == pytest.approx([-1.0, 0.8, 0.5])
    assert table["margin_gain"].sum() == pytest.approx(table["margin"].iloc[-1])


# ----------------------------------------------------------------------------- shipped studies

SHIPPED = sorted(p.parent for p in (ROOT / "studies").glob("*/study.toml"))


def test_gallery_ships_nine_studies():
    assert [p.name for p in SHIPPED] == [
        "cost-over-time",
        "hardware",
        "margin-arc",
        "price-pressure",
        "serving-training",
        "software-levers",
        "specialized-models",
        "utilization",
        "utilization-day",
    ]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_study_results_are_those_of_its_current_files(folder):
    """The committed table, figure and provenance were made from the files as they are now."""
    load_study(folder)
    results = folder / "results"
    for suffix in ("csv", "png", "svg", "pdf"):
        assert (results / f"{folder.name}.{suffix}").is_file()
    provenance = json.loads((results / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["command"] == f"python -m sim study run studies/{folder.name} --workers 2"
    for path, digest in provenance["files"].items():
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, path


def test_a_bad_set_item_of_a_later_case_stops_the_study_before_any_run(tmp_path):
    folder = make_study(tmp_path / "s", STUDY.replace("fleet.replicas=2", "fleet.replicas=0"))
    # replicas = 0 is allowed with [autoscale] (docs/fleet.md), so the scenario's check says no
    with pytest.raises(UserError, match="fleet.replicas = 0: a pool without \\[autoscale\\]"):
        run_study(folder, workers=1)
    assert not (folder / "results" / "cases" / "one").exists()
