"""The tables of the gallery's studies (docs/gallery.md), one function per kind of study.

Each table function takes the study's cases (case name -> a DataFrame with one row per sweep
point or plan option, carrying that point's summary metrics, as :mod:`sim.study.gallery` builds
them) and the study's checked ``[params]``, and returns the table the study writes as CSV and
draws. :data:`STUDIES` maps a study file's ``figure`` to its params, the cases it reads, its
table function and its figure function (:mod:`analysis.study_figures`).

Column names carry their units: ``usd_per_hour``, ``usd_per_million_tokens`` (all tokens,
input and output, of completed requests), ``margin`` (fraction of revenue).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

Cases = dict[str, pd.DataFrame]
COST_PER_M = "economics.cost_per_million_tokens_usd"
COST_PER_M_INPUT = "economics.cost_per_million_input_tokens_usd"
COST_PER_M_OUTPUT = "economics.cost_per_million_output_tokens_usd"
MARGIN = "economics.margin"
MULTIPLIER = "economics.break_even_price_multiplier"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def case_names(self) -> set[str]:
        """Cases the params name (the study file must run each)."""
        return set()


class NoParams(_Params):
    """A study whose table needs no inputs beyond its runs."""


FLEET_COLUMNS = ("fleet", "replicas", "gpus", "usd_per_hour", "usd_per_million_tokens", "margin")
FLEET_COLUMNS += ("break_even_price_multiplier", "status")


def fleet_rows(options: pd.DataFrame, label: str | None = None) -> pd.DataFrame:
    """Plan options as fleet rows: name, GPUs, cost per hour and per million tokens, margin,
    status. An option not met keeps its row, its numbers NaN and its status saying why. `label`
    names every row (one option per case), else the GPU or the mix."""
    rows = []
    for option in options.to_dict("records"):
        if option["status"] != "ok":  # not met: no fleet, so no numbers (NaN)
            rows.append({"fleet": label or _option_name(option), "status": option["status"]})
            continue
        rows.append(
            {
                "fleet": label or _fleet_name(option),
                "replicas": option["replicas"],
                "gpus": option["gpus"],
                "usd_per_hour": option["usd_per_hour"],
                "usd_per_million_tokens": option[COST_PER_M],
                "margin": option["margin"],
                "break_even_price_multiplier": option[MULTIPLIER],
                "status": "ok",
            }
        )
    table = pd.DataFrame(rows, columns=list(FLEET_COLUMNS))
    return table.astype({"replicas": "Int64", "gpus": "Int64"})  # whole numbers, or missing


def _option_name(option: dict) -> str:
    """An option without a fleet: its GPU (or mix of GPUs) and TP degree."""
    return f"{option['gpu']}" + (f" tp{option['tp']}" if option["tp"] != 1 else "")


def _fleet_name(row: dict) -> str:
    mix = row.get("mix")
    if isinstance(mix, str) and mix:
        return mix
    return f"{int(row['replicas'])} {_option_name(row)}"


def hardware(cases: Cases, params: NoParams) -> pd.DataFrame:
    """The cheapest fleet of each GPU type (case ``types``) and the mixes of two types (case
    ``mix``, its mixed rows only), cheapest per hour first."""
    mix = cases["mix"]
    mixed = mix[mix["mix"].notna() & (mix["mix"] != "")] if "mix" in mix else mix.iloc[:0]
    table = pd.concat([fleet_rows(cases["types"]), fleet_rows(mixed)], ignore_index=True)
    table = table.sort_values("usd_per_hour", kind="stable", na_position="last")
    return table.reset_index(drop=True)


class PricePressureParams(_Params):
    cut: float = Field(default=0.3, gt=0, lt=1, description="the price cut asked about")
    margin_floor: float = Field(default=0.5, lt=1, description="the margin to keep")
    cuts: list[float] = Field(
        default=[0, 0.1, 0.2, 0.3, 0.4, 0.5], min_length=2, description="cuts the figure draws"
    )


def margin_after_cut(multiplier: float | np.ndarray, cut: float | np.ndarray):
    """Margin after every token price is cut by `cut` (0.3 = 30% cheaper), the fleet and its
    load unchanged: cost = multiplier x revenue before the cut, revenue x (1 - cut) after, so
    margin = 1 - multiplier / (1 - cut). Refunds scale with the prices, so they stay in."""
    return 1.0 - np.asarray(multiplier) / (1.0 - np.asarray(cut))


def price_pressure(cases: Cases, params: PricePressureParams) -> pd.DataFrame:
    """Per cheapest fleet of each GPU type: its margin, the uniform price cut that brings it
    to zero margin (1 - break-even multiplier), its margin after ``params.cut`` and whether
    that stays above ``params.margin_floor``."""
    table = fleet_rows(cases["types"]).sort_values("usd_per_hour", na_position="last")
    multiplier = table["break_even_price_multiplier"].to_numpy()
    after = margin_after_cut(multiplier, params.cut)
    return pd.DataFrame(
        {
            "fleet": table["fleet"].to_numpy(),
            "gpus": table["gpus"].to_numpy(),
            "usd_per_hour": table["usd_per_hour"].to_numpy(),
            "margin": table["margin"].to_numpy(),
            "break_even_cut": 1.0 - multiplier,
            f"margin_after_{_percent(params.cut)}pct_cut": after,
            f"above_{_percent(params.margin_floor)}pct_after_cut": after > params.margin_floor,
            "status": table["status"].to_numpy(),
        }
    )


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}"


def levers(cases: Cases, params: NoParams) -> pd.DataFrame:
    """One row per case (a software lever): its cheapest fleet meeting the study's SLOs, or,
    when its plan met nothing, its status."""
    rows = []
    for name, options in cases.items():
        fleets = fleet_rows(options, label=name)
        cheapest = fleets["usd_per_hour"].idxmin() if fleets["usd_per_hour"].notna().any() else 0
        rows.append(fleets.loc[[cheapest]])
    return pd.concat(rows, ignore_index=True)


class FleetSloParams(_Params):
    ttft_p99_s: float = Field(gt=0, description="limit on the TTFT p99, seconds")
    tpot_p99_s: float = Field(gt=0, description="limit on the TPOT p99, seconds")


def cheapest_fleets(cases: Cases, params: FleetSloParams) -> pd.DataFrame:
    """Every sweep point of every case (a fleet size of a fleet design) with its cost per hour
    and per million tokens, margin and latency; ``meets_slos`` when the upper end of the 95%
    interval across seeds of each p99 is within its limit, and ``cheapest`` marks each case's
    cheapest point that meets them."""
    rows = []
    for name, results in cases.items():
        for row in results.to_dict("records"):
            rows.append(
                {
                    "fleet": name,
                    "point": row["point"],
                    "usd_per_hour": row["economics.cost_usd"] / row["window.duration_s"] * 3600.0,
                    "usd_per_million_tokens": row[COST_PER_M],
                    "margin": row[MARGIN],
                    "ttft_p99_s": _upper(row, "latency_s.ttft.p99"),
                    "tpot_p99_s": _upper(row, "latency_s.tpot.p99"),
                    "capacity_utilization": row["utilization.capacity_utilization"],
                }
            )
    table = pd.DataFrame(rows)
    table["meets_slos"] = (table["ttft_p99_s"] <= params.ttft_p99_s) & (
        table["tpot_p99_s"] <= params.tpot_p99_s
    )
    met = table[table["meets_slos"]]
    table["cheapest"] = table.index.isin(met.groupby("fleet")["usd_per_hour"].idxmin())
    return table


def _upper(row: dict, metric: str) -> float:
    """Upper end of a metric's 95% interval across seeds; the mean when there is none."""
    high = row.get(f"{metric}.ci_high", math.nan)
    return high if math.isfinite(high) else row[metric]


