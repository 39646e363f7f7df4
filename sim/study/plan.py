"""Capacity planning: the fewest replicas that meet SLOs at a rate, the highest rate a fleet holds.

A point (one fleet at one rate, run for several seeds) meets an SLO only if the upper end of the
95% interval of its metric across seeds is within the limit, and it must not be saturated: the
mean growth of its backlog over seeds is a saturated fleet's (:mod:`analysis.saturation`) and
its 95% interval lies above zero; a saturated fleet's latency only says how long the run was.
Searches assume that more replicas never hurt and a higher rate never helps.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.economics import SECONDS_PER_HOUR
from analysis.saturation import MIN_GROWTH_REQUESTS, backlog_grows
from sim.catalog import builtin_accelerators, canonical_id
from sim.errors import UserError
from sim.prices import default_gpu_price, gpu_price
from sim.resolve import resolve
from sim.rundir import check_study_out
from sim.scenario import Scenario, scenario_from_dict
from sim.study.executors import Executor, open_executor
from sim.study.grid import make_point
from sim.study.sweep import (
    ScenarioLike,
    ScenarioSource,
    execute,
    layout_runs,
    point_results,
    scenario_source,
)
from sim.workload import replay_rate_per_s

LATENCIES = ("ttft", "tpot", "e2e", "queue")
STATISTICS = ("mean", "p50", "p90", "p99")
MAX_DOUBLINGS = 20
Log = Callable[[str], None]


@dataclass(frozen=True)
class Slo:
    """An upper limit on a summary metric, e.g. ttft_p99 <= 1.0 s (``latency_s.ttft.p99``)."""

    name: str
    metric: str
    limit: float


def parse_slo(text: str) -> Slo:
    """``ttft_p99=1.0`` (latency ttft/tpot/e2e/queue, statistic mean/p50/p90/p99, seconds)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    allowed = ", ".join(f"{lat}_{{{'|'.join(STATISTICS)}}}" for lat in LATENCIES)
    latency, _, statistic = name.partition("_")
    if not sep or latency not in LATENCIES or statistic not in STATISTICS:
        raise UserError(f"--slo {text!r}: expected NAME=SECONDS with NAME one of {allowed}")
    try:
        limit = float(raw)
    except ValueError:
        raise UserError(f"--slo {name}: {raw!r} is not a number of seconds") from None
    if not limit > 0:
        raise UserError(f"--slo {name}: the limit must be > 0 seconds, got {raw}")
    return Slo(name, f"latency_s.{latency}.{statistic}", limit)


def parse_slos(slos: Iterable[str] | Mapping[str, float], required: bool = True) -> list[Slo]:
    """SLOs from ``NAME=SECONDS`` texts or a mapping; at least one when `required`."""
    items = [f"{k}={v}" for k, v in slos.items()] if isinstance(slos, Mapping) else list(slos)
    if required and not items:
        raise UserError("give at least one --slo, e.g. --slo ttft_p99=1.0")
    return [parse_slo(s) for s in items]


@dataclass(frozen=True)
class Verdict:
    """How one point fared: feasible = every SLO met by its upper bound, and not saturated."""

    feasible: bool
    saturated: bool
    headroom: float
    reason: str
    row: dict = field(repr=False)


def judge(row: Mapping, slos: list[Slo]) -> Verdict:
    """The verdict on a results row (see the module docstring for the rules)."""
    growth, growth_low = row["saturation.backlog_growth"], row["saturation.backlog_growth.ci_low"]
    arrivals = row["saturation.offered_per_s"] * row["window.duration_s"]
    load = row.get("saturation.offered_load", math.nan)  # NaN: capacity unknown
    saturated = backlog_grows(growth, arrivals, load) and not growth_low <= 0
    missed, headroom = [], math.inf
    for slo in slos:
        upper = _upper(row, slo.metric)
        headroom = min(headroom, 1.0 - upper / slo.limit) if math.isfinite(upper) else -math.inf
        if not upper <= slo.limit:
            missed.append(f"{slo.name} {upper:.4g} > {slo.limit:g}")
    if saturated:
        missed.insert(0, f"saturated (backlog grows by {growth:.1f} requests)")
    met = "meets SLOs" if slos else "not saturated"
    return Verdict(not missed, saturated, headroom, "; ".join(missed) or met, dict(row))


