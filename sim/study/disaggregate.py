"""``sim plan --disaggregate``: per GPU type, the cheapest (prefill replicas, decode replicas) of
a scenario's prefill and decode pools that meets every SLO at the target rate, beside the
cheapest colocated fleet of the same GPUs.

The scenario has exactly one prefill and one decode pool (``role``); each GPU type and tensor-
parallel degree tried (``--gpu``, ``--tp``) replaces the GPU and tp of both. Per option:

1. colocated: the fewest replicas `n` of one colocated pool of that GPU, serving the same model
   with the scenario's top-level ``[batcher]`` and ``[perf]`` (:func:`sim.study.plan.plan`'s
   search; :func:`colocated_source` is that scenario);
2. the fewest prefill replicas `p_min` that meet the SLOs beside `n` decode replicas (decode
   replicas that only decode, as many as the colocated fleet needs for all its work), searched
   from the rate one prefill replica sustains;
3. for each `p` of `p_min` to `p_min + EXTRA_PREFILL`: the fewest decode replicas (at most `n`)
   beside `p` prefill replicas, searched first from the rate one decode replica sustains, then
   from the previous `p`'s count (more prefill replicas can let fewer decode replicas meet the
   TTFT SLO: KV caches wait less for room on them).

More replicas of either role never hurt (the assumption of
:func:`~sim.study.plan.fewest_replicas`). Every point tried is a row of evaluations.parquet;
docs/disaggregation.md explains the method and its limits.
"""

from __future__ import annotations

import copy
import json
import math

from sim.errors import UserError
from sim.fleet_config import DECODE, PREFILL
from sim.scenario import scenario_from_dict
from sim.study.plan import (
    Evaluator,
    Option,
    RunFailed,
    Verdict,
    _replicas_guess,
    _unfit,
    _upper,
    fewest_replicas,
)
from sim.study.sweep import ScenarioSource

EXTRA_PREFILL = 2  # prefill counts tried beyond the fewest that meet the SLOs


def split_pools(src: ScenarioSource, overrides: tuple[str, ...]) -> tuple[int, int]:
    """The positions of the scenario's prefill and decode pools; UserError unless it has
    exactly one of each and no other pool."""
    scenario = scenario_from_dict(src.data, src.source, list(overrides))
    roles = [p.role for p in scenario.fleet.pools]
    if sorted(roles) != [DECODE, PREFILL]:
        raise UserError(
            f"{src.source}: plan --disaggregate varies the replicas of one prefill pool and one "
            f"decode pool; give a scenario with exactly those two [[fleet.pools]] (roles now: "
            f"{roles or 'one colocated pool'}), e.g. scenarios/disaggregated_llama3-70b.toml"
        )
    return roles.index(PREFILL), roles.index(DECODE)


def colocated_source(src: ScenarioSource, prefill: int) -> ScenarioSource:
    """The scenario with one colocated pool of the prefill pool's GPU, tp and model in place of
    its two pools, batching and timed by the top-level [batcher] and [perf] (one replica: the
    points set them)."""
    data = copy.deepcopy(src.data)
    fleet, pool = data["fleet"], data["fleet"]["pools"][prefill]
    model = dict(data.get("model", {}))
    model.update({k: pool[k] for k in ("weight_dtype", "kv_dtype") if k in pool})
    if "model" in pool:
        model["name"] = pool["model"]
    data["model"] = model
    kept = {k: v for k, v in fleet.items() if k not in ("pools", "interconnect")}
    data["fleet"] = {**kept, "gpu": pool["gpu"], "tp": pool.get("tp", 1), "replicas": 1}
    return ScenarioSource(data, f"{src.source} (colocated)")