class Trend(_Params):
    """An assumed yearly change, with a low and a high estimate and where it comes from."""

    name: str
    low: float = Field(gt=-1, description="yearly fraction, low estimate")
    high: float = Field(gt=-1, description="yearly fraction, high estimate")
    source: str = Field(min_length=1, description="a citation, or 'assumption: why'")


class ProjectionParams(_Params):
    months: int = Field(default=18, ge=1)
    step_months: int = Field(default=3, ge=1)
    gpu_price_decline: list[Trend] = Field(min_length=1)
    software_gain: list[Trend] = Field(min_length=1)

    @field_validator("gpu_price_decline")
    @classmethod
    def _below_one(cls, trends: list[Trend]) -> list[Trend]:
        if any(max(t.low, t.high) >= 1 for t in trends):
            raise ValueError("a yearly price decline is below 1 (1 = free)")
        return trends


def cost_factor(price_decline: float, software_gain: float, months: float) -> float:
    """Cost per token after `months`, relative to today: GPU-hours cost (1 - decline) per year
    compounded, and each GPU-hour serves (1 + gain) times the tokens per year compounded."""
    years = months / 12.0
    return (1.0 - price_decline) ** years / (1.0 + software_gain) ** years


def projection(cases: Cases, params: ProjectionParams) -> pd.DataFrame:
    """Cost per million tokens month by month: today's (case ``today``) times
    :func:`cost_factor`. Yearly rates compound: the price declines and the software gains of
    the study file combine (each row of a list is one independent lever). ``low`` takes every
    high estimate (the cheapest future), ``high`` every low one, ``central`` their midpoints."""
    today = float(cases["today"].iloc[0][COST_PER_M])
    decline = {k: _combined(params.gpu_price_decline, k, -1) for k in ("low", "high")}
    gain = {k: _combined(params.software_gain, k, +1) for k in ("low", "high")}
    months = list(range(0, params.months + 1, params.step_months))
    if months[-1] != params.months:
        months.append(params.months)
    rows = []
    for m in months:
        low = today * cost_factor(decline["high"], gain["high"], m)
        high = today * cost_factor(decline["low"], gain["low"], m)
        mid_decline = (decline["low"] + decline["high"]) / 2
        central = today * cost_factor(mid_decline, (gain["low"] + gain["high"]) / 2, m)
        rows.append(
            {
                "month": m,
                "usd_per_million_tokens_low": low,
                "usd_per_million_tokens_central": central,
                "usd_per_million_tokens_high": high,
            }
        )
    return pd.DataFrame(rows)


