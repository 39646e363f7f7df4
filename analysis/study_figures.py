"""The figures of the gallery's studies, sized for one column of a paper (3.5 in wide, 8 pt
text), written as PNG (300 dpi), SVG and PDF by matplotlib's Agg backend (no display).

Each figure function takes the study's table (:mod:`analysis.study_tables`) and params and
returns a Figure; :data:`FIGURES` names them for :class:`analysis.study_tables.StudyKind`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel

from analysis.study_tables import PricePressureParams, UtilizationParams, margin_after_cut

COLUMN_WIDTH_IN = 3.5
HEIGHT_IN = 2.6
DPI = 300
FORMATS = ("png", "svg", "pdf")
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.2,
    "svg.hashsalt": "llm-serving-sim",  # stable SVG ids
    "pdf.fonttype": 42,  # TrueType in the PDF, editable text as journals ask
}
_NO_DATES = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png, .svg and .pdf; returns the paths."""
    paths = [stem.with_suffix(f".{fmt}") for fmt in FORMATS]
    with matplotlib.rc_context(STYLE):
        fig.tight_layout(pad=0.3)
        for path, fmt in zip(paths, FORMATS, strict=True):
            fig.savefig(path, dpi=DPI, metadata=_NO_DATES[fmt])
    return paths


def _axes(height: float = HEIGHT_IN):
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, height))
        ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _bars(rows: pd.DataFrame, xlabel: str) -> Figure:
    """Horizontal bars of cost per million tokens, one per fleet, labelled with the margin; a
    fleet without a cost (its SLOs not met) keeps its row, labelled so."""
    fig, ax = _axes(max(1.4, 0.9 + 0.28 * len(rows)))
    costs = rows["usd_per_million_tokens"].to_numpy(dtype=float)
    with matplotlib.rc_context(STYLE):
        y = np.arange(len(rows))
        ax.barh(y, np.nan_to_num(costs), color="tab:blue", height=0.6)
        ax.set_yticks(y, rows["fleet"])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        for yi, cost, margin in zip(y, costs, rows["margin"], strict=True):
            text = " SLOs not met" if np.isnan(cost) else f" margin {margin:.0%}"
            ax.annotate(text, (np.nan_to_num(cost), yi), va="center", fontsize=6.5, color="0.25")
        if np.isfinite(costs).any():
            ax.set_xlim(0, np.nanmax(costs) * 1.45)
        ax.grid(axis="y", visible=False)
    return fig


def bars(table: pd.DataFrame, params: BaseModel) -> Figure:
    """Cost per million tokens per fleet."""
    return _bars(table, "cost per million tokens (USD)")


def cheapest_bars(table: pd.DataFrame, params: BaseModel) -> Figure:
    """Cost per million tokens of each case's cheapest fleet meeting the SLOs (or a row saying
    none does)."""
    none_met = {"usd_per_million_tokens": [np.nan], "margin": [np.nan]}
    rows = [
        group[group["cheapest"]]
        if group["cheapest"].any()
        else pd.DataFrame({"fleet": [name], **none_met})
        for name, group in table.groupby("fleet", sort=False)
    ]
    return _bars(pd.concat(rows), "cost per million tokens (USD), cheapest fleet")


def hardware(table: pd.DataFrame, params: BaseModel) -> Figure:
    """Cost per million tokens of each type's (and mix's) cheapest fleet."""
    return _bars(table, "cost per million tokens (USD), cheapest fleet")


def price_pressure(table: pd.DataFrame, params: PricePressureParams) -> Figure:
    """Margin against a uniform token-price cut, one line per fleet."""
    fig, ax = _axes()
    cuts = np.linspace(0, max(params.cuts), 101)
    with matplotlib.rc_context(STYLE):
        for row in table.itertuples(index=False):
            multiplier = 1.0 - row.break_even_cut
            ax.plot(cuts * 100, margin_after_cut(multiplier, cuts) * 100, label=row.fleet)
        ax.axhline(params.margin_floor * 100, color="0.4", ls="--", lw=0.8)
        ax.axvline(params.cut * 100, color="0.4", ls=":", lw=0.8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("uniform token-price cut (%)")
        ax.set_ylabel("margin (%)")
        ax.legend(loc="lower left", frameon=False)
    return fig


def projection(table: pd.DataFrame, params: BaseModel) -> Figure:
    """The band of projected cost per million tokens, with its central line."""
    fig, ax = _axes()
    with matplotlib.rc_context(STYLE):
        months = table["month"]
        ax.fill_between(
            months,
            table["usd_per_million_tokens_low"],
            table["usd_per_million_tokens_high"],
            alpha=0.3,
            color="tab:blue",
            label="range of assumptions",
        )
        ax.plot(months, table["usd_per_million_tokens_central"], color="tab:blue", label="central")
        ax.set_xlabel("months from today")
        ax.set_ylabel("cost per million tokens (USD)")
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False)
    return fig