def _upper(row: Mapping, metric: str) -> float:
    """Upper end of the interval; the mean itself when one seed gives no interval."""
    if metric not in row or not math.isfinite(row[metric]):
        return math.nan
    high = row[f"{metric}.ci_high"]
    return high if math.isfinite(high) else row[metric]


class RunFailed(Exception):
    """A run of a point raised: the search for this option stops with that error."""


class Evaluator:
    """Runs points (each for `seeds` seeds) into ``out/points`` and judges them; reuses runs."""

    def __init__(
        self,
        src: ScenarioSource,
        overrides: tuple[str, ...],
        slos: list[Slo],
        seeds: int,
        out: Path,
        ex: Executor,
        log: Log,
    ) -> None:
        self.src, self.overrides, self.slos, self.seeds = src, overrides, slos, seeds
        self.out, self.ex, self.log = out, ex, log
        self.rows: list[dict] = []

    def results(self, point_overrides: tuple[str, ...], seeds: int | None = None) -> dict:
        """The results row of a point (mean and interval of each metric)."""
        point = make_point(point_overrides)
        runs = layout_runs(self.src, [point], seeds or self.seeds, self.out, self.overrides)
        table = execute(runs, self.ex)
        failed = table[table["status"] == "failed"]
        if len(failed):
            first = failed.iloc[0]
            raise RunFailed(f"{first['error']} (see {first['run_dir']}.error.txt)")
        return point_results(table, [point]).iloc[0].to_dict()

    def __call__(self, point_overrides: tuple[str, ...]) -> Verdict:
        verdict = judge(self.results(point_overrides), self.slos)
        self.rows.append({**verdict.row, "feasible": verdict.feasible, "reason": verdict.reason})
        self.log(f"  {' '.join(point_overrides)}: {verdict.reason}")
        return verdict


def fewest_replicas(feasible: Callable[[int], bool], guess: int, max_replicas: int) -> int | None:
    """Smallest n in [1, max_replicas] with feasible(n), searched from `guess`: its neighbour
    first (a throughput guess is usually off by one at most), then steps doubling, then bisection.
    """
    n = min(max(guess, 1), max_replicas)
    if feasible(n):
        if n == 1 or not feasible(n - 1):
            return n
        low, high = 0, n - 1
    else:
        low, step = n, 1
        while True:
            if low == max_replicas:
                return None
            n = min(low + step, max_replicas)
            if feasible(n):
                high = n
                break
            low, step = n, 2 * step
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if feasible(mid) else (mid, high)
    return high


@dataclass(frozen=True)
class RateSearch:
    """The highest feasible rate found (req/s) with its verdict, and the lowest infeasible one."""

    rate: float | None
    at: Verdict | None
    limit: Verdict | None


def highest_rate(check: Callable[[float], Verdict], start: float, tolerance: float) -> RateSearch:
    """Highest feasible arrival rate to within `tolerance` (relative); rate None when even
    start / 2**20 fails, limit None when even start * 2**20 holds.

    Brackets by doubling or halving from `start`; a saturated point's departure rate (the
    fleet's throughput, its capacity) is tried next, then bisection.
    """
    low: tuple[float, Verdict] | None = None
    high: tuple[float, Verdict] | None = None
    rate = _round(start)
    for _ in range(MAX_DOUBLINGS + 1):
        verdict = check(rate)
        if verdict.feasible:
            low = (rate, verdict)
        else:
            high = (rate, verdict)
        if low is not None and high is not None:
            break
        rate = _round(2 * low[0]) if low is not None else _next_below(high, tolerance)
    else:
        return RateSearch(*(low or (None, None)), high[1] if high else None)
    while high[0] - low[0] > tolerance * high[0]:
        rate = _next_between(low[0], high, tolerance)
        verdict = check(rate)
        if verdict.feasible:
            low = (rate, verdict)
        else:
            high = (rate, verdict)
    return RateSearch(low[0], low[1], high[1])


def _round(rate: float) -> float:
    """Rates keep 6 significant digits, so point names and reused runs stay stable."""
    return float(f"{rate:.6g}")


def _capacity(verdict: Verdict, tolerance: float) -> float | None:
    """Just below the departure rate of a saturated point: the fleet's measured capacity."""
    if not verdict.saturated:
        return None
    return _round(verdict.row["saturation.departures_per_s"] * (1.0 - tolerance / 2))


