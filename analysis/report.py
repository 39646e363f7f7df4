"""The report of one or more run directories: figures (PNG, SVG) with their curves (CSV), a
self-contained ``report.html`` (figures embedded as base64 PNG) and ``report.md``.

Nothing is simulated: every number comes from the runs' traces and resolved scenarios. A curve
over runs is drawn only when some series has runs at two or more values of its x variable; the
report lists every curve it did not draw and why.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import curves, plots

Formatter = Callable[[object], str]


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report and the files it was written to."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    csv: Path


@dataclass
class Report:
    """What `build_report` wrote."""

    out_dir: Path
    figures: list[ReportFigure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def markdown(self) -> Path:
        return self.out_dir / "report.md"


@dataclass(frozen=True)
class OverRuns:
    """A curve over runs: how to compute and draw it, its swept x and the y it cannot lack."""

    name: str
    make: Callable[[pd.DataFrame], pd.DataFrame]
    plot: Callable[[pd.DataFrame, str, Path], list[Path]]
    x: str
    x_words: str
    y: str
    caption: str


OVER_RUNS = (
    OverRuns(
        "margin_vs_load",
        curves.margin_vs_load,
        plots.margin_vs_load,
        "offered_rate_rps",
        "offered loads",
        "margin",
        "Gross margin = (revenue - cost) / revenue and gross profit per hour against offered load.",
    ),
    OverRuns(
        "margin_vs_utilization",
        curves.margin_vs_utilization,
        plots.margin_vs_utilization,
        "capacity_utilization",
        "utilizations",
        "margin",
        "Gross margin and cost per million input, output and blended tokens against capacity "
        "utilization (served requests/s over the fleet's sustainable requests/s for the run's "
        "mix); shaded where a run's TTFT or TPOT p99 exceeds its SLO.",
    ),
    OverRuns(
        "latency_vs_load",
        curves.latency_vs_load,
        plots.latency_vs_load,
        "offered_rate_rps",
        "offered loads",
        "ttft_p99_s",
        "TTFT and TPOT percentiles (p50 dotted, p90 dashed, p99 solid) and the SLO (dash-dot).",
    ),
    OverRuns(
        "cost_vs_batch_limit",
        curves.cost_vs_batch_limit,
        plots.cost_vs_batch_limit,
        "max_num_seqs",
        "batch-size limits (batcher.max_num_seqs)",
        "cost_per_million_output_tokens_usd",
        "Cost per million output tokens against the batcher's max_num_seqs.",
    ),
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "run"


def _unique_slugs(labels: list[str]) -> list[str]:
    """File-name slugs of `labels`, numbered where two labels give the same slug."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        slug = _slug(label)
        seen[slug] = seen.get(slug, 0) + 1
        out.append(slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")
    return out


def build_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    window_s: float | None = None,
    target_margin: float = 0.0,
) -> Report:
    """Analyse `run_dirs` and write figures, CSVs, report.html and report.md into `out_dir`.

    `target_margin` sets each run's price-cut headroom (docs/economics.md).
    """
    runs = curves.load_runs(run_dirs, target_margin)
    report = Report(Path(out_dir))
    fig_dir = report.out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    order = ["scenario", "gpu", "tp", "replicas", "offered_rate_rps", "max_num_seqs", "run"]
    table = curves.run_table(runs).sort_values(order, kind="stable")
    table.to_csv(report.out_dir / "runs.csv", index=False)
    names = ", ".join(dict.fromkeys(table["scenario"]))

    def add(name: str, title: str, caption: str, frame: pd.DataFrame, plot) -> None:
        stem = fig_dir / name
        csv = plots.with_extension(stem, ".csv")
        frame.to_csv(csv, index=False)
        png, svg = plot(frame, title, stem)
        report.figures.append(ReportFigure(name, title, caption, png, svg, csv))

    for c in OVER_RUNS:
        curve = c.make(table)
        if curves.swept_values(curve, c.x) < 2:
            report.skipped.append(f"{c.name}: needs runs of one series at two or more {c.x_words}")
        elif curve[c.y].isna().all():
            report.skipped.append(f"{c.name}: no run has a {c.y} (an [economics] section?)")
        else:
            title = f"{c.name.replace('_', ' ').capitalize()}: {names}"
            add(c.name, title, c.caption, curve, c.plot)
    add(
        "latency_cdfs",
        f"Latency CDFs: {names}",
        "Empirical CDFs of TTFT, TPOT and end-to-end latency of measured completed requests.",
        curves.latency_cdfs(runs),
        plots.latency_cdfs,
    )
    for run, slug in zip(runs, _unique_slugs([r.label for r in runs]), strict=True):
        add(
            f"utilization_timeline_{slug}",
            f"Utilization timeline: {run.data.scenario.name} ({run.label})",
            "Fleet capacity utilization (requests served, each spread over its time in service, "
            "over the sustainable rate), non-idle fraction, MFU against the bf16 peak, "
            "memory-bandwidth utilization and KV occupancy; queued and running requests; decode "
            "batch, per time window.",
            curves.utilization_timeline(run, window_s),
            plots.utilization_timeline,
        )
        add(
            f"fleet_over_time_{slug}",
            f"Fleet over time: {run.data.scenario.name} ({run.label})",
            "Offered load, replicas by state (fleet.parquet), capacity utilization, and the "
            "margin of each window (revenue of the requests completed in it against the cost "
            "of the GPU time provisioned in it).",
            curves.fleet_over_time(run, window_s),
            plots.fleet_over_time,
        )
        if len(run.data.spec.pools) > 1:
            add(
                f"pool_utilization_{_slug(run.label)}",
                f"Utilization by pool: {run.data.scenario.name} ({run.label})",
                "Each pool's capacity utilization and KV occupancy (over its replicas) and its "
                "running requests, per time window.",
                curves.pool_utilization_timeline(run, window_s),
                plots.pool_utilization_timeline,
            )
    pools = curves.pool_table(runs)
    pools.to_csv(report.out_dir / "pools.csv", index=False)
    several = [run.label for run in runs if len(run.data.spec.pools) > 1]
    pools = pools[pools["run"].isin(several)]  # a run of one pool: the fleet tables say it all
    report.html.write_text(_html(report, table, pools, names), encoding="utf-8")
    report.markdown.write_text(_markdown(report, table, pools, names), encoding="utf-8")
    return report