def _combined(trends: list[Trend], which: str, sign: int) -> float:
    """Several independent yearly changes as one: declines (sign -1) combine as
    1 - prod(1 - d), gains (sign +1) as prod(1 + g) - 1."""
    return sign * (math.prod(1.0 + sign * getattr(t, which) for t in trends) - 1.0)


class UtilizationParams(_Params):
    headline: list[float] = Field(
        default=[0.2, 0.8], min_length=1, description="capacity utilizations to report"
    )


def utilization(cases: Cases, params: UtilizationParams) -> pd.DataFrame:
    """Cost per million input, output and all tokens and margin against capacity utilization
    (case ``load``, a sweep over the arrival rate), with the ``params.headline`` utilizations
    interpolated linearly between the points around them (marked ``interpolated``)."""
    load = cases["load"].sort_values("utilization.capacity_utilization")
    columns = {
        "capacity_utilization": "utilization.capacity_utilization",
        "rate_per_s": "workload.rate",
        "usd_per_million_input_tokens": COST_PER_M_INPUT,
        "usd_per_million_output_tokens": COST_PER_M_OUTPUT,
        "usd_per_million_tokens": COST_PER_M,
        "margin": MARGIN,
    }
    table = pd.DataFrame({k: load[v].to_numpy(dtype=float) for k, v in columns.items()})
    table["interpolated"] = False
    x = table["capacity_utilization"].to_numpy()
    extra = [
        {
            **{k: float(np.interp(u, x, table[k].to_numpy())) for k in columns},
            "capacity_utilization": u,
            "interpolated": True,
        }
        for u in params.headline
        if x.min() <= u <= x.max()
    ]
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


class FleetDayParams(_Params):
    """A fleet split statically: GPUs that train full time beside a case's serving fleet."""

    static_training_gpus: dict[str, int] = Field(
        default_factory=dict, description="case name -> GPUs training all the window"
    )
    training_usd_per_gpu_hour: float = Field(
        default=0.0, ge=0, description="value of a useful training GPU-hour, USD"
    )

    def case_names(self) -> set[str]:
        return set(self.static_training_gpus)


