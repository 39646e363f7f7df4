"""Cost, revenue and margin of a run, from its traces and the scenario's prices (USD).

Cost = provisioned GPU-hours x (GPU price per hour + overhead per hour) + energy, where energy
= GPUs x TDP x (busy fraction x busy time + idle fraction x idle time) x PUE x price per kWh.
Revenue = every completed request's tokens at its class's prices, less SLO refunds. Both cover
the whole run (warm-up included). docs/economics.md defines every key of the returned block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fleet import billed_gpu_hours, seconds_by_state
from analysis.rundata import RunData
from analysis.utilization import busy_s_per_replica
from sim.runspec import PoolSpec
from sim.scenario import EconomicsConfig, RequestClass, Scenario

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
CACHED_COLUMN = "cached_prompt_tokens"  # prompt tokens served from the prefix cache
TRACE_CLASS = "trace"  # class name of replayed requests when the scenario defines no classes


def gpu_hours(data: RunData, pool: PoolSpec) -> float:
    """Billed GPU time of a pool (``analysis.fleet``): its provisioned GPU-hours, or its whole
    commitment for the run when reserved or owned."""
    return billed_gpu_hours(data, pool)


def margin_with_background(money: dict, value_usd: float) -> float | None:
    """The margin when the value of background work (USD) counts as revenue beside serving's:
    (revenue + value - cost) / (revenue + value), from the economics block `money` (None
    without prices)."""
    if money.get("revenue_usd") is None:
        return None
    earned = money["revenue_usd"] + value_usd
    return _ratio(earned - money["cost_usd"], earned)


def energy_kwh(data: RunData, pool: PoolSpec) -> float:
    """Facility energy of a pool's GPUs over the run (kWh, PUE included); 0 without [energy].

    Busy: running iterations or background work; idle: the rest of the provisioned time but
    failed (a failed replica is off).
    """
    eco = data.scenario.economics
    if eco is None or eco.energy is None:
        return 0.0
    e = eco.energy
    mine = data.pool_replicas(pool)
    states = seconds_by_state(data).iloc[mine]
    busy_s = busy_s_per_replica(data)[mine] + states["background"].to_numpy()
    idle_s = states.drop(columns=["failed"]).sum(axis=1).to_numpy() - busy_s
    watt_s = (e.busy_power_fraction * busy_s + e.idle_power_fraction * idle_s).sum()
    watt_s *= pool.accelerator.tdp_w
    return float(watt_s * pool.tp * e.pue / JOULES_PER_KWH)


@dataclass(frozen=True)
class PoolCost:
    """What one pool's GPUs cost over the whole run (USD), by kind."""

    gpu_hours: float
    gpu_cost_usd: float
    overhead_cost_usd: float
    energy_kwh: float
    energy_cost_usd: float

    @property
    def cost_usd(self) -> float:
        return self.gpu_cost_usd + self.overhead_cost_usd + self.energy_cost_usd


def pool_costs(data: RunData) -> dict[str, PoolCost]:
    """The cost of each pool, by pool name (pool order); needs [economics]."""
    eco = data.scenario.economics
    assert eco is not None
    out = {}
    for pool in data.spec.pools:
        assert pool.price is not None  # resolved with [economics]
        hours, kwh = gpu_hours(data, pool), energy_kwh(data, pool)
        out[pool.name] = PoolCost(
            hours,
            hours * pool.price.usd_per_gpu_hour,
            hours * eco.overhead_usd_per_gpu_hour,
            kwh,
            kwh * (eco.energy.usd_per_kwh if eco.energy is not None else 0.0),
        )
    return out


def _first_given(*values: float | None) -> float:
    """The first value that is not None (the last argument always is given)."""
    return next(v for v in values if v is not None)