# ----------------------------------------------------------------------------- tables


def _fmt(spec: str, scale: float = 1.0) -> Formatter:
    def f(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, int | float):
            return format(value * scale if scale != 1.0 else value, spec)
        return str(value)

    return f


WINDOW_NOTE = (
    "Every number is computed from the runs' traces, over each run's measurement window (end of "
    "the warm-up to the last arrival): latency of the requests that arrived in it, throughput, "
    "utilization, cost and revenue of the work done in it; money in USD (docs/economics.md)."
)
TEXT = _fmt("")
PERFORMANCE = {
    "run": ("run", TEXT),
    "scenario": ("scenario", TEXT),
    "gpu": ("GPU", TEXT),
    "tp": ("tp", TEXT),
    "replicas": ("replicas", TEXT),
    "offered_rate_rps": ("load (req/s)", _fmt(".3g")),
    "completed": ("completed", TEXT),
    "output_tokens_per_s": ("output tok/s", _fmt(".0f")),
    "capacity_utilization": ("capacity util %", _fmt(".1f", 100)),
    "nonidle_fraction": ("non-idle %", _fmt(".1f", 100)),
    "mfu_bf16_peak": ("MFU % (bf16)", _fmt(".1f", 100)),
    "kv_occupancy_mean": ("KV %", _fmt(".1f", 100)),
    "ttft_p99_s": ("TTFT p99 ms", _fmt(".0f", 1e3)),
    "tpot_p99_s": ("TPOT p99 ms", _fmt(".1f", 1e3)),
}
MONEY = {
    "run": ("run", TEXT),
    "pricing": ("pricing", TEXT),
    "gpu_hours": ("GPU-h", _fmt(".3f")),
    "cost_usd": ("cost $", _fmt(".2f")),
    "revenue_usd": ("revenue $", _fmt(".2f")),
    "margin": ("margin %", _fmt(".1f", 100)),
    "profit_usd_per_hour": ("profit $/h", _fmt(".2f")),
    "revenue_per_gpu_hour_usd": ("revenue $/GPU-h", _fmt(".2f")),
    "cost_per_million_input_tokens_usd": ("cost $/1M in", _fmt(".3f")),
    "cost_per_million_output_tokens_usd": ("cost $/1M out", _fmt(".3f")),
    "cost_per_million_tokens_usd": ("cost $/1M all", _fmt(".3f")),
    "break_even_price_multiplier": ("break-even x prices", _fmt(".3f")),
    "price_cut_headroom": ("price cut headroom %", _fmt(".1f", 100)),
}


