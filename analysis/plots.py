"""Figures of the curves (matplotlib, no GUI): PNG and SVG, axes with units, legends, and a
title naming the scenarios. Each function takes a curve DataFrame from ``analysis.curves`` and
the path stem to write (``stem.png`` and ``stem.svg``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

STYLE = {
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "svg.hashsalt": "llm-serving-sim",  # stable SVG ids
}
PERCENTILE_STYLES = {"p50": ":", "p90": "--", "p99": "-"}
DPI = 110


def with_extension(stem: Path, extension: str) -> Path:
    """`stem` + `extension`, keeping every "." already in the name (unlike ``with_suffix``)."""
    return stem.with_name(stem.name + extension)


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.svg; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [with_extension(stem, ".png"), with_extension(stem, ".svg")]
    with matplotlib.rc_context(STYLE):
        fig.tight_layout()  # once, rather than a layout engine that reruns at every save
        fig.savefig(paths[0], dpi=DPI, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


def _figure(panels: int, title: str, width: float = 5.0) -> tuple[Figure, list[Axes]]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width * panels, 3.8))
        axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    fig.suptitle(title, fontsize=10)
    return fig, axes


def _lines(
    ax: Axes,
    curve: pd.DataFrame,
    x: str,
    y: str,
    scale: float = 1.0,
    order: str | None = None,
    **kw,
) -> None:
    """One line per series through the mean of y at each x (runs repeated over seeds), or, with
    `order`, through the points in the order of that column (a path parameterised by it)."""
    for i, (series, group) in enumerate(curve.groupby("series", sort=True)):
        if order is None:
            points = group.groupby(x, sort=True)[y].mean()
            xs, ys = points.index.to_numpy(dtype=float), points.to_numpy(dtype=float)
        else:  # seeds of one point averaged first
            points = group.groupby(order, sort=True)[[x, y]].mean()
            xs, ys = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
        style = {"marker": "o", "markersize": 3.5, "color": f"C{i}", "label": series, **kw}
        ax.plot(xs, ys * scale, **style)


def _plain_log(ax: Axes, axis: str) -> None:
    """A log scale whose tick labels are plain numbers (10, 20, 50, 100), not powers of ten."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else ""))


MARGIN_FLOOR_PCT = -100.0  # margin axes stop here; lower points sit on the edge as triangles