def _class_prices(scenario: Scenario, eco: EconomicsConfig) -> pd.DataFrame:
    """Per class name: input, cached-input and output prices (USD per 1e6 tokens) and SLOs.

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
                np.inf if c.slo_ttft_s is None else c.slo_ttft_s,
                np.inf if c.slo_tpot_s is None else c.slo_tpot_s,
            ),
        )
    columns = ["input", "cached_input", "output", "slo_ttft_s", "slo_tpot_s"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def slo_missed(done: pd.DataFrame, slo_ttft_s: pd.Series, slo_tpot_s: pd.Series) -> pd.Series:
    """Completed requests whose TTFT or TPOT exceeds their class SLO (no SLO never misses)."""
    ttft = done["first_token_s"] - done["arrival_s"]
    steps = done["output_tokens"] - 1
    tpot = (done["finish_s"] - done["first_token_s"]) / steps.where(steps > 0)
    return (ttft > slo_ttft_s) | (tpot.fillna(0.0) > slo_tpot_s)


def request_revenue(data: RunData) -> pd.DataFrame:
    """Per completed request: its class, token counts, gross and net revenue (USD), SLO miss."""
    eco = data.scenario.economics
    assert eco is not None
    done = data.requests[data.requests["status"] == "completed"]
    prices = _class_prices(data.scenario, eco).loc[done["class"]].set_axis(done.index)
    cached = done[CACHED_COLUMN]
    uncached = done["prompt_tokens"] - cached
    input_usd = (uncached * prices["input"] + cached * prices["cached_input"]) / 1e6
    output_usd = done["output_tokens"] * prices["output"] / 1e6
    missed = slo_missed(done, prices["slo_ttft_s"], prices["slo_tpot_s"])
    kept = 1.0 - eco.slo_refund_fraction * missed
    return pd.DataFrame(
        {
            "class": done["class"],
            "uncached_input_tokens": uncached,
            "cached_input_tokens": cached,
            "output_tokens": done["output_tokens"],
            "input_usd": input_usd,
            "output_usd": output_usd,
            "slo_missed": missed,
            "kept": kept,
            "net_usd": (input_usd + output_usd) * kept,
        }
    )


_MONEY_KEYS = (
    "cost_usd",
    "revenue_usd",
    "margin",
    "cost_per_million_output_tokens_usd",
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
    "profit_usd",
    "profit_usd_per_hour",
    "revenue_per_gpu_hour_usd",
    "break_even_usd_per_million_output_tokens",
)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def economics(data: RunData) -> dict:
    """The economics block of summary.json (USD; keys documented in docs/economics.md).

    Without an [economics] section only gpu_hours is known; every other key is None. The
    fleet's costs are the sums of its pools' (:func:`pool_costs`).
    """
    pools = data.spec.pools
    hours = sum(gpu_hours(data, p) for p in pools)
    eco = data.scenario.economics
    if eco is None:
        return {"gpu_hours": hours, **dict.fromkeys(_MONEY_KEYS), "classes": {}}
    costs = pool_costs(data).values()
    gpu_cost = sum(c.gpu_cost_usd for c in costs)
    overhead = sum(c.overhead_cost_usd for c in costs)
    kwh = sum(c.energy_kwh for c in costs)
    energy_cost = sum(c.energy_cost_usd for c in costs)
    cost = gpu_cost + overhead + energy_cost

    req = request_revenue(data)
    gross = float((req["input_usd"] + req["output_usd"]).sum())
    revenue = float(req["net_usd"].sum())
    output_tokens = float(req["output_tokens"].sum())
    profit = revenue - cost
    # revenue is linear in a uniform output price P: net input revenue + P x kept output tokens
    kept_output_millions = float((req["output_tokens"] * req["kept"]).sum()) / 1e6
    net_input = float((req["input_usd"] * req["kept"]).sum())
    run_hours = data.simulated_s / SECONDS_PER_HOUR
    return {
        "gpu_hours": hours,
        "cost_usd": cost,
        "revenue_usd": revenue,
        "margin": _ratio(profit, revenue),
        "cost_per_million_output_tokens_usd": _ratio(cost * 1e6, output_tokens),
        "pricing": eco.pricing,
        "gpu_usd_per_hour": _mean_price(pools, gpu_cost, hours),
        "gpu_price_source": _price_source(pools),
        "gpu_cost_usd": gpu_cost,
        "overhead_cost_usd": overhead,
        "energy_kwh": kwh,
        "energy_cost_usd": energy_cost,
        "gross_revenue_usd": gross,
        "input_revenue_usd": float((req["input_usd"] * req["kept"]).sum()),
        "output_revenue_usd": float((req["output_usd"] * req["kept"]).sum()),
        "slo_refund_usd": gross - revenue,
        "slo_missed_requests": int(req["slo_missed"].sum()),
        "cached_input_tokens": int(req["cached_input_tokens"].sum()),
        "profit_usd": profit,
        "profit_usd_per_hour": _ratio(profit, run_hours),
        "revenue_per_gpu_hour_usd": _ratio(revenue, hours),
        "break_even_usd_per_million_output_tokens": _ratio(cost - net_input, kept_output_millions),
        "classes": _per_class(req),
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


def pool_economics(data: RunData) -> dict[str, dict[str, float | None]]:
    """Per pool name: gpu_hours, cost_usd, revenue_usd (its completed requests) and margin.

    The pools' costs add up to the fleet's cost, their revenues to its revenue. Without
    [economics] only gpu_hours is known.
    """
    if data.scenario.economics is None:
        return {
            p.name: {"gpu_hours": gpu_hours(data, p), **dict.fromkeys(_POOL_MONEY_KEYS)}
            for p in data.spec.pools
        }
    req = request_revenue(data)
    revenue = req["net_usd"].groupby(data.request_pools().loc[req.index]).sum()
    out = {}
    for name, cost in pool_costs(data).items():
        earned = float(revenue.get(name, 0.0))
        out[name] = {
            "gpu_hours": cost.gpu_hours,
            "cost_usd": cost.cost_usd,
            "revenue_usd": earned,
            "margin": _ratio(earned - cost.cost_usd, earned),
        }
    return out


_POOL_MONEY_KEYS = ("cost_usd", "revenue_usd", "margin")


def _per_class(req: pd.DataFrame) -> dict[str, dict]:
    """Completed requests, net revenue and SLO misses of each class."""
    grouped = req.groupby("class", sort=True)
    return {
        str(name): {
            "completed": int(len(g)),
            "revenue_usd": float(g["net_usd"].sum()),
            "slo_missed_requests": int(g["slo_missed"].sum()),
        }
        for name, g in grouped
    }