POOLS = {
    "run": ("run", TEXT),
    "pool": ("pool", TEXT),
    "gpu": ("GPU", TEXT),
    "tp": ("tp", TEXT),
    "replicas": ("replicas", TEXT),
    "model": ("model", TEXT),
    "role": ("role", TEXT),
    "completed": ("completed", TEXT),
    "requests_per_s": ("req/s", _fmt(".2f")),
    "output_tokens_per_s": ("output tok/s", _fmt(".0f")),
    "capacity_utilization": ("capacity util %", _fmt(".1f", 100)),
    "nonidle_fraction": ("non-idle %", _fmt(".1f", 100)),
    "kv_occupancy_mean": ("KV %", _fmt(".1f", 100)),
    "cost_usd": ("cost $", _fmt(".2f")),
    "revenue_usd": ("revenue $", _fmt(".2f")),
    "margin": ("margin %", _fmt(".1f", 100)),
}
POOLS_NOTE = (
    "Per pool of each run with several pools: its measured requests, the throughput it served "
    "(a prefill pool's: the requests it prefilled, a decode pool's: those it decoded) and its "
    "replicas' utilization (capacity utilization against its own capacity; none for prefill "
    "and decode pools), and its cost and revenue over the measurement window (pools' costs add "
    "up to the fleet's; a prefill pool earns the prompts' price, a decode pool the outputs')."
)


def _rows(table: pd.DataFrame, columns: dict[str, tuple[str, Formatter]]) -> list[list[str]]:
    records = table.to_dict("records")  # keeps each column's type (iterrows would upcast ints)
    return [[fmt(row[c]) for c, (_, fmt) in columns.items()] for row in records]


# ----------------------------------------------------------------------------- HTML


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 2em 0; } img { max-width: 100%; } figcaption { color: #555; }
"""


def _html_table(table: pd.DataFrame, columns: dict[str, tuple[str, Formatter]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in _rows(table, columns)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(report: Report, table: pd.DataFrame, pools: pd.DataFrame, names: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Report: {html.escape(names)}</title><style>{CSS}</style></head><body>",
        f"<h1>Report: {html.escape(names)}</h1>",
        f"<p>{len(table)} run(s). {WINDOW_NOTE}</p>",
        "<h2>Performance</h2>",
        _html_table(table, PERFORMANCE),
        "<h2>Economics</h2>",
        _html_table(table, MONEY),
    ]
    if len(pools):
        parts += ["<h2>Pools</h2>", f"<p>{POOLS_NOTE}</p>", _html_table(pools, POOLS)]
    parts.append("<h2>Figures</h2>")
    for f in report.figures:
        data = base64.b64encode(f.png.read_bytes()).decode("ascii")
        rel = f.csv.relative_to(report.out_dir).as_posix()
        parts.append(
            f'<figure id="{f.name}"><img alt="{html.escape(f.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(f.caption)} '
            f"Data: <code>{html.escape(rel)}</code>.</figcaption></figure>"
        )
    if report.skipped:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in report.skipped)
        parts.append(f"<h2>Curves not drawn</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- Markdown


def _md_table(table: pd.DataFrame, columns: dict[str, tuple[str, Formatter]]) -> str:
    head = "| " + " | ".join(label for label, _ in columns.values()) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(row) + " |" for row in _rows(table, columns)]
    return "\n".join([head, rule, *body])


def _markdown(report: Report, table: pd.DataFrame, pools: pd.DataFrame, names: str) -> str:
    parts = [
        f"# Report: {names}",
        "",
        f"{len(table)} run(s). {WINDOW_NOTE}",
        "",
        "## Performance",
        "",
        _md_table(table, PERFORMANCE),
        "",
        "## Economics",
        "",
        _md_table(table, MONEY),
        "",
    ]
    if len(pools):
        parts += ["## Pools", "", POOLS_NOTE, "", _md_table(pools, POOLS), ""]
    parts += ["## Figures", ""]
    for f in report.figures:
        png = f.png.relative_to(report.out_dir).as_posix()
        csv = f.csv.relative_to(report.out_dir).as_posix()
        parts += [
            f"### {f.title}",
            "",
            f"![{f.title}]({png})",
            "",
            f"{f.caption} Data: `{csv}`.",
            "",
        ]
    if report.skipped:
        parts += ["## Curves not drawn", "", *[f"- {s}" for s in report.skipped], ""]
    return "\n".join(parts)