def _margin_axis(ax: Axes, curve: pd.DataFrame, x: str, x_scale: float = 1.0) -> None:
    """A zero line, and the axis cut at MARGIN_FLOOR_PCT with cut points marked on the edge."""
    ax.axhline(0.0, color="black", linewidth=0.8)
    low = curve[curve["margin"] * 100.0 < MARGIN_FLOOR_PCT]
    if low.empty:
        return
    series = sorted(curve["series"].unique())
    for name, group in low.groupby("series"):
        ax.plot(
            group[x] * x_scale,
            [MARGIN_FLOOR_PCT] * len(group),
            linestyle="none",
            marker="v",
            color=f"C{series.index(name)}",
            clip_on=False,
        )
    # the lines run on below the cut, so autoscaling would stretch the top: margin <= 100 %
    top = min(100.0, float(curve["margin"].max()) * 100.0)
    ax.set_ylim(MARGIN_FLOOR_PCT, top + 0.05 * (top - MARGIN_FLOOR_PCT))
    ax.text(0.01, 0.01, "axis cut; ▼ = lower margin", transform=ax.transAxes, fontsize=7)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def margin_vs_load(curve: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Gross margin (%) and profit per hour (USD/h) against offered load."""
    fig, (left, right) = _figure(2, title)
    _lines(left, curve, "offered_rate_rps", "margin", 100.0)
    _margin_axis(left, curve, "offered_rate_rps")
    left.set(xlabel="offered load (requests/s)", ylabel="gross margin (%)")
    _lines(right, curve, "offered_rate_rps", "profit_usd_per_hour")
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set(xlabel="offered load (requests/s)", ylabel="gross profit (USD/h)")
    _legend(left)
    return save(fig, stem)


COST_STYLES = {  # cost per million tokens: column, line style, label
    "cost_per_million_input_tokens_usd": ("--", "input"),
    "cost_per_million_output_tokens_usd": ("-", "output"),
    "cost_per_million_tokens_usd": (":", "blended"),
}


def margin_vs_utilization(curve: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Gross margin (%) and cost per million input, output and blended tokens (USD) against
    capacity utilization (%), points joined in order of offered load; each series' utilizations
    from its first run that misses its SLOs on are shaded."""
    fig, (left, right) = _figure(2, title)
    scaled = curve.assign(capacity_utilization=curve["capacity_utilization"] * 100.0)
    _lines(left, scaled, "capacity_utilization", "margin", 100.0, order="offered_rate_rps")
    _margin_axis(left, curve, "capacity_utilization", 100.0)
    left.set(xlabel="capacity utilization (% of sustainable req/s)", ylabel="gross margin (%)")
    for column, (dash, _) in COST_STYLES.items():
        _lines(right, scaled, "capacity_utilization", column, order="offered_rate_rps", ls=dash)
    right.set(xlabel="capacity utilization (% of sustainable req/s)", ylabel="USD per 1M tokens")
    _plain_log(right, "y")  # input tokens cost a few cents, output tokens up to dollars
    shaded = _shade_slo_missed(left, scaled)
    _shade_slo_missed(right, scaled)
    _legend(left)
    handles = [right.plot([], [], color="grey", ls=d, label=n)[0] for d, n in COST_STYLES.values()]
    if shaded:
        handles.append(Patch(color="grey", alpha=0.15, label="SLO p99 missed"))
    right.legend(handles=handles, loc="best")
    return save(fig, stem)


def _shade_slo_missed(ax: Axes, curve: pd.DataFrame) -> bool:
    """Shade, per series in its colour, the utilizations from halfway between its last run that
    meets its SLOs and its first run that misses one, to the right edge; returns whether
    anything was shaded."""
    series = sorted(curve["series"].unique())
    right = max(100.0, float(curve["capacity_utilization"].max())) * 1.03
    shaded = False
    for name, group in curve.groupby("series"):
        points = group.groupby("capacity_utilization", sort=True)["slo_missed"].max()
        missed = points[points.astype(bool)]
        if missed.empty:
            continue
        first = float(missed.index[0])
        met = points[(points.index < first) & ~points.astype(bool)]
        start = (float(met.index[-1]) + first) / 2.0 if len(met) else first
        ax.axvspan(start, right, color=f"C{series.index(name)}", alpha=0.12, linewidth=0)
        shaded = True
    ax.set_xlim(right=right)
    return shaded


def cost_vs_batch_limit(curve: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Cost per million output tokens (USD) against max_num_seqs."""
    fig, (ax,) = _figure(1, title, width=6.0)
    _lines(ax, curve, "max_num_seqs", "cost_per_million_output_tokens_usd")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="batch-size limit max_num_seqs (sequences)", ylabel="cost (USD per 1M output tokens)"
    )
    ax.set_ylim(bottom=0)
    _legend(ax)
    return save(fig, stem)


def latency_vs_load(curve: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """TTFT and TPOT percentiles (ms) against offered load, with each series' SLO line."""
    fig, axes = _figure(2, title)
    for ax, metric, name in zip(
        axes, ("ttft", "tpot"), ("time to first token", "time per output token"), strict=True
    ):
        for p, dash in PERCENTILE_STYLES.items():
            _lines(ax, curve, "offered_rate_rps", f"{metric}_{p}_s", 1e3, linestyle=dash)
        for i, (_, group) in enumerate(curve.groupby("series", sort=True)):
            slo = group[f"slo_{metric}_s"].dropna()
            if not slo.empty:
                ax.axhline(slo.min() * 1e3, color=f"C{i}", linewidth=1.2, alpha=0.6, linestyle="-.")
        _plain_log(ax, "y")
        ax.set(xlabel="offered load (requests/s)", ylabel=f"{name} (ms)")
    _percentile_legend(axes[0], curve)
    return save(fig, stem)


def _percentile_legend(ax: Axes, curve: pd.DataFrame) -> None:
    """Legend: colours are series, line styles percentiles, dash-dot the SLO."""
    handles = [
        ax.plot([], [], color=f"C{i}", label=s)[0]
        for i, s in enumerate(sorted(curve["series"].unique()))
    ]
    handles += [
        ax.plot([], [], color="grey", linestyle=d, label=p)[0] for p, d in PERCENTILE_STYLES.items()
    ]
    if curve[["slo_ttft_s", "slo_tpot_s"]].notna().any().any():
        handles.append(ax.plot([], [], color="grey", linestyle="-.", label="SLO")[0])
    ax.legend(handles=handles, loc="best")


def utilization_timeline(timeline: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Fleet capacity utilization, non-idle fraction, MFU, MBU and KV occupancy (%), queue and
    running requests, and the decode batch over the run, per time window."""
    fig, (frac, queue, batch) = _figure(3, title, width=4.2)
    t = (timeline["window_start_s"] + timeline["window_end_s"]) / 2.0
    for column, label in (
        ("capacity_utilization", "capacity"),
        ("nonidle_fraction", "non-idle"),
        ("mfu_bf16_peak", "MFU (bf16 peak)"),
        ("mbu", "memory bandwidth"),
        ("kv_occupancy", "KV cache"),
    ):
        frac.plot(t, timeline[column] * 100.0, label=label)
    frac.set(xlabel="simulated time (s)", ylabel="utilization (%)", ylim=(0, 105))
    queue.plot(t, timeline["queue_length"], label="queued")
    queue.plot(t, timeline["running_requests"], label="running")
    queue.set(xlabel="simulated time (s)", ylabel="requests in fleet (time average)")
    batch.plot(t, timeline["decode_batch"], label="decode batch", color="C4")
    batch.set(xlabel="simulated time (s)", ylabel="decoding sequences per iteration")
    for ax in (frac, queue, batch):
        _legend(ax)
    return save(fig, stem)


def fleet_over_time(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Offered load, replicas by state (stacked), capacity utilization and margin per time
    window, in hours."""
    fig, (load, states, util, margin) = _figure(4, title, width=4.0)
    t = (frame["window_start_s"] + frame["window_end_s"]) / 2.0 / 3600.0
    load.plot(t, frame["offered_rps"], color="C0")
    load.set(xlabel="simulated time (h)", ylabel="offered load (requests/s)")
    shown = [s for s in FLEET_STATES if frame[s].max() > 0]
    states.stackplot(t, *[frame[s] for s in shown], labels=shown, step="mid")
    states.set(xlabel="simulated time (h)", ylabel="replicas (time average)")
    _legend(states)
    util.plot(t, frame["capacity_utilization"] * 100.0, color="C2")
    util.set(xlabel="simulated time (h)", ylabel="capacity utilization (%)", ylim=(0, 105))
    margin.plot(t, frame["margin"] * 100.0, color="C3")
    margin.axhline(0.0, color="0.6", linewidth=0.8)
    margin.set(xlabel="simulated time (h)", ylabel="margin (%)")
    return save(fig, stem)


FLEET_STATES = ("serving", "background", "draining", "standby", "provisioning", "loading", "failed")


def pool_utilization_timeline(timeline: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Per pool: capacity utilization and KV occupancy (%), and running requests, per time
    window."""
    fig, (busy, kv, running) = _figure(3, title, width=4.2)
    for i, (pool, group) in enumerate(timeline.groupby("pool", sort=False)):
        t = (group["window_start_s"] + group["window_end_s"]) / 2.0
        busy.plot(t, group["capacity_utilization"] * 100.0, color=f"C{i % 10}", label=pool)
        kv.plot(t, group["kv_occupancy"] * 100.0, color=f"C{i % 10}", label=pool)
        running.plot(t, group["running_requests"], color=f"C{i % 10}", label=pool)
    busy.set(xlabel="simulated time (s)", ylabel="capacity utilization (%)", ylim=(0, 105))
    kv.set(xlabel="simulated time (s)", ylabel="KV cache occupancy (%)", ylim=(0, 105))
    running.set(xlabel="simulated time (s)", ylabel="running requests (time average)")
    for ax in (busy, kv, running):
        _legend(ax)
    return save(fig, stem)


def latency_cdfs(cdfs: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Empirical CDFs of TTFT, TPOT and E2E latency (ms, log scale), one line per run."""
    fig, axes = _figure(3, title, width=4.2)
    names = {
        "ttft": "time to first token",
        "tpot": "time per output token",
        "e2e": "end-to-end latency",
    }
    for ax, (metric, name) in zip(axes, names.items(), strict=True):
        for i, (run, group) in enumerate(cdfs[cdfs["metric"] == metric].groupby("run", sort=False)):
            ax.plot(group["latency_s"] * 1e3, group["cdf"], color=f"C{i % 10}", label=run)
        _plain_log(ax, "x")
        ax.set(xlabel=f"{name} (ms)", ylabel="fraction of requests", ylim=(0, 1.02))
    _legend(axes[0])
    return save(fig, stem)