def option_items(option: Option, pools: tuple[int, int]) -> tuple[str, ...]:
    """``--set`` items giving both pools the option's GPU, tp and (priced runs) GPU price."""
    items: tuple[str, ...] = ()
    for i in pools:
        items += (
            f"fleet.pools.{i}.gpu={json.dumps(option.gpu)}",
            f"fleet.pools.{i}.tp={option.tp}",
        )
        if option.set_price:
            items += (f"fleet.pools.{i}.gpu_usd_per_hour={option.usd_per_gpu_hour}",)
    return items


def disaggregated_rows(
    split: Evaluator,
    option: Option,
    pools: tuple[int, int],
    rate_item: str,
    colocated: dict,
    max_replicas: int,
) -> list[dict]:
    """The disaggregated fleets tried for one option (`colocated`: its colocated row, whose
    replica count bounds the decode pool)."""
    base = {"gpu": option.gpu, "tp": option.tp, "fleet": "disaggregated"}
    items = (*option_items(option, pools), rate_item)
    reason = _unfit(split.src, (*split.overrides, *items))
    if reason is not None:
        return [{**base, "status": reason}]
    bound = colocated["replicas"] if colocated["status"] == "ok" else max_replicas
    split.log(f"{option.gpu} tp={option.tp} disaggregated, at most {bound} of each role:")
    try:
        return _Search(split, option, pools, items).rows(base, bound)
    except RunFailed as exc:
        return [{**base, "status": f"error: {exc}"}]


class _Search:
    """The prefill and decode counts of one option (steps 2 and 3 of the module docstring)."""

    def __init__(
        self, ev: Evaluator, option: Option, pools: tuple[int, int], items: tuple[str, ...]
    ) -> None:
        self.ev, self.option, self.items = ev, option, items
        self.prefill, self.decode = pools
        self.verdicts: dict[tuple[int, int], Verdict] = {}

    def feasible(self, p: int, d: int) -> bool:
        key = (p, d)
        if key not in self.verdicts:
            self.verdicts[key] = self.ev((*self.items, *self._counts(p, d)))
        return self.verdicts[key].feasible

    def _counts(self, p: int, d: int) -> tuple[str, str]:
        return (
            f"fleet.pools.{self.prefill}.replicas={p}",
            f"fleet.pools.{self.decode}.replicas={d}",
        )

    def _guess(self, p: int, d: int, role: str) -> int:
        """Replicas of `role` the load needs, from a run where that role is one replica."""
        counts = self._counts(p, d)
        self.ev.log(f"  probe: {role} alone on one replica")
        return _replicas_guess(self.ev, (*self.items, *counts))

    def rows(self, base: dict, bound: int) -> list[dict]:
        """One row per prefill count tried, with the fewest decode replicas beside it."""
        p_min = fewest_replicas(
            lambda p: self.feasible(p, bound), self._guess(1, bound, PREFILL), bound
        )
        if p_min is None:
            return [{**base, "status": f"not met with {bound} decode replicas"}]
        rows, d_guess = [], self._guess(p_min, 1, DECODE)
        for p in range(p_min, p_min + EXTRA_PREFILL + 1):
            d = fewest_replicas(lambda d, p=p: self.feasible(p, d), min(d_guess, bound), bound)
            if d is None:  # seed noise: (p_min, bound) met the SLOs, (p, bound) did not
                rows.append({**base, "prefill": p, "status": f"not met with {bound} decode"})
                continue
            rows.append(self._row(base, p, d))
            d_guess = d
        return rows

    def _row(self, base: dict, p: int, d: int) -> dict:
        v, option = self.verdicts[(p, d)], self.option
        return {
            **base,
            "prefill": p,
            "decode": d,
            "replicas": p + d,
            "gpus": (p + d) * option.tp,
            "usd_per_gpu_hour": option.usd_per_gpu_hour,
            "usd_per_hour": option.usd_per_hour(p + d, v.row),
            "margin": v.row.get("economics.margin", math.nan),
            "slo_headroom": v.headroom,
            **{slo.name: _upper(v.row, slo.metric) for slo in self.ev.slos},
            "status": "ok",
        }