def fleet_day(cases: Cases, params: FleetDayParams) -> pd.DataFrame:
    """One row per case (a sweep of one scenario, means over seeds): the window's GPU-hours by
    use (serving, training), cost, revenue, the value of the training done, cost per million
    tokens, the serving margin and the margin with training counted as revenue.

    Training is either lent (the idle serving replicas of ``[fleet.background]``: its
    GPU-hours are inside the serving fleet's bill, its value is the useful GPU-hours times the
    scenario's price) or static (``params.static_training_gpus[case]`` more GPUs at the case's
    GPU price, training for the whole window, every hour useful, valued at
    ``params.training_usd_per_gpu_hour``)."""
    rows = []
    for name, results in cases.items():
        row = results.iloc[0].to_dict()
        hours = row["window.duration_s"] / 3600.0
        static = params.static_training_gpus.get(name, 0)
        lent = _value(row, "fleet.background.gpu_hours")
        static_cost = static * hours * row["economics.gpu_usd_per_hour"]
        value = _value(row, "fleet.background.value_usd")
        value += static * hours * params.training_usd_per_gpu_hour
        cost = row["economics.cost_usd"] + static_cost
        revenue = row["economics.revenue_usd"]
        rows.append(
            {
                "fleet": name,
                "gpu_hours": row["economics.gpu_hours"] + static * hours,
                "serving_gpu_hours": row["economics.gpu_hours"] - lent,
                "training_gpu_hours": lent + static * hours,
                "serving_replicas_mean": row["fleet.serving_replicas_mean"],
                "cost_usd": cost,
                "revenue_usd": revenue,
                "training_value_usd": value,
                "usd_per_million_tokens": row[COST_PER_M],
                "margin": row[MARGIN],
                "margin_with_training": (revenue + value - cost) / (revenue + value),
                "slo_missed_requests": row["economics.slo_missed_requests"],
            }
        )
    return pd.DataFrame(rows)


def _value(row: dict, metric: str) -> float:
    """A metric a feature adds (absent or NaN when it is off) as 0."""
    value = row.get(metric, math.nan)
    return 0.0 if value is None or math.isnan(value) else float(value)


def margin_arc(cases: Cases, params: NoParams) -> pd.DataFrame:
    """The cases in order, each one lever more than the one before: :func:`fleet_day`'s row
    and ``margin_gain``, the margin it adds to the previous case's (the first: its margin)."""
    table = fleet_day(cases, FleetDayParams())
    table = table.drop(columns=["training_gpu_hours", "training_value_usd", "margin_with_training"])
    table["margin_gain"] = table["margin"].diff().fillna(table["margin"])
    return table


@dataclass(frozen=True)
class StudyKind:
    """What a study file's ``figure`` names: its params model, the cases it reads (exact names
    and kinds, or one kind for any number of cases), its table and its figure."""

    params: type[BaseModel]
    cases: dict[str, str] | str
    table: Callable[[Cases, BaseModel], pd.DataFrame]
    figure: str


STUDIES: dict[str, StudyKind] = {
    "hardware": StudyKind(NoParams, {"types": "plan", "mix": "plan"}, hardware, "hardware"),
    "price_pressure": StudyKind(
        PricePressureParams, {"types": "plan"}, price_pressure, "price_pressure"
    ),
    "levers": StudyKind(NoParams, "plan", levers, "bars"),
    "cheapest_fleets": StudyKind(FleetSloParams, "sweep", cheapest_fleets, "cheapest_bars"),
    "projection": StudyKind(ProjectionParams, {"today": "sweep"}, projection, "projection"),
    "utilization": StudyKind(UtilizationParams, {"load": "sweep"}, utilization, "utilization"),
    "fleet_day": StudyKind(FleetDayParams, "sweep", fleet_day, "gpu_hours_by_use"),
    "margin_arc": StudyKind(NoParams, "sweep", margin_arc, "waterfall"),
}