def _next_below(high: tuple[float, Verdict], tolerance: float) -> float:
    guess = _capacity(high[1], tolerance)
    return guess if guess is not None and 0 < guess < high[0] else _round(high[0] / 2)


def _next_between(low: float, high: tuple[float, Verdict], tolerance: float) -> float:
    guess = _capacity(high[1], tolerance)
    mid = _round((low + high[0]) / 2)
    return guess if guess is not None and low < guess < mid else mid


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One GPU type and tensor-parallel degree, with the price of one of its GPUs (USD/h)."""

    gpu: str
    tp: int
    usd_per_gpu_hour: float
    set_price: bool  # write the price into the runs' [economics] (rented pricing modes)

    def overrides(self) -> tuple[str, ...]:
        """``--set`` items for this option (and its GPU price, where the runs are priced)."""
        items = (f"fleet.gpu={json.dumps(self.gpu)}", f"fleet.tp={self.tp}")
        if self.set_price:
            items += (f"economics.gpu_usd_per_hour={self.usd_per_gpu_hour}",)
        return items

    def usd_per_hour(self, replicas: int, row: Mapping) -> float:
        """Cost of the fleet for one hour: the runs' ``economics.cost_usd`` per hour of their
        measurement window (GPUs, overhead and energy; docs/economics.md), or GPUs x price
        without [economics]."""
        cost = row.get("economics.cost_usd", math.nan)
        if math.isfinite(cost):
            return cost / row["window.duration_s"] * SECONDS_PER_HOUR
        return replicas * self.tp * self.usd_per_gpu_hour


def _options(
    src: ScenarioSource,
    overrides: tuple[str, ...],
    gpus: Iterable[str] | None,
    tps: Iterable[int] | None,
    prices: Mapping[str, float] | None,
) -> list[Option]:
    """The GPU x TP options, each priced (see :func:`_gpu_price`)."""
    base = scenario_from_dict(src.data, src.source, list(overrides))
    if base.fleet.pools:
        raise UserError(
            f"{src.source}: plan varies fleet.gpu, fleet.tp and fleet.replicas; give a scenario "
            f"whose [fleet] is a single pool (plan --mix builds the pools)"
        )
    ids = [*builtin_accelerators(), *base.accelerators]
    given = {canonical_id(gpu, ids): usd for gpu, usd in (prices or {}).items()}
    gpus = [canonical_id(gpu, ids) for gpu in gpus] if gpus else None
    eco = base.economics
    owned = eco is not None and eco.pricing == "owned"
    if owned and (given or any(g != base.fleet.gpu for g in gpus or [])):
        raise UserError(
            "economics.pricing = 'owned' prices only the scenario's own GPU from its purchase "
            "price; compare GPU types (--gpu, --price) under a rented pricing mode"
        )
    return [
        Option(gpu, tp, _gpu_price(base, gpu, given), eco is not None and not owned)
        for gpu in gpus or [base.fleet.gpu]
        for tp in tps or [base.fleet.tp]
    ]


def _gpu_price(base: Scenario, gpu: str, given: Mapping[str, float]) -> float:
    """USD per GPU-hour: --price, else the price the scenario's runs resolve to for its own GPU
    (sim.prices.gpu_price), else the default of the scenario's pricing mode (on_demand without
    [economics]) from the same table."""
    if gpu in given:
        return given[gpu]
    eco = base.economics
    pricing = eco.pricing if eco is not None else "on_demand"
    if eco is not None and gpu == base.fleet.gpu:
        price = gpu_price(gpu, eco)  # what the scenario's own runs resolve to
    else:
        price = default_gpu_price(gpu, pricing)
    if price is None:
        raise UserError(
            f"no price for gpu '{gpu}' with pricing '{pricing}': add --price {gpu}=USD_PER_GPU_HOUR"
            f" (docs/economics.md lists the defaults)"
        )
    return price.usd_per_gpu_hour


@dataclass
class PlanResult:
    """Options ranked (cheapest first, or most rate per dollar), every point judged, the folder."""

    options: pd.DataFrame
    evaluations: pd.DataFrame
    out: Path


def _quiet(_: str) -> None:
    """Default log: say nothing."""


def _study(
    scenario: ScenarioLike,
    slos: Iterable[str] | Mapping[str, float],
    seeds: int,
    overrides: Iterable[str],
    slos_required: bool = True,
) -> tuple[ScenarioSource, list[Slo], tuple[str, ...]]:
    if seeds < 2:
        raise UserError(f"--seeds {seeds}: planning needs at least 2 seeds for an interval")
    return scenario_source(scenario), parse_slos(slos, slos_required), tuple(overrides)


def plan(
    scenario: ScenarioLike,
    rate: float,
    slos: Iterable[str] | Mapping[str, float],
    gpus: Iterable[str] | None = None,
    tps: Iterable[int] | None = None,
    max_replicas: int = 64,
    seeds: int = 3,
    prices: Mapping[str, float] | None = None,
    out: str | Path = "runs/plan",
    overrides: Iterable[str] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    log: Log = _quiet,
    mix: bool = False,
    disaggregate: bool = False,
) -> PlanResult:
    """For each GPU type and TP degree, the fewest replicas meeting every SLO at `rate` req/s;
    with `mix`, also fleets of both of the two `gpus` (:mod:`sim.study.mix`); with
    `disaggregate`, the cheapest counts of the scenario's prefill and decode pools beside the
    colocated fleet (:mod:`sim.study.disaggregate`).

    prices: USD per GPU-hour by GPU id (the scenario's [economics] price is used for its GPU).
    """
    src, slo_list, overrides = _study(scenario, slos, seeds, overrides)
    if mix and disaggregate:
        raise UserError("--mix and --disaggregate plan different fleets; give one of them")
    if mix:
        from sim.study.mix import check_mix

        check_mix(None if gpus is None else list(gpus))
    split_src = None
    if disaggregate:
        from sim.study.disaggregate import colocated_source, split_pools

        pools = split_pools(src, overrides)
        split_src, src = src, colocated_source(src, pools[0])
    if not rate > 0:
        raise UserError(f"--rate {rate}: must be > 0 requests per second")
    if max_replicas < 1:
        raise UserError(f"--max-replicas {max_replicas}: must be at least 1")
    options = _options(src, overrides, gpus, tps, prices)
    rate_item = f"workload.rate={_round(rate)}"
    # every option's scenario is checked before anything runs
    unfit = {o: _unfit(src, (*overrides, *o.overrides(), rate_item)) for o in options}
    out = check_study_out(out)
    rows = []
    with open_executor(workers, scheduler) as ex:
        ev = Evaluator(src, overrides, slo_list, seeds, out, ex, log)
        for option in options:
            log(f"{option.gpu} tp={option.tp}:")
            if unfit[option] is not None:
                rows.append({"gpu": option.gpu, "tp": option.tp, "status": unfit[option]})
            else:
                rows.append(_plan_option(ev, option, rate_item, max_replicas))
            if split_src is not None:
                from sim.study.disaggregate import disaggregated_rows

                split = Evaluator(split_src, overrides, slo_list, seeds, out, ex, log)
                rows += disaggregated_rows(split, option, pools, rate_item, rows[-1], max_replicas)
                ev.rows += split.rows
        if mix:
            rows += _mix_rows(ev, list(zip(options, rows, strict=True)), rate_item)
    table = pd.DataFrame(rows)
    columns = [*PLAN_COLUMNS, *(slo.name for slo in slo_list), "status"]
    extra = [c for c in table.columns if c not in columns]  # mix
    table = table.reindex(columns=[*columns, *extra])  # every column even when none is met
    table = table.sort_values("usd_per_hour", na_position="last", kind="stable")
    if mix:
        table["mix"] = table["mix"].fillna("")  # the options of one GPU type
    if disaggregate:
        table["fleet"] = table["fleet"].fillna("colocated")
        first = ["gpu", "tp", "fleet", "prefill", "decode"]
        table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
    return _finish(table.reset_index(drop=True), ev, out)


# columns of plan.csv before the SLOs' and the status (an option not met fills only gpu, tp
# and status, which says why)
PLAN_COLUMNS = ("gpu", "tp", "replicas", "gpus", "usd_per_gpu_hour", "usd_per_hour", "margin")
PLAN_COLUMNS += ("slo_headroom",)
MAX_RATE_COLUMNS = ("gpu", "tp", "replicas", "max_rate_per_s", "capacity_per_s", "usd_per_hour")
MAX_RATE_COLUMNS += ("usd_per_hour_per_rate", "slo_headroom", "limited_by", "status")


def _mix_rows(ev: Evaluator, per_type: list[tuple[Option, dict]], rate_item: str) -> list[dict]:
    """Mixes of the two GPU types, each at its cheapest tensor-parallel degree that met the SLOs
    alone (its replica count bounds the mix search)."""
    from sim.study.mix import mix_source, plan_mixes

    gpus = list(dict.fromkeys(option.gpu for option, _ in per_type))
    best: dict[str, tuple[Option, dict]] = {}
    for option, row in per_type:
        cheaper = (
            option.gpu not in best or row["usd_per_hour"] < best[option.gpu][1]["usd_per_hour"]
        )
        if row["status"] == "ok" and cheaper:
            best[option.gpu] = (option, row)
    missing = [gpu for gpu in gpus if gpu not in best]
    if missing:
        return [{"gpu": "+".join(gpus), "status": f"no mix: {', '.join(missing)} alone fails"}]
    (a, row_a), (b, row_b) = best[gpus[0]], best[gpus[1]]
    mixes = Evaluator(
        mix_source(ev.src, a, b), ev.overrides, ev.slos, ev.seeds, ev.out, ev.ex, ev.log
    )
    rows = plan_mixes(mixes, a, row_a["replicas"], b, row_b["replicas"], rate_item)
    ev.rows += mixes.rows
    return rows


def _unfit(src: ScenarioSource, items: tuple[str, ...]) -> str | None:
    """Why an option cannot be deployed (its scenario does not resolve: the model does not fit
    its GPUs, ...) as a status, or None. UserError when its scenario is not even valid."""
    try:
        scenario = scenario_from_dict(src.data, src.source, list(items))
    except UserError as exc:
        raise UserError(f"plan point {' '.join(items)}: {exc}") from None
    try:
        resolve(scenario)
    except UserError as exc:
        return f"error: {exc}"
    return None


def _plan_option(ev: Evaluator, option: Option, rate_item: str, max_replicas: int) -> dict:
    base = {"gpu": option.gpu, "tp": option.tp}
    items = (*option.overrides(), rate_item)
    verdicts: dict[int, Verdict] = {}

    def feasible(n: int) -> bool:
        verdicts[n] = ev((*items, f"fleet.replicas={n}"))
        return verdicts[n].feasible

    try:
        guess = _replicas_guess(ev, (*items, "fleet.replicas=1"))
        n = fewest_replicas(feasible, guess, max_replicas)
    except RunFailed as exc:
        return {**base, "status": f"error: {exc}"}
    if n is None:
        why = verdicts[max_replicas].reason
        return {**base, "status": f"not met with {max_replicas} replicas: {why}"}
    v = verdicts[n]
    return {
        **base,
        "replicas": n,
        "gpus": n * option.tp,
        "usd_per_gpu_hour": option.usd_per_gpu_hour,
        "usd_per_hour": option.usd_per_hour(n, v.row),
        "margin": v.row.get("economics.margin", math.nan),
        "slo_headroom": v.headroom,
        **{slo.name: _upper(v.row, slo.metric) for slo in ev.slos},
        "status": "ok",
    }


def _replicas_guess(ev: Evaluator, probe: tuple[str, ...]) -> int:
    """ceil(rate / throughput of one saturated replica), from one seed of the point `probe`
    (whose items set the replicas searched for to one)."""
    if scenario_from_dict(ev.src.data, ev.src.source, list(ev.overrides)).sim.duration_s:
        probe += ("sim.drain=false",)  # a saturated replica need not clear its backlog
    row = ev.results(probe, seeds=1)
    departures, offered = row["saturation.departures_per_s"], row["saturation.offered_per_s"]
    guess = 1
    if row["saturation.backlog_growth"] >= MIN_GROWTH_REQUESTS and departures > 0:
        guess = math.ceil(offered / departures)
    ev.log(f"  one replica serves {departures:.4g} of {offered:.4g} req/s: first guess {guess}")
    return guess


def max_rate(
    scenario: ScenarioLike,
    slos: Iterable[str] | Mapping[str, float] = (),
    gpus: Iterable[str] | None = None,
    tps: Iterable[int] | None = None,
    seeds: int = 3,
    tolerance: float = 0.02,
    prices: Mapping[str, float] | None = None,
    out: str | Path = "runs/max-rate",
    overrides: Iterable[str] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    log: Log = _quiet,
) -> PlanResult:
    """Highest arrival rate (req/s) the scenario's fleet sustains within every SLO, per option;
    without SLOs, the highest rate at which it is not saturated (its saturation throughput).

    Starts from the scenario's workload.rate; `tolerance` is relative (0.02: within 2%).
    """
    src, slo_list, overrides = _study(scenario, slos, seeds, overrides, slos_required=False)
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance {tolerance}: must be between 0 and 1")
    options = _options(src, overrides, gpus, tps, prices)
    base = scenario_from_dict(src.data, src.source, list(overrides))
    knob = _rate_knob(base, src.source)
    unfit = {o: _unfit(src, (*overrides, *o.overrides())) for o in options}
    out = check_study_out(out)
    rows = []
    with open_executor(workers, scheduler) as ex:
        ev = Evaluator(src, overrides, slo_list, seeds, out, ex, log)
        for option in options:
            log(f"{option.gpu} tp={option.tp} x{base.fleet.replicas}:")
            if unfit[option] is not None:
                row = {"gpu": option.gpu, "tp": option.tp, "replicas": base.fleet.replicas}
                rows.append({**row, "status": unfit[option]})
                continue
            rows.append(_max_rate_option(ev, option, base.fleet.replicas, knob, tolerance))
    table = pd.DataFrame(rows, columns=list(MAX_RATE_COLUMNS))
    table = table.sort_values("usd_per_hour_per_rate", na_position="last", kind="stable")
    return _finish(table.reset_index(drop=True), ev, out)


@dataclass(frozen=True)
class RateKnob:
    """How a rate (req/s) is set: ``workload.rate``, or the ``load_scale`` of a trace replay."""

    start: float  # the scenario's own rate, req/s
    per_scale: float | None  # a replay's req/s at load_scale 1; None where workload.rate exists

    def item(self, rate: float) -> str:
        """The ``--set`` item that offers `rate` requests per second."""
        if self.per_scale is None:
            return f"workload.rate={rate}"
        return f"workload.load_scale={_round(rate / self.per_scale)}"


def _rate_knob(base: Scenario, source: str) -> RateKnob:
    wl = base.workload
    if wl.rate is not None:
        return RateKnob(wl.rate, None)
    if wl.arrival == "trace":
        per_scale = replay_rate_per_s(base, resolve(base).trace_files)
        return RateKnob(_round(per_scale * wl.load_scale), per_scale)
    raise UserError(
        f"{source}: --max-rate varies workload.rate (or a trace's load_scale); arrival = "
        f"'{wl.arrival}' has neither (use poisson, gamma, diurnal or trace)"
    )


def _max_rate_option(
    ev: Evaluator, option: Option, replicas: int, knob: RateKnob, tolerance: float
) -> dict:
    row = {"gpu": option.gpu, "tp": option.tp, "replicas": replicas}
    items = option.overrides()
    try:
        found = highest_rate(lambda r: ev((*items, knob.item(r))), knob.start, tolerance)
    except RunFailed as exc:
        return {**row, "status": f"error: {exc}"}
    if found.rate is None or found.at is None:
        return {**row, "status": "no rate meets the SLOs", "limited_by": found.limit.reason}
    usd = option.usd_per_hour(replicas, found.at.row)
    return {
        **row,
        "max_rate_per_s": found.rate,
        "capacity_per_s": found.at.row.get("utilization.capacity_per_s", math.nan),
        "usd_per_hour": usd,
        "usd_per_hour_per_rate": usd / found.rate,
        "slo_headroom": found.at.headroom,
        "limited_by": found.limit.reason if found.limit else "nothing up to the search limit",
        "status": "ok",
    }


def _finish(options: pd.DataFrame, ev: Evaluator, out: Path) -> PlanResult:
    """Write plan.csv / plan.parquet and evaluations.parquet, and return them."""
    evaluations = pd.DataFrame(ev.rows)
    out.mkdir(parents=True, exist_ok=True)
    options.to_csv(out / "plan.csv", index=False)
    options.to_parquet(out / "plan.parquet", index=False)
    evaluations.to_parquet(out / "evaluations.parquet", index=False)
    return PlanResult(options, evaluations, out)


def stderr_log(message: str) -> None:
    """Log to stderr (the command line's progress)."""
    print(message, file=sys.stderr, flush=True)
