"""Cost, revenue and margin of a run, from its traces and the scenario's prices (USD).

Cost of a span of time = provisioned GPU-hours x (GPU price per hour + overhead per hour) +
energy, where energy = GPUs x TDP x (busy power x non-idle time + idle power x idle time) x PUE
x price per kWh. The steady state is the measurement window (analysis.window): its cost, and the
revenue of the requests completed inside it (their tokens at their class's prices, less SLO
refunds). The cost is split between input and output tokens by the GPU time of prompt and
decode work (analysis.attribution). Whole-run totals, warm-up and drain tail included, are kept
beside. docs/economics.md defines every key of the returned block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.attribution import request_gpu_s, step_split
from analysis.disaggregation import first_replica
from analysis.fleet import billed_gpu_hours, seconds_by_state
from analysis.metrics import TRACE_CLASS, distribution, slo_missed
from analysis.rundata import RunData
from analysis.utilization import nonidle_s_per_replica
from analysis.window import Window, completed_in, measurement_window
from sim.economics_config import EconomicsConfig
from sim.runspec import PoolSpec
from sim.scenario import Scenario
from sim.workload_config import RequestClass

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
CACHED_COLUMN = "cached_prompt_tokens"  # prompt tokens served from the prefix cache


def gpu_hours(data: RunData, pool: PoolSpec, span: Window) -> float:
    """Billed GPU time of a pool over `span` (``analysis.fleet``): every GPU of every replica
    while provisioned, busy or not; the whole commitment when reserved or owned."""
    return billed_gpu_hours(data, pool, span)


def margin_with_background(money: dict, value_usd: float) -> float | None:
    """The whole run's margin when the value of background work (USD) counts as revenue beside
    serving's: (revenue + value - cost) / (revenue + value), from the economics block `money`
    (its totals; None without prices)."""
    totals = money["totals"]
    if totals["revenue_usd"] is None:
        return None
    earned = totals["revenue_usd"] + value_usd
    return _ratio(earned - totals["cost_usd"], earned)


def energy_kwh(data: RunData, pool: PoolSpec, span: Window) -> float:
    """Facility energy of a pool's GPUs over `span` (kWh, PUE included); 0 without [energy].

    Busy: running iterations or background work; idle: the rest of the provisioned time but
    failed (a failed replica is off).
    """
    eco = data.scenario.economics
    if eco is None or eco.energy is None:
        return 0.0
    e = eco.energy
    mine = data.pool_replicas(pool)
    states = seconds_by_state(data, span).iloc[mine]
    busy_s = nonidle_s_per_replica(data, span)[mine] + states["background"].to_numpy()
    idle_s = states.drop(columns=["failed"]).sum(axis=1).to_numpy() - busy_s
    watt_s = (e.busy_power_fraction * busy_s + e.idle_power_fraction * idle_s).sum()
    watt_s *= pool.accelerator.tdp_w
    return float(watt_s * pool.tp * e.pue / JOULES_PER_KWH)


@dataclass(frozen=True)
class Cost:
    """What a span of time costs (USD; energy in kWh)."""

    gpu_hours: float
    gpu_usd: float
    overhead_usd: float
    energy_kwh: float
    energy_usd: float

    @property
    def total_usd(self) -> float:
        return self.gpu_usd + self.overhead_usd + self.energy_usd

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))


def _fields(cost: Cost) -> tuple[float, ...]:
    return (cost.gpu_hours, cost.gpu_usd, cost.overhead_usd, cost.energy_kwh, cost.energy_usd)


def pool_costs(data: RunData, span: Window) -> dict[str, Cost]:
    """The cost of each pool over `span`, by pool name (pool order); needs [economics]."""
    eco = data.scenario.economics
    assert eco is not None
    out = {}
    for pool in data.spec.pools:
        assert pool.price is not None  # resolved with [economics]
        hours, kwh = gpu_hours(data, pool, span), energy_kwh(data, pool, span)
        out[pool.name] = Cost(
            hours,
            hours * pool.price.usd_per_gpu_hour,
            hours * eco.overhead_usd_per_gpu_hour,
            kwh,
            kwh * (eco.energy.usd_per_kwh if eco.energy is not None else 0.0),
        )
    return out


def span_cost(data: RunData, span: Window) -> Cost:
    """The cost of the fleet over `span`: the sum of its pools' (needs [economics])."""
    costs = list(pool_costs(data, span).values())
    return sum(costs[1:], costs[0])


def _first_given(*values: float | None) -> float:
    """The first value that is not None (the last argument always is given)."""
    return next(v for v in values if v is not None)


