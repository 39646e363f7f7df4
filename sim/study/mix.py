"""Mixes of two GPU types for ``sim plan --mix``: the fewest replicas of the second type that,
beside a given number of the first, meet every SLO at the target rate.

The per-type search (:func:`sim.study.plan.plan`) first finds `n_a` and `n_b`, the fewest
replicas of each type alone. A mix keeps `k_a` replicas of the first type (at most
`MIX_COUNTS` values spread over 1 .. n_a - 1) and searches the fewest `k_b` <= n_b of the
second: more replicas never hurt, so :func:`~sim.study.plan.fewest_replicas` applies, starting
from the share of the load the first type leaves, ``ceil((1 - k_a / n_a) n_b)``. Each mix is one
fleet of two pools (named after their GPUs) with the scenario's router; docs/fleet.md explains
the method.
"""

from __future__ import annotations

import copy
import math

from analysis.economics import SECONDS_PER_HOUR
from sim.errors import UserError
from sim.scenario import SINGLE_POOL_KEYS
from sim.study.plan import Evaluator, Option, RunFailed, Verdict, _upper, fewest_replicas
from sim.study.sweep import ScenarioSource

MIX_COUNTS = 4  # values of the first type's replica count tried per mix


def mix_source(src: ScenarioSource, a: Option, b: Option) -> ScenarioSource:
    """The scenario as a fleet of two pools, `a` and `b` (one replica each; points set them)."""
    data = copy.deepcopy(src.data)
    fleet = {k: v for k, v in data.get("fleet", {}).items() if k not in SINGLE_POOL_KEYS}
    data["fleet"] = {**fleet, "pools": [_pool(a), _pool(b)]}
    return ScenarioSource(data, f"{src.source} (pools {a.gpu} and {b.gpu})")


def _pool(option: Option) -> dict:
    price = {"gpu_usd_per_hour": option.usd_per_gpu_hour} if option.set_price else {}
    return {"name": option.gpu, "gpu": option.gpu, "tp": option.tp, "replicas": 1, **price}


def mix_counts(n_a: int) -> list[int]:
    """The first type's replica counts to try: at most MIX_COUNTS, spread over 1 .. n_a - 1."""
    if n_a < 2:
        return []
    steps = min(MIX_COUNTS, n_a - 1)
    return sorted({max(1, round(n_a * j / (steps + 1))) for j in range(1, steps + 1)})


def plan_mixes(
    ev: Evaluator, a: Option, n_a: int, b: Option, n_b: int, rate_item: str
) -> list[dict]:
    """One row per mix tried: `k_a` of `a` and the fewest `k_b` of `b` (plan.csv columns)."""
    return [_plan_mix(ev, a, k_a, n_a, b, n_b, rate_item) for k_a in mix_counts(n_a)]


def _plan_mix(
    ev: Evaluator, a: Option, k_a: int, n_a: int, b: Option, n_b: int, rate_item: str
) -> dict:
    """The fewest replicas of `b` beside `k_a` of `a` (at most `n_b`, which meet the SLOs alone)."""
    ev.log(f"{k_a} x {a.gpu} tp={a.tp} + ? x {b.gpu} tp={b.tp}:")
    verdicts: dict[int, Verdict] = {}

    def feasible(k_b: int) -> bool:
        items = (f"fleet.pools.0.replicas={k_a}", f"fleet.pools.1.replicas={k_b}", rate_item)
        verdicts[k_b] = ev(items)
        return verdicts[k_b].feasible

    row = {"gpu": f"{a.gpu}+{b.gpu}", "tp": a.tp if a.tp == b.tp else math.nan}
    try:
        k_b = fewest_replicas(feasible, max(1, math.ceil((1 - k_a / n_a) * n_b)), n_b)
    except RunFailed as exc:
        return {**row, "mix": f"{k_a} {a.gpu} + ? {b.gpu}", "status": f"error: {exc}"}
    if k_b is None:  # seed noise: n_b of b alone met the SLOs, with k_a of a more they did not
        return {**row, "mix": f"{k_a} {a.gpu} + ? {b.gpu}", "status": f"not met with {n_b}"}
    v = verdicts[k_b]
    cost = v.row.get("economics.cost_usd", math.nan)
    by_price = k_a * a.tp * a.usd_per_gpu_hour + k_b * b.tp * b.usd_per_gpu_hour
    return {
        **row,
        "mix": f"{k_a} {a.gpu} + {k_b} {b.gpu}",
        "replicas": k_a + k_b,
        "gpus": k_a * a.tp + k_b * b.tp,
        "usd_per_hour": cost / v.row["window.duration_s"] * SECONDS_PER_HOUR
        if math.isfinite(cost)
        else by_price,
        "margin": v.row.get("economics.margin", math.nan),
        "slo_headroom": v.headroom,
        **{slo.name: _upper(v.row, slo.metric) for slo in ev.slos},
        "status": "ok",
    }


def check_mix(gpus: list[str] | None) -> None:
    """--mix compares exactly two GPU types."""
    if gpus is None or len(gpus) != 2:
        raise UserError(f"--mix needs exactly two GPU types in --gpu (e.g. h100,h200), got {gpus}")
