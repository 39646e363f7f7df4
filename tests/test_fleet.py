"""Pools: heterogeneous and multi-model fleets, their schema, routing, traces and accounts."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from analysis.economics import economics
from analysis.invariants import check_run, failures
from analysis.metrics import batching, latencies
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.cli import main
from sim.engine import run
from sim.errors import UserError
from sim.resolve import resolve
from sim.router import ROUTERS
from sim.scenario import load_scenario, scenario_from_dict
from tests.conftest import BASE, ROOT, scenario

MIX = ROOT / "scenarios" / "fleet_h100_h200_mix.toml"
TWO_MODELS = ROOT / "scenarios" / "fleet_two_models.toml"
MOONCAKE = ROOT / "scenarios" / "mooncake_prefix_caching.toml"

POOLS = {
    **{k: v for k, v in BASE.items() if k != "fleet"},
    "fleet": {
        "pools": [
            {"name": "old", "gpu": "h100", "replicas": 2},
            {"name": "new", "gpu": "h200", "replicas": 1},
        ]
    },
}


def pools(*overrides: str):
    """The base test scenario as two pools (2 x H100, 1 x H200), with overrides."""
    return scenario_from_dict(copy.deepcopy(POOLS), "pools", list(overrides))


def simulate(s, seed: int | None = None) -> RunData:
    return RunData.from_result(run(s, seed=seed))


# ----------------------------------------------------------------------------- schema, resolve


def test_pools_resolve_in_order_with_inherited_model_batcher_and_price():
    spec = resolve(pools())
    old, new = spec.pools
    assert (old.name, old.first_replica, new.name, new.first_replica) == ("old", 0, "new", 2)
    assert [p.name for p in spec.replica_pools()] == ["old", "old", "new"]
    assert old.model == new.model == "llama-3.1-8b" and spec.class_models == ("llama-3.1-8b",)
    assert old.batcher == new.batcher == pools().batcher
    assert old.price.usd_per_gpu_hour == new.price.usd_per_gpu_hour == 4.0  # [economics]
    assert new.decode_s_per_token < old.decode_s_per_token  # the H200 reads memory faster


def test_a_pool_table_replaces_the_section_it_overrides_and_a_pool_price_wins():
    s = pools(
        'fleet.pools.1.batcher={kind="static", max_batch=4}',
        'fleet.pools.1.perf={calibration="builtin:h200_llama-3-8b"}',
        "fleet.pools.1.gpu_usd_per_hour=6.0",
        'fleet.pools.1.price_source="a quote"',
    )
    old, new = resolve(s).pools
    assert old.batcher.kind == "continuous" and new.batcher.kind == "static"
    assert new.perf != old.perf and new.perf.params.gemm_efficiency != 0.80
    assert (new.price.usd_per_gpu_hour, new.price.source) == (6.0, "a quote")
    assert old.price.usd_per_gpu_hour == 4.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("fleet.gpu=h100",), "fleet: gpu: with [[fleet.pools]] each pool sets its own gpu"),
        (("fleet.pools.1.name=old",), "pool names must be unique"),
        (("fleet.pools.1.model=llama-3-70b",), "workload.classes.0.model: the fleet serves"),
        (("workload.classes.0.model=mixtral-8x7b",), "no pool serves it; served: llama-3.1-8b"),
        (("fleet.pools.0.model=gpt-5",), "fleet.pools.0.model: unknown model 'gpt-5'"),
    ],
)
def test_pool_mistakes_are_schema_errors(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        pools(*overrides)


def test_cheapest_first_and_pool_prices_need_an_economics_section():
    unpriced = {k: v for k, v in copy.deepcopy(POOLS).items() if k != "economics"}
    with pytest.raises(UserError, match=r"'cheapest_first' ranks pools by price: add \[economics"):
        scenario_from_dict(unpriced, "pools", ["fleet.router=cheapest_first"])
    with pytest.raises(UserError, match="a pool price needs an \\[economics\\] section"):
        scenario_from_dict(unpriced, "pools", ["fleet.pools.0.gpu_usd_per_hour=2.0"])


def _run_cli(capsys, path, *args: str) -> str:
    status = main(["run", str(path), *args])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("fleet.pools.1.perf.calibration=calibration/h200.toml",),
            "fleet.pools.1.perf.calibration = 'calibration/h200.toml': no such file",
        ),
        (("fleet.pools.0.gpu=h900",), "fleet.pools.0.gpu: unknown accelerator 'h900'"),
        (
            ("workload.classes.1.model=mixtral-8x7b",),
            "workload.classes.1.model = 'mixtral-8x7b': no pool serves it",
        ),
        (
            ("fleet.pools.1.gpu=mi300x",),
            "no default price for gpu 'mi300x' with pricing 'on_demand'",
        ),
    ],
    ids=["calibration path", "pool gpu", "unserved model", "price"],
)
def test_load_time_errors_of_pools_are_one_clear_line(tmp_path, capsys, overrides, message):
    sets = [item for o in overrides for item in ("--set", o)]
    err = _run_cli(capsys, TWO_MODELS, *sets, "--out", str(tmp_path / "o"))
    assert message in err and err.startswith("error: ")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- routing


def _h200_share_and_ttft_p99(router: str, seed: int) -> tuple[float, float]:
    s = load_scenario(MIX, [f"fleet.router={router}", "sim.duration_s=120", "workload.rate=125"])
    data = simulate(s, seed)
    share = float((data.request_pools() == "h200").mean())
    return share, float(np.percentile(latencies(data.measured)["ttft"], 99))


@pytest.mark.parametrize("seed", [1, 2])
def test_speed_weighted_routing_sends_the_h200_more_and_cuts_the_ttft_tail(seed):
    """3 x H100 + 3 x H200 at 125 req/s (about 80% of the fleet's capacity): round robin gives
    each pool half; least_work gives the H200 pool at least 5 points more and a lower p99 TTFT
    (seeds 1 and 2)."""
    rr_share, rr_p99 = _h200_share_and_ttft_p99("round_robin", seed)
    lw_share, lw_p99 = _h200_share_and_ttft_p99("least_work", seed)
    assert rr_share == pytest.approx(0.5, abs=0.001)
    assert lw_share > rr_share + 0.05
    assert lw_p99 < rr_p99


def test_prefix_affinity_raises_the_prefix_cache_hit_rate_on_the_mooncake_trace():
    """Mooncake conversation replay (3000 requests, 4 x H200, seed 1): prefix-aware routing
    lifts the hit rate by at least 3 points over least_outstanding (6.1% -> 11.0% measured)."""
    hit = {
        router: batching(simulate(load_scenario(MOONCAKE, [f"fleet.router={router}"])))[
            "prefix_cache_hit_rate"
        ]
        for router in ("least_outstanding", "prefix_affinity")
    }
    assert hit["prefix_affinity"] > hit["least_outstanding"] + 0.03


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_serves_a_two_pool_fleet_within_the_invariants(router):
    data = simulate(pools(f"fleet.router={router}", "workload.rate=12", "sim.duration_s=30"))
    assert not failures(check_run(data))
    assert set(data.request_pools().dropna()) <= {"old", "new"}
    assert (data.requests["status"] == "completed").all()


def test_cheapest_first_fills_the_cheaper_pool_before_spilling():
    """The H200 pool is priced far below the H100s: at low load it takes every request; with
    two slots it fills up and the rest spills to the H100s."""
    cheap_h200 = ("fleet.router=cheapest_first", "fleet.pools.1.gpu_usd_per_hour=0.01")
    low = simulate(pools(*cheap_h200, "workload.rate=2", "sim.duration_s=30"))
    assert (low.request_pools() == "new").all()
    two_slots = 'fleet.pools.1.batcher={kind="continuous", max_num_seqs=2}'
    spilled = simulate(pools(*cheap_h200, two_slots, "workload.rate=8", "sim.duration_s=30"))
    assert 0 < (spilled.request_pools() == "old").mean() < 1


def test_power_of_two_is_deterministic_for_a_seed_and_uses_the_router_stream():
    s = pools("fleet.router=power_of_two", "workload.rate=10", "sim.duration_s=20")
    a, b, c = (run(s, seed=seed).requests for seed in (4, 4, 5))
    assert a.equals(b)
    assert not np.array_equal(a["replica"].to_numpy(), c["replica"].to_numpy())


# ----------------------------------------------------------------------------- traces, accounts


def test_the_pool_column_exists_only_for_several_pools_and_names_each_rows_pool():
    data = simulate(pools("workload.rate=6", "sim.duration_s=20"))
    names = np.array(["old", "old", "new"])
    assert list(data.requests.columns[5:7]) == ["replica", "pool"]
    assert (data.requests["pool"].to_numpy() == names[data.requests["replica"]]).all()
    assert (data.steps["pool"].to_numpy() == names[data.steps["replica"]]).all()
    single = simulate(scenario("sim.duration_s=20"))
    assert "pool" not in single.requests.columns and "pool" not in single.steps.columns


def test_two_models_serve_each_class_on_its_own_pools_with_per_pool_accounts():
    """Llama-3.1-8B and 70B pools: no request reaches a pool without its model; each pool's
    requests are conserved; pool costs add up to the fleet's cost, revenues to its revenue."""
    data = simulate(load_scenario(TWO_MODELS, ["sim.duration_s=60"]))
    pool = data.request_pools()
    model = {"small": "llama-3.1-8b", "large": "llama-3.1-70b"}
    needs = data.requests["class"].map({"chat": "llama-3.1-8b", "expert": "llama-3.1-70b"})
    assert (pool.map(model) == needs).all()
    assert {"chat": {"small"}, "expert": {"large"}} == {
        c: set(g) for c, g in pool.groupby(data.requests["class"])
    }
    summary = summarize(data)
    blocks = summary["pools"]
    measured = data.measured
    for name, block in blocks.items():
        mine = measured[pool.loc[measured.index] == name]
        counts = block["requests"]
        assert counts["arrived"] == len(mine)
        assert counts["completed"] + counts["rejected"] + counts["in_flight"] == len(mine)
    assert sum(b["requests"]["arrived"] for b in blocks.values()) == len(measured)
    eco = economics(data)
    assert sum(b["cost_usd"] for b in blocks.values()) == pytest.approx(eco["cost_usd"], 1e-12)
    assert sum(b["revenue_usd"] for b in blocks.values()) == pytest.approx(
        eco["revenue_usd"], 1e-12
    )
    assert sum(b["gpu_hours"] for b in blocks.values()) == pytest.approx(eco["gpu_hours"], 1e-12)
    assert not failures(check_run(data))


@pytest.mark.parametrize("path", [MIX, TWO_MODELS], ids=lambda p: p.stem)
def test_sim_check_passes_on_every_fleet_scenario(tmp_path, capsys, path):
    out = tmp_path / "run"
    assert main(["run", str(path), "--set", "sim.duration_s=60", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    pools = load_scenario(path).fleet.pools
    assert all(f"pool {p.name}  {p.replicas} x {p.gpu} tp {p.tp}" in printed for p in pools)
    assert main(["check", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("pools serve their models") for line in lines)
    assert all(line.endswith(" ok") for line in lines)


def test_a_request_on_a_pool_without_its_model_breaks_the_invariant():
    data = simulate(load_scenario(TWO_MODELS, ["sim.duration_s=20", "sim.warmup_s=0"]))
    chat = data.requests.index[data.requests["class"] == "chat"][0]
    data.requests.loc[chat, "replica"] = 3  # a Llama-3-70B replica
    broken = {inv.name for inv in failures(check_run(data))}
    assert "pools serve their models" in broken


def test_the_single_pool_summary_has_one_pool_costing_what_the_fleet_costs():
    summary = summarize(simulate(scenario("sim.duration_s=20")))
    (block,) = summary["pools"].values()
    assert block["gpu"] == "h100" and block["replicas"] == 2
    assert block["cost_usd"] == summary["economics"]["cost_usd"]
    assert block["requests"] == summary["requests"]