def _class_prices(scenario: Scenario, eco: EconomicsConfig) -> pd.DataFrame:
    """Per class name: input, cached-input and output prices (USD per 1e6 tokens).

    A class's own price wins, then the [economics] default; cached-prefix tokens fall back to
    the class's input price. Replayed requests without classes are the class 'trace'.
    """
    rows = {}
    for c in [*scenario.workload.classes, RequestClass(name=TRACE_CLASS)]:
        input_price = _first_given(c.input_usd_per_million, eco.input_usd_per_million)
        rows.setdefault(
            c.name,
            (
                input_price,
                _first_given(
                    c.cached_input_usd_per_million, eco.cached_input_usd_per_million, input_price
                ),
                _first_given(c.output_usd_per_million, eco.output_usd_per_million),
            ),
        )
    columns = ["input", "cached_input", "output"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def request_revenue(data: RunData, done: pd.DataFrame) -> pd.DataFrame:
    """Per completed request of `done`: class, tokens, gross and net revenue (USD), SLO miss."""
    eco = data.scenario.economics
    assert eco is not None
    prices = _class_prices(data.scenario, eco).loc[done["class"]].set_axis(done.index)
    cached = done[CACHED_COLUMN]
    uncached = done["prompt_tokens"] - cached
    input_usd = (uncached * prices["input"] + cached * prices["cached_input"]) / 1e6
    output_usd = done["output_tokens"] * prices["output"] / 1e6
    missed = slo_missed(done, data.scenario)
    kept = 1.0 - eco.slo_refund_fraction * missed
    return pd.DataFrame(
        {
            "class": done["class"],
            "input_tokens": done["prompt_tokens"],
            "cached_input_tokens": cached,
            "output_tokens": done["output_tokens"],
            "input_usd": input_usd,
            "output_usd": output_usd,
            "slo_missed": missed,
            "kept": kept,
            "net_usd": (input_usd + output_usd) * kept,
        }
    )


@dataclass(frozen=True)
class Attribution:
    """The window's non-idle GPU time split between prompt and decode work, and each request's
    fraction of those two parts (each sums to 1 over the requests it is given for)."""

    prefill_fraction: float | None
    request_prefill: pd.Series
    request_decode: pd.Series


def attribute(data: RunData, window: Window, done: pd.DataFrame) -> Attribution:
    """Split the GPU time of `window` (analysis.attribution) and share it among `done`."""
    split = step_split(data)
    start, end = split["start_s"].to_numpy(), split["end_s"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.nan_to_num(window.clip(start, end) / (end - start))
    prefill = float((split["prefill_s"] * inside).sum())
    decode = float((split["decode_s"] * inside).sum())
    per_request = request_gpu_s(data, split).loc[done.index]
    return Attribution(
        _ratio(prefill, prefill + decode),
        _shares(per_request["prefill_s"]),
        _shares(per_request["decode_s"]),
    )


def _shares(seconds: pd.Series) -> pd.Series:
    """Fractions of the total (equal shares when nothing was attributed)."""
    total = seconds.sum()
    return seconds / total if total > 0 else pd.Series(1.0 / max(len(seconds), 1), seconds.index)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _per_million(usd: float | None, tokens: float) -> float | None:
    return None if usd is None else _ratio(usd * 1e6, tokens)


_STEADY_MONEY_KEYS = (
    "cost_usd",
    "revenue_usd",
    "margin",
    "profit_usd",
    "profit_usd_per_hour",
    "pricing",
    "gpu_usd_per_hour",
    "gpu_price_source",
    "gpu_cost_usd",
    "overhead_cost_usd",
    "energy_kwh",
    "energy_cost_usd",
    "gross_revenue_usd",
    "input_revenue_usd",
    "output_revenue_usd",
    "slo_refund_usd",
    "slo_missed_requests",
    "cached_input_tokens",
    "input_cost_usd",
    "output_cost_usd",
    "cost_per_million_input_tokens_usd",
    "cost_per_million_output_tokens_usd",
    "cost_per_million_tokens_usd",
    "cost_per_request_usd",
    "revenue_per_gpu_hour_usd",
    "break_even_price_multiplier",
    "break_even_usd_per_million_tokens",
    "price_cut_headroom",
)
_TOTAL_MONEY_KEYS = (
    "cost_usd",
    "revenue_usd",
    "profit_usd",
    "margin",
    "warmup_cost_usd",
    "drain_cost_usd",
)


def economics(data: RunData, window: Window | None = None, target_margin: float = 0.0) -> dict:
    """The economics block of summary.json (USD; keys documented in docs/economics.md).

    Steady state over `window` (default: the measurement window), whole-run figures in
    `totals`; the fleet's costs are the sums of its pools' (:func:`pool_costs`).
    `target_margin` (below 1) sets `price_cut_headroom`. Without an [economics] section only
    GPU-hours are known; every money key is None.
    """
    window = window or measurement_window(data)
    done = completed_in(data, window)
    split = attribute(data, window, done)
    hours = sum(gpu_hours(data, p, window) for p in data.spec.pools)
    whole = Window(0.0, data.simulated_s)
    block = {
        "target_margin": target_margin,
        "gpu_hours": hours,
        "input_gpu_hours": _scaled(hours, split.prefill_fraction),
        "output_gpu_hours": _scaled(hours, _complement(split.prefill_fraction)),
        "requests_billed": int(len(done)),
        "input_tokens": int(done["prompt_tokens"].sum()),
        "output_tokens": int(done["output_tokens"].sum()),
    }
    if data.scenario.economics is None:
        whole_hours = sum(gpu_hours(data, p, whole) for p in data.spec.pools)
        totals = {"gpu_hours": whole_hours, **dict.fromkeys(_TOTAL_MONEY_KEYS)}
        return {**block, **dict.fromkeys(_STEADY_MONEY_KEYS), "classes": {}, "totals": totals}
    cost = span_cost(data, window)
    req = _with_costs(request_revenue(data, done), split, cost.total_usd)
    return {
        **block,
        **_steady_money(data, window, req, cost, split, target_margin),
        "classes": _per_class(req),
        "totals": _totals(data, window, whole),
    }


def _with_costs(req: pd.DataFrame, split: Attribution, cost_usd: float) -> pd.DataFrame:
    """`req` with each request's share of the input and output cost (USD)."""
    prefill = 0.0 if split.prefill_fraction is None else split.prefill_fraction
    return req.assign(
        input_cost_usd=cost_usd * prefill * split.request_prefill,
        output_cost_usd=cost_usd * (1.0 - prefill) * split.request_decode,
    )


def _scaled(value: float, fraction: float | None) -> float | None:
    return None if fraction is None else value * fraction


def _complement(fraction: float | None) -> float | None:
    return None if fraction is None else 1.0 - fraction


def _steady_money(
    data: RunData,
    window: Window,
    req: pd.DataFrame,
    cost: Cost,
    split: Attribution,
    target_margin: float,
) -> dict:
    """Cost, revenue, margin, per-token costs and break-even of the window, whose completed
    requests' revenue and cost are `req` (:func:`request_revenue`, :func:`_with_costs`) and
    whose cost is `cost`."""
    eco = data.scenario.economics
    assert eco is not None
    total = cost.total_usd
    input_cost = _scaled(total, split.prefill_fraction)
    output_cost = None if input_cost is None else total - input_cost
    gross = float((req["input_usd"] + req["output_usd"]).sum())
    revenue = float(req["net_usd"].sum())
    profit = revenue - total
    tokens_in, tokens_out = float(req["input_tokens"].sum()), float(req["output_tokens"].sum())
    per_request = req["input_cost_usd"] + req["output_cost_usd"]
    multiplier = _ratio(total, revenue)  # all token prices x this: revenue = cost
    return {
        "cost_usd": total,
        "revenue_usd": revenue,
        "margin": _ratio(profit, revenue),
        "profit_usd": profit,
        "profit_usd_per_hour": _ratio(profit, window.duration_s / SECONDS_PER_HOUR),
        "pricing": eco.pricing,
        "gpu_usd_per_hour": _mean_price(data.spec.pools, cost.gpu_usd, cost.gpu_hours),
        "gpu_price_source": _price_source(data.spec.pools),
        "gpu_cost_usd": cost.gpu_usd,
        "overhead_cost_usd": cost.overhead_usd,
        "energy_kwh": cost.energy_kwh,
        "energy_cost_usd": cost.energy_usd,
        "gross_revenue_usd": gross,
        "input_revenue_usd": float((req["input_usd"] * req["kept"]).sum()),
        "output_revenue_usd": float((req["output_usd"] * req["kept"]).sum()),
        "slo_refund_usd": gross - revenue,
        "slo_missed_requests": int(req["slo_missed"].sum()),
        "cached_input_tokens": int(req["cached_input_tokens"].sum()),
        "input_cost_usd": input_cost,
        "output_cost_usd": output_cost,
        "cost_per_million_input_tokens_usd": _per_million(input_cost, tokens_in),
        "cost_per_million_output_tokens_usd": _per_million(output_cost, tokens_out),
        "cost_per_million_tokens_usd": _per_million(total, tokens_in + tokens_out),
        "cost_per_request_usd": distribution(per_request),
        "revenue_per_gpu_hour_usd": _ratio(revenue, cost.gpu_hours),
        "break_even_price_multiplier": multiplier,
        "break_even_usd_per_million_tokens": None
        if multiplier is None
        else _per_million(multiplier * gross, tokens_in + tokens_out),
        "price_cut_headroom": None
        if multiplier is None
        else 1.0 - multiplier / (1.0 - target_margin),
    }


def _mean_price(pools: tuple[PoolSpec, ...], gpu_cost: float, hours: float) -> float | None:
    """One pool's GPU price; for several, their GPU-hour weighted mean."""
    if len(pools) == 1:
        assert pools[0].price is not None
        return pools[0].price.usd_per_gpu_hour
    return _ratio(gpu_cost, hours)


def _price_source(pools: tuple[PoolSpec, ...]) -> str:
    """Where the GPU prices come from (each pool's, named, when there are several)."""
    sources = [p.price.source for p in pools if p.price is not None]
    if len(pools) == 1:
        return sources[0]
    return "; ".join(f"{p.name}: {source}" for p, source in zip(pools, sources, strict=True))


def pool_economics(data: RunData, window: Window) -> dict[str, dict[str, float | None]]:
    """Per pool name, over `window`: gpu_hours, cost_usd, revenue_usd (of its requests
    completed in the window) and margin.

    The pools' costs add up to the fleet's cost, their revenues to its revenue: a request's
    input revenue goes to the pool of its first replica, its output revenue to the pool of its
    last (with prefill and decode pools: the prefill pool earns the prompt, the decode pool the
    output; a colocated request's replica earns both). Without [economics] only gpu_hours is
    known.
    """
    if data.scenario.economics is None:
        return {
            p.name: {"gpu_hours": gpu_hours(data, p, window), **dict.fromkeys(_POOL_MONEY_KEYS)}
            for p in data.spec.pools
        }
    req = request_revenue(data, completed_in(data, window))
    done = data.requests.loc[req.index]
    first, last = data.request_pools(first_replica(done)), data.request_pools(done["replica"])
    kept_input, kept_output = req["input_usd"] * req["kept"], req["output_usd"] * req["kept"]
    revenue = kept_input.groupby(first).sum().add(kept_output.groupby(last).sum(), fill_value=0)
    out = {}
    for name, cost in pool_costs(data, window).items():
        earned = float(revenue.get(name, 0.0))
        out[name] = {
            "gpu_hours": cost.gpu_hours,
            "cost_usd": cost.total_usd,
            "revenue_usd": earned,
            "margin": _ratio(earned - cost.total_usd, earned),
        }
    return out


_POOL_MONEY_KEYS = ("cost_usd", "revenue_usd", "margin")


def _per_class(req: pd.DataFrame) -> dict:
    """Per class of the requests completed in the window (their revenue and cost `req`):
    tokens, revenue, attributed cost."""
    out = {}
    for name, g in req.groupby("class", sort=True):
        tokens_in, tokens_out = float(g["input_tokens"].sum()), float(g["output_tokens"].sum())
        input_cost = float(g["input_cost_usd"].sum())
        output_cost = float(g["output_cost_usd"].sum())
        revenue = float(g["net_usd"].sum())
        out[str(name)] = {
            "completed": int(len(g)),
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "revenue_usd": revenue,
            "slo_missed_requests": int(g["slo_missed"].sum()),
            "cost_usd": input_cost + output_cost,
            "margin": _ratio(revenue - input_cost - output_cost, revenue),
            "cost_per_million_input_tokens_usd": _per_million(input_cost, tokens_in),
            "cost_per_million_output_tokens_usd": _per_million(output_cost, tokens_out),
            "cost_per_million_tokens_usd": _per_million(
                input_cost + output_cost, tokens_in + tokens_out
            ),
        }
    return out


def _totals(data: RunData, window: Window, whole: Window) -> dict:
    """The whole run, warm-up and drain tail included: every provisioned GPU-hour and every
    completed request."""
    whole_cost = span_cost(data, whole)
    cost = whole_cost.total_usd
    done = data.requests[data.requests["status"] == "completed"]
    revenue = float(request_revenue(data, done)["net_usd"].sum())
    return {
        "gpu_hours": whole_cost.gpu_hours,
        "cost_usd": cost,
        "revenue_usd": revenue,
        "profit_usd": revenue - cost,
        "margin": _ratio(revenue - cost, revenue),
        "warmup_cost_usd": span_cost(data, Window(0.0, window.start_s)).total_usd,
        "drain_cost_usd": span_cost(data, Window(window.end_s, data.simulated_s)).total_usd,
    }