def utilization(table: pd.DataFrame, params: UtilizationParams) -> Figure:
    """Cost per million input and output tokens (left axis) and margin (right) against
    capacity utilization; the headline points marked."""
    fig, ax = _axes()
    points = table[~table["interpolated"].astype(bool)]
    with matplotlib.rc_context(STYLE):
        x = points["capacity_utilization"] * 100
        ax.plot(x, points["usd_per_million_input_tokens"], "o-", ms=3, label="input tokens")
        ax.plot(x, points["usd_per_million_output_tokens"], "s-", ms=3, label="output tokens")
        ax.set_yscale("log")
        ax.set_xlabel("capacity utilization (%)")
        ax.set_ylabel("cost per million tokens (USD)")
        right = ax.twinx()
        right.plot(x, points["margin"] * 100, "^--", ms=3, color="tab:green", label="margin")
        right.set_ylabel("margin (%)")
        right.grid(False)
        for u in params.headline:
            ax.axvline(u * 100, color="0.5", ls=":", lw=0.8)
        lines = ax.get_lines()[:2] + right.get_lines()[:1]
        labels = [ln.get_label() for ln in lines]
        ax.legend(lines, labels, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 0.08))
    return fig


def gpu_hours_by_use(table: pd.DataFrame, params: BaseModel) -> Figure:
    """GPU-hours of each fleet, serving and training stacked, labelled with the cost per million
    tokens and the margin (and the margin with training counted as revenue when it trains)."""
    fig, ax = _axes(max(1.4, 0.9 + 0.28 * len(table)))
    with matplotlib.rc_context(STYLE):
        y = np.arange(len(table))
        serving = table["serving_gpu_hours"].to_numpy(dtype=float)
        training = table["training_gpu_hours"].to_numpy(dtype=float)
        ax.barh(y, serving, color="tab:blue", height=0.6, label="serving")
        if training.any():
            ax.barh(y, training, left=serving, color="tab:orange", height=0.6, label="training")
            ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
        ax.set_yticks(y, table["fleet"])
        ax.invert_yaxis()
        ax.set_xlabel("GPU-hours")
        for row, yi, total in zip(
            table.itertuples(index=False), y, serving + training, strict=True
        ):
            text = f" ${row.usd_per_million_tokens:.3f}/M tokens, margin {row.margin:.0%}"
            if row.training_gpu_hours > 0:
                text += f",\n {row.margin_with_training:.0%} with training"
            ax.annotate(text, (total, yi), va="center", fontsize=6.5, color="0.25")
        ax.set_xlim(0, (serving + training).max() * 2.2)
        ax.grid(axis="y", visible=False)
    return fig


def waterfall(table: pd.DataFrame, params: BaseModel) -> Figure:
    """Margin of the baseline, then the margin each lever adds (green up, red down), floating
    from the margin before it, and the margin of the last fleet."""
    fig, ax = _axes(HEIGHT_IN + 0.3)
    gains = table["margin_gain"].to_numpy(dtype=float) * 100
    final = table["margin"].iloc[-1] * 100
    with matplotlib.rc_context(STYLE):
        bottoms = np.concatenate([[0.0], np.cumsum(gains)[:-1]])
        colors = ["0.55"] + ["tab:green" if g >= 0 else "tab:red" for g in gains[1:]]
        x = np.arange(len(table) + 1)
        ax.bar(x[:-1], gains, bottom=bottoms, color=colors, width=0.6)
        ax.bar(x[-1], final, color="tab:blue", width=0.6)
        for xi, bottom, gain in zip(x[:-1], bottoms, gains, strict=True):
            label = f"{gain:+.0f}" if xi else f"{gain:.0f}"
            top = max(bottom, bottom + gain)
            ax.annotate(label, (xi, top), ha="center", va="bottom", fontsize=6.5)
        ax.annotate(f"{final:.0f}", (x[-1], max(final, 0)), ha="center", va="bottom", fontsize=6.5)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, [*table["fleet"], "optimized"], rotation=35, ha="right")
        ax.set_ylabel("margin (% of revenue)")
        ax.grid(axis="x", visible=False)
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame, BaseModel], Figure]] = {
    "bars": bars,
    "cheapest_bars": cheapest_bars,
    "hardware": hardware,
    "price_pressure": price_pressure,
    "projection": projection,
    "utilization": utilization,
    "gpu_hours_by_use": gpu_hours_by_use,
    "waterfall": waterfall,
}
