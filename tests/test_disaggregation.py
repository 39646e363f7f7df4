"""Prefill/decode disaggregation: schema, hand-off, KV transfers, traces, laws and planning."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest

from analysis.attribution import request_gpu_s, step_split
from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.cli import main
from sim.engine import run
from sim.errors import UserError
from sim.resolve import resolve
from sim.runspec import RunSpec
from sim.scenario import load_scenario, scenario_from_dict
from sim.study.disaggregate import colocated_source
from sim.study.plan import plan
from sim.study.sweep import scenario_source
from tests.conftest import BASE, ROOT, regular_workload

SHIPPED = ROOT / "scenarios" / "disaggregated_llama3-70b.toml"
# Llama-3-8B: K and V x 32 layers x 8 KV heads x 128 values x 2 bytes (bf16) per token
LLAMA3_8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
ISOLATED = (  # one request, alone in the fleet (no warm-up: it only sets what is measured)
    "sim.num_requests=1",
    "sim.warmup_s=0",
    'workload.classes.0.prompt_tokens={dist="fixed", value=1000}',
    'workload.classes.0.output_tokens={dist="fixed", value=50}',
)
PD = {
    **{k: v for k, v in BASE.items() if k != "fleet"},
    "fleet": {
        "pools": [
            {"name": "prefill", "role": "prefill", "gpu": "h100", "replicas": 1},
            {"name": "decode", "role": "decode", "gpu": "h100", "replicas": 1},
        ]
    },
}


def pd(*overrides: str):
    """The base test scenario on one prefill and one decode H100 replica, with overrides."""
    return scenario_from_dict(copy.deepcopy(PD), "pd", list(overrides))


def colocated(*overrides: str):
    """The base test scenario on one colocated H100 replica, with overrides."""
    return scenario_from_dict(copy.deepcopy(BASE), "colocated", ["fleet.replicas=1", *overrides])


def requests(s, seed: int | None = None):
    return run(s, seed=seed).requests.to_pandas()


def latency(table):
    """TTFT and TPOT (s) of each completed request."""
    done = table[table["status"] == "completed"]
    ttft = done["first_token_s"] - done["arrival_s"]
    tpot = (done["finish_s"] - done["first_token_s"]) / (done["output_tokens"] - 1)
    return ttft, tpot


def broken(data: RunData) -> dict[str, str]:
    return {inv.name: inv.example for inv in failures(check_run(data))}


# ----------------------------------------------------------------------------- schema, resolve


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("fleet.pools.1.role=prefill",),
            "fleet.pools.0.role = 'prefill': no pool serves model 'llama-3.1-8b' with role = "
            "'decode'",
        ),
        (
            ("fleet.pools.1.role=colocated",),
            "fleet.pools.1.role = 'colocated': model 'llama-3.1-8b' is also served by a "
            "prefill pool",
        ),
        (
            ('batcher={kind="static", max_batch=8}',),
            "batcher.kind = 'static': prefill and decode pools (fleet.pools.0 is a prefill pool) "
            "need kind = 'continuous'",
        ),
        (
            ("fleet.pools.1.kv_dtype=fp8",),
            "store the KV cache as bf16 and fp8; a KV cache moves between them as it is",
        ),
        (("fleet.pools.0.role=decoder",), "Input should be 'colocated', 'prefill' or 'decode'"),
        (("fleet.interconnect.link=ethernet",), "Input should be 'infiniband' or 'nvlink'"),
        (("fleet.interconnect.bandwidth_gb_s=0",), "Input should be greater than 0"),
    ],
)
def test_disaggregation_mistakes_are_schema_errors(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        pd(*overrides)


def test_an_interconnect_without_prefill_and_decode_pools_is_an_error(tmp_path, capsys):
    status = main(
        ["run", str(ROOT / "scenarios" / "chat_llama3-8b_h100.toml"), "--out", str(tmp_path)]
        + ["--set", "fleet.interconnect.link=nvlink"]
    )
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "fleet.interconnect: only a fleet with prefill and decode pools moves KV" in err


def test_an_nvlink_needs_gpus_that_have_one():
    own = (
        'accelerators.x={name="x", bf16_tflops=500.0, mem_gb=80.0, mem_bw_gb_s=2000.0, '
        "gpus_per_node=8}"
    )
    s = pd(own, "fleet.pools.0.gpu=x", "fleet.pools.1.gpu=x", "fleet.interconnect.link=nvlink")
    with pytest.raises(UserError, match="gpu 'x' has no scale-up link"):
        resolve(s)
    given = resolve(pd(own, "fleet.pools.0.gpu=x", "fleet.interconnect.bandwidth_gb_s=10"))
    assert given.interconnect.bandwidth_gb_s == 10.0


def test_interconnect_defaults_come_from_the_catalogue_and_the_gpus():
    ib = resolve(pd()).interconnect
    assert (ib.link, ib.bandwidth_gb_s, ib.latency_s) == ("infiniband", 50.0, 10e-6)
    assert "400 Gb/s" in ib.source and "ConnectX-7" in ib.source
    nvlink = resolve(pd("fleet.interconnect.link=nvlink")).interconnect
    assert (nvlink.bandwidth_gb_s, nvlink.latency_s) == (450.0, 8e-6)  # H100: 900 GB/s both ways
    given = resolve(pd("fleet.interconnect.latency_s=0.001")).interconnect
    assert (given.bandwidth_gb_s, given.latency_s) == (50.0, 0.001)
    assert given.source.startswith("scenario fleet.interconnect.latency_s; otherwise InfiniBand")
    assert resolve(colocated()).interconnect is None


def test_a_disaggregated_run_spec_reads_back_equal_from_strict_json():
    for spec in (resolve(pd("fleet.interconnect.bandwidth_gb_s=inf")), resolve(pd())):
        text = json.dumps(spec.to_json(), allow_nan=False)  # valid JSON: no Infinity
        assert RunSpec.from_json(json.loads(text)) == spec
    assert resolve(pd()).pools[0].role == "prefill"


# ----------------------------------------------------------------------------- one request


def test_on_an_instant_link_a_request_takes_the_colocated_prefill_and_decode_times_exactly():
    """Infinite bandwidth, zero latency, one prefill and one decode replica: an isolated
    request's TTFT and TPOT equal those of one colocated replica, to the float."""
    instant = ("fleet.interconnect.bandwidth_gb_s=inf", "fleet.interconnect.latency_s=0")
    split = requests(pd(*ISOLATED, *instant))
    alone = requests(colocated(*ISOLATED))
    assert split["status"].tolist() == alone["status"].tolist() == ["completed"]
    assert (split["prefill_replica"].tolist(), split["decode_replica"].tolist()) == ([0], [1])
    for a, b in zip(latency(split), latency(alone), strict=True):
        assert a.tolist() == b.tolist()  # bit for bit
    assert split["kv_transfer_end_s"].tolist() == split["first_token_s"].tolist()


@pytest.mark.parametrize("tp, lanes", [(1, 1), (2, 2)])
def test_a_transfer_takes_latency_plus_bytes_over_bandwidth(tp, lanes):
    """1,000 prompt tokens of Llama-3-8B KV (131 kB each) over the default InfiniBand link:
    50 GB/s per GPU and direction, each of the `lanes` GPUs sending its shard, plus 10 us."""
    tps = (f"fleet.pools.0.tp={tp}", f"fleet.pools.1.tp={tp}")
    split = requests(pd(*ISOLATED, *tps))
    kv_bytes = 1000 * LLAMA3_8B_KV_BYTES_PER_TOKEN
    assert kv_bytes == 131_072_000
    expected_s = 10e-6 + kv_bytes / (50e9 * lanes)
    took = split["kv_transfer_end_s"] - split["kv_transfer_start_s"]
    assert took.iloc[0] == pytest.approx(expected_s, rel=1e-12)
    # the decode replica is idle: the transfer starts at the first token, and the whole of it
    # lands between the first and the second token
    assert split["kv_transfer_start_s"].iloc[0] == split["first_token_s"].iloc[0]
    if tp == 1:
        alone = requests(colocated(*ISOLATED))
        decode_s = split["finish_s"] - split["first_token_s"]
        alone_s = alone["finish_s"] - alone["first_token_s"]
        assert (decode_s - alone_s).iloc[0] == pytest.approx(expected_s, rel=1e-9)
        assert latency(split)[0].tolist() == latency(alone)[0].tolist()


def test_a_decode_replica_counts_the_blocks_it_reserved_for_a_transfer():
    """Two requests of 1,600 prompt tokens (100 blocks each) 0.3 s apart on a slow link: while
    the second's KV cache is on its way, the decode replica decodes the first and its steps
    show both requests' blocks."""
    s = pd(
        "sim.num_requests=2",
        "sim.warmup_s=0",
        "workload.arrival=gamma",
        "workload.rate=3.333",
        "workload.cv=0.01",
        'workload.classes.0.prompt_tokens={dist="fixed", value=1600}',
        'workload.classes.0.output_tokens={dist="fixed", value=400}',
        "fleet.interconnect.bandwidth_gb_s=1",
    )
    result = run(s)
    req, steps = result.requests.to_pandas(), result.steps.to_pandas()
    second = req.iloc[1]
    during = steps[
        (steps["replica"] == 1)
        & (steps["start_s"] < second["kv_transfer_end_s"])
        & (steps["end_s"] > second["kv_transfer_start_s"])
    ]
    assert len(during) and (during["decode_seqs"] == 1).all()  # the first request decodes
    assert (during["kv_blocks_used"] >= 200).all()  # its >= 100 blocks and the reserved 100


# ----------------------------------------------------------------------------- traces


def test_disaggregated_traces_have_the_handoff_columns_and_others_do_not():
    split = run(pd("sim.num_requests=50")).requests
    names = split.schema.names
    assert names[5:9] == ["replica", "pool", "prefill_replica", "decode_replica"]
    assert names[11:13] == ["kv_transfer_start_s", "kv_transfer_end_s"]
    table = split.to_pandas()
    handed = table["decode_replica"] >= 0
    assert (
        table["replica"] == np.where(handed, table["decode_replica"], table["prefill_replica"])
    ).all()
    assert table.loc[handed, "pool"].eq("decode").all()
    alone = run(colocated("sim.num_requests=50")).requests.schema.names
    assert not {"prefill_replica", "decode_replica", "kv_transfer_start_s"} & set(alone)


def test_a_one_token_request_completes_on_its_prefill_replica_without_a_transfer():
    table = requests(pd(*ISOLATED, 'workload.classes.0.output_tokens={dist="fixed", value=1}'))
    row = table.iloc[0]
    assert row["status"] == "completed" and row["decode_replica"] == -1 and row["replica"] == 0
    assert math.isnan(row["kv_transfer_start_s"]) and row["finish_s"] == row["first_token_s"]


def test_a_request_no_decode_pool_could_hold_is_rejected_before_its_prefill():
    """The decode replica uses 28% of its H100 (22.4 GB): 6.3 GB beside the weights, 48k
    tokens of KV cache; a request of 40k prompt and 20k output tokens fits the prefill replica
    (426k tokens) but no decode replica."""
    table = requests(
        pd(
            *ISOLATED,
            'workload.classes.0.prompt_tokens={dist="fixed", value=40000}',
            'workload.classes.0.output_tokens={dist="fixed", value=20000}',
            "batcher.chunked_prefill=true",
            "fleet.pools.1.batcher={chunked_prefill=true, gpu_memory_utilization=0.28}",
        )
    )
    row = table.iloc[0]
    assert row["status"] == "rejected" and row["prefill_replica"] == -1
    assert math.isnan(row["first_scheduled_s"])


def test_step_compression_matches_step_by_step_on_a_disaggregated_run():
    overrides = ("workload.rate=20", "fleet.pools.1.batcher.gpu_memory_utilization=0.25")
    fast = requests(pd(*overrides))
    slow = requests(pd(*overrides, "sim.step_compression=false"))
    assert fast["preemptions"].sum() > 0  # the small decode replica preempts
    for column in ("status", "replica", "prefill_replica", "decode_replica", "preemptions"):
        assert (fast[column] == slow[column]).all(), column
    times = ("first_scheduled_s", "first_token_s", "kv_transfer_start_s", "kv_transfer_end_s")
    for column in (*times, "finish_s"):
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- both directions


def test_disaggregation_cuts_the_tpot_tail_where_colocated_prefills_interfere():
    """The shipped scenario on 8 prefill + 3 decode replicas against 11 colocated replicas of
    the same GPUs at 20 req/s, seed 1: a colocated replica stalls its decodes for every
    4k-token prefill; decode replicas never do. Measured 19.7 against 39.6 ms."""
    src = scenario_source(SHIPPED)
    cap = ["workload.rate=20", "sim.num_requests=1500"]
    split = run(load_scenario(SHIPPED, [*cap, "fleet.pools.0.replicas=8"]))
    col = colocated_source(src, 0)
    together = run(scenario_from_dict(col.data, col.source, [*cap, "fleet.replicas=11"]))
    tpot_split = np.percentile(latency(split.requests.to_pandas())[1], 99)
    tpot_together = np.percentile(latency(together.requests.to_pandas())[1], 99)
    assert tpot_split < 0.6 * tpot_together


def test_at_low_load_a_slow_link_raises_ttft_above_colocated():
    """2 req/s of 4k-token prompts on 2 prefill + 2 decode replicas (GPUs mostly idle), seed 1.
    Over InfiniBand a transfer takes 7 ms and TTFT p99 is that of 4 colocated replicas (0.46
    against 0.47 s); over 0.1 GB/s per GPU a transfer takes 3.4 s, longer than the 1 s between
    a prefill replica's requests, so KV caches waiting to leave fill the prefill replicas (kept
    to 20 prompts' worth here) and new prompts wait: TTFT p99 rises above twice both (287 s:
    the link, not the GPUs, is saturated)."""
    src = scenario_source(SHIPPED)
    load = ["workload.rate=2", "sim.num_requests=300"]
    small = "fleet.pools.0.batcher={max_num_batched_tokens=16384, gpu_memory_utilization=0.3}"
    split = [*load, "fleet.pools.0.replicas=2", "fleet.pools.1.replicas=2", small]
    col = colocated_source(src, 0)
    together = run(scenario_from_dict(col.data, col.source, [*load, "fleet.replicas=4"]))
    ttft_together = np.percentile(latency(together.requests.to_pandas())[0], 99)
    fast = RunData.from_result(run(load_scenario(SHIPPED, split)))
    slow = RunData.from_result(
        run(load_scenario(SHIPPED, [*split, "fleet.interconnect.bandwidth_gb_s=0.1"]))
    )
    ttft_fast = np.percentile(latency(fast.requests)[0], 99)
    assert ttft_fast == pytest.approx(ttft_together, rel=0.1)
    assert np.percentile(latency(slow.requests)[0], 99) > 2 * max(ttft_together, ttft_fast)
    assert summarize(slow)["pools"]["prefill"]["utilization"]["nonidle_fraction"] < 0.5
    assert broken(slow) == {}


# ----------------------------------------------------------------------------- laws, summary


# The laws hold at any length: three busy cases run 20 s instead of 60, in which (seed 3) 68
# requests are left in flight, 379 of 400 requests wait over 0.1 s in the central queue, and
# requests are preempted 6,289 times while KV caches wait for the slow link.
@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("sim.step_compression=false",),
        ("workload.rate=40", "fleet.pools.1.batcher.gpu_memory_utilization=0.25"),
        ("workload.rate=40", "sim.drain=false", "sim.duration_s=20"),
        (
            "workload.rate=20",
            "fleet.router=central_queue",
            "batcher.max_num_seqs=8",
            "sim.duration_s=20",
        ),
        (
            "workload.rate=20",
            "fleet.pools.1.batcher={preemption='swap', gpu_memory_utilization=0.25}",
        ),
        (
            "workload.rate=30",
            "fleet.pools.0.batcher={chunked_prefill=true, max_num_batched_tokens=512,"
            " gpu_memory_utilization=0.25}",
            "fleet.interconnect.bandwidth_gb_s=0.5",
            "sim.duration_s=20",
        ),
        ("fleet.pools.1.replicas=2", "fleet.router=power_of_two", "workload.rate=20"),
    ],
    ids=[
        "plain",
        "step_by_step",
        "saturated_decode",
        "undrained",
        "central_queue",
        "swap",
        "chunked_backpressure",
        "two_decode",
    ],
)
def test_disaggregated_runs_conserve_requests_and_satisfy_every_invariant(overrides):
    data = RunData.from_result(run(pd(*overrides)))
    counts = data.requests["status"].value_counts()
    assert counts.sum() == len(data.requests) and counts.get("completed", 0) > 0
    assert broken(data) == {}
    assert [inv.name for inv in check_run(data)][-2:] == [
        "prefill, transfer, decode",
        "kv links one at a time",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("fleet.pools.0.spare=1",), "fleet.pools.0.spare: a prefill pool keeps its replicas"),
        (
            ("fleet.pools.1.cold_start.provision_s=10",),
            "fleet.pools.1.cold_start: a decode pool keeps its replicas",
        ),
        (
            ('fleet.pools.1.autoscale={signal="queue", target=2, max=3}',),
            "fleet.pools.1.autoscale: a decode pool keeps its replicas",
        ),
        (
            ("fleet.pools.0.failures={mtbf_s=3600, mttr_s=600}",),
            "fleet.pools.0.failures: a prefill pool keeps its replicas",
        ),
        (
            ('fleet.pools.0.pricing="spot"', "fleet.pools.0.reclaim={rate_per_hour=1}"),
            "fleet.pools.0.reclaim: a prefill pool keeps its replicas",
        ),
        (
            (
                "fleet.background={idle_after_s=60, preemption_s=5, restart_loss_s=60, "
                "job_gpu_hours=8, usd_per_gpu_hour=1}",
            ),
            "fleet.background: prefill and decode replicas are not lent to background work",
        ),
    ],
)
def test_prefill_and_decode_pools_refuse_the_fields_of_a_fleet_over_time(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        pd(*overrides)


def test_a_prefill_pool_may_be_priced_as_spot_and_reads_back_from_its_scenario_json():
    """Pricing is the one field over time a prefill or decode pool takes; the resolved run
    (every default written out) reads back without tripping the refusals above."""
    spec = resolve(pd('fleet.pools.0.pricing="spot"'))
    assert spec.pools[0].lifecycle.pricing == "spot"
    assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_a_disaggregated_model_beside_a_colocated_pool_that_fails_keeps_every_law():
    """Llama-3.1-8B on one prefill and one decode pool beside a colocated Llama-3.1-70B pool
    with a warm spare and failures (MTBF 20 s, a stress case, seed 3): the colocated pool's
    requests start over on its other replicas, every law holds, and the colocated pool's
    summary counts the requests its spare served (a replica added during the run)."""
    data = copy.deepcopy(PD)
    data["workload"]["classes"] = [
        {**data["workload"]["classes"][0], "name": "small", "model": "llama-3.1-8b"},
        {**data["workload"]["classes"][0], "name": "big", "model": "llama-3.1-70b"},
    ]
    data["fleet"]["pools"] += [
        {
            "name": "c",
            "gpu": "h200",
            "tp": 4,
            "replicas": 2,
            "spare": 1,
            "model": "llama-3.1-70b",
            "failures": {"mtbf_s": 20.0, "mttr_s": 600.0},
        }
    ]
    result = RunData.from_result(run(scenario_from_dict(data, "mixed", ["sim.warmup_s=0"])))
    assert broken(result) == {}
    req, fleet = result.requests, result.fleet
    assert (fleet["cause"] == "failure").any() and (req["retries"] > 0).any()
    spare = 4  # the fleet-wide index after the 2 + 2 replicas that serve from time 0
    big = req[req["class"] == "big"]
    assert (big["replica"] == spare).any() and (big["prefill_replica"] == -1).all()
    small = req[req["class"] == "small"]
    assert set(small["prefill_replica"]) == {0} and (small["retries"] == 0).all()
    s = summarize(result)
    assert s["pools"]["c"]["requests"]["completed"] == int((big["status"] == "completed").sum())
    assert s["fleet"]["failures"] == int((fleet["cause"] == "failure").sum())


def test_one_fleet_may_disaggregate_one_model_and_colocate_another():
    """Llama-3.1-8B on two prefill pools of different GPUs and a tp-2 decode pool, beside a
    colocated Llama-3.1-70B pool, seed 3: every law holds, each model's requests stay on its
    pools, and the fleet has no capacity figure (its prefill and decode replicas have none)."""
    data = copy.deepcopy(PD)
    data["workload"]["classes"] = [
        {**data["workload"]["classes"][0], "name": "small", "model": "llama-3.1-8b"},
        {**data["workload"]["classes"][0], "name": "big", "model": "llama-3.1-70b"},
    ]
    data["fleet"]["pools"] = [
        {"name": "p100", "role": "prefill", "gpu": "h100", "model": "llama-3.1-8b"},
        {"name": "p200", "role": "prefill", "gpu": "h200", "model": "llama-3.1-8b"},
        {"name": "d", "role": "decode", "gpu": "h200", "tp": 2, "model": "llama-3.1-8b"},
        {"name": "c", "gpu": "h200", "tp": 4, "model": "llama-3.1-70b"},
    ]
    result = RunData.from_result(run(scenario_from_dict(data, "mixed", ["sim.warmup_s=0"])))
    assert broken(result) == {}
    req = result.requests
    small = req["class"] == "small"
    assert set(req.loc[small, "prefill_replica"]) == {0, 1}
    assert set(req.loc[small & (req["output_tokens"] > 1), "decode_replica"]) == {2}
    assert (
        set(req.loc[~small, "replica"]) == {3} and (req.loc[~small, "prefill_replica"] == -1).all()
    )
    s = summarize(result)
    assert s["utilization"]["capacity_per_s"] is None
    assert s["pools"]["c"]["utilization"]["capacity_per_s"] > 0
    assert s["pools"]["d"]["utilization"]["capacity_per_s"] is None


def test_backpressure_shows_in_the_prefill_replicas_kv_blocks():
    """A slow link: the prefill replica's steps hold more blocks than their own prompts need
    (KV caches waiting to leave), and stay within its capacity."""
    data = RunData.from_result(run(pd("workload.rate=30", "fleet.interconnect.bandwidth_gb_s=0.5")))
    steps = data.steps[data.steps["pool"] == "prefill"]
    own = np.ceil(steps["prefill_tokens"] / 16) + steps["prefill_seqs"]
    assert (steps["kv_blocks_used"] > own).mean() > 0.5
    assert steps["kv_blocks_used"].max() <= data.spec.pools[0].kv_capacity_blocks


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("kv_transfer_end_s", 0.5),  # a transfer that took longer than bytes / bandwidth
        ("kv_transfer_start_s", -10.0),  # a transfer before the prefill
        ("decode_replica", -1),  # decoded nowhere
        ("prefill_replica", 1),  # prefilled on the decode replica
    ],
)
def test_a_broken_handoff_breaks_the_law(column, change):
    data = RunData.from_result(run(pd("sim.num_requests=40", "sim.warmup_s=0")))
    row = data.requests.index[data.requests["decode_replica"] >= 0][3]
    value = data.requests.at[row, column]
    data.requests.at[row, column] = change if column.endswith("replica") else value + change
    assert "prefill, transfer, decode" in broken(data)


def test_overlapping_transfers_on_one_link_break_the_law():
    slow_link = ("workload.rate=30", "fleet.interconnect.bandwidth_gb_s=1", "sim.duration_s=20")
    data = RunData.from_result(run(pd(*slow_link)))
    assert broken(data) == {}
    sent = data.requests.dropna(subset=["kv_transfer_start_s"]).sort_values("kv_transfer_start_s")
    first, second = sent.index[:2]
    columns = ["kv_transfer_start_s", "kv_transfer_end_s"]
    shift = data.requests.at[second, columns[0]] - data.requests.at[first, columns[0]]
    data.requests.loc[second, columns] -= shift  # now both start together
    assert "kv links one at a time" in broken(data)


def test_summary_counts_transfers_bytes_and_pools_by_role():
    data = RunData.from_result(run(pd("sim.warmup_s=0")))
    s = summarize(data)
    moved = data.requests[data.requests["kv_transfer_end_s"].notna()]
    kv = s["kv_transfer"]
    assert kv["transfers"] == len(moved)
    assert kv["bytes_moved"] == moved["prompt_tokens"].sum() * LLAMA3_8B_KV_BYTES_PER_TOKEN
    took = (moved["kv_transfer_end_s"] - moved["kv_transfer_start_s"]).sum()
    assert kv["link_busy_fraction"] == pytest.approx(took / data.simulated_s)
    assert kv["transfer_s"]["p99"] >= kv["transfer_s"]["p50"] > 10e-6
    pools = s["pools"]
    assert (pools["prefill"]["role"], pools["decode"]["role"]) == ("prefill", "decode")
    assert pools["prefill"]["requests"]["arrived"] == len(data.requests)
    assert pools["decode"]["requests"]["arrived"] == int(
        (data.requests["decode_replica"] >= 0).sum()
    )
    # each pool bills its own GPUs; the prompt earns for the prefill pool, the output for decode
    eco = s["economics"]
    assert pools["prefill"]["cost_usd"] + pools["decode"]["cost_usd"] == pytest.approx(
        eco["cost_usd"]
    )
    assert pools["prefill"]["revenue_usd"] == pytest.approx(eco["input_revenue_usd"])
    assert pools["decode"]["revenue_usd"] == pytest.approx(eco["output_revenue_usd"])
    assert pools["decode"]["utilization"]["decode_batch_mean"] > 1
    assert pools["prefill"]["utilization"]["decode_batch_mean"] == 0
    assert "kv_transfer" not in summarize(RunData.from_result(run(colocated())))


def test_gpu_time_of_prompts_goes_to_prefill_replicas_and_of_outputs_to_decode_replicas():
    """Cost attribution (analysis.attribution) on one prefill and one decode replica: every
    prompt's GPU seconds come from the prefill replica's steps, every output's from the decode
    replica's, and each side's requests share that side's whole time."""
    data = RunData.from_result(run(pd("sim.warmup_s=0")))
    split = step_split(data)
    per_request = request_gpu_s(data, split)
    done = data.requests["status"] == "completed"
    decoded = done & (data.requests["output_tokens"] > 1)
    assert (per_request["prefill_s"][done] > 0).all()
    assert (per_request["decode_s"][decoded] > 0).all()
    prefill_steps, decode_steps = split[split["replica"] == 0], split[split["replica"] == 1]
    assert decode_steps["prefill_s"].sum() == 0 and prefill_steps["decode_s"].sum() == 0
    # no preemption or chunking here: the shares add up to each replica's time (float sums)
    assert per_request["prefill_s"].sum() == pytest.approx(prefill_steps["prefill_s"].sum())
    assert per_request["decode_s"].sum() == pytest.approx(decode_steps["decode_s"].sum())


def test_sim_run_and_check_print_the_transfers_and_pass(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(SHIPPED), "--out", str(out), "--set", "sim.duration_s=50"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"kv transfer  \d+ transfers, [\d.]+ GB, 6\.7 ms mean", printed)
    assert "pool prefill  11 x h200 tp 4 (llama-3.1-70b, prefill):" in printed
    assert main(["check", str(out)]) == 0
    assert "prefill, transfer, decode    ok" in capsys.readouterr().out


# ----------------------------------------------------------------------------- planning


def stepped(rate: float) -> dict:
    """One-iteration prefills of 0.25 s and one-iteration decodes of 0.15 s (service times,
    one request per replica at a time, two output tokens), nearly regular arrivals, an instant
    link: p prefill replicas serve p / 0.25 req/s and d decode replicas d / 0.15; one colocated
    replica (0.2 s iterations) serves a request in 0.4 s."""
    data = copy.deepcopy(PD)
    data["sim"] = {"seed": 3, "duration_s": 60.0, "warmup_s": 5.0}
    data["perf"] = {"kind": "service_time", "distribution": "deterministic", "mean_s": 0.2}
    data["batcher"] = {"max_num_seqs": 1}
    for pool, mean_s in zip(data["fleet"]["pools"], (0.25, 0.15), strict=True):
        pool["perf"] = {"kind": "service_time", "distribution": "deterministic", "mean_s": mean_s}
    data["fleet"]["interconnect"] = {"bandwidth_gb_s": math.inf, "latency_s": 0.0}
    data["workload"] = regular_workload(rate, "two-steps", output_tokens=2)
    return data


def test_plan_disaggregate_finds_the_counts_arithmetic_requires(tmp_path):
    """At 10 req/s: 3 prefill replicas (2.5 busy) and 2 decode replicas (1.5 busy) meet TTFT
    0.3 s and TPOT 0.25 s; 5 colocated replicas (4 busy)."""
    result = plan(
        stepped(10.0),
        rate=10.0,
        slos={"ttft_p99": 0.3, "tpot_p99": 0.25},
        seeds=2,
        out=tmp_path,
        workers=1,
        disaggregate=True,
    )
    rows = result.options
    assert list(rows.columns[:5]) == ["gpu", "tp", "fleet", "prefill", "decode"]
    col = rows[rows["fleet"] == "colocated"].iloc[0]
    assert col["replicas"] == 5 and col["usd_per_hour"] == pytest.approx(5 * 4.0)
    split = rows[rows["fleet"] == "disaggregated"]
    assert split[["prefill", "decode"]].astype(int).values.tolist() == [[3, 2], [4, 2], [5, 2]]
    assert split.iloc[0]["usd_per_hour"] == pytest.approx(5 * 4.0)
    assert split.iloc[0]["ttft_p99"] == pytest.approx(0.25)
    assert split.iloc[0]["tpot_p99"] == pytest.approx(0.15)
    tried = result.evaluations
    key = ["fleet.pools.0.replicas", "fleet.pools.1.replicas"]
    verdict = tried.dropna(subset=key).set_index(key)["feasible"]
    assert verdict[(3, 2)] and not verdict[(2, 5)] and not verdict[(3, 1)]


def test_plan_disaggregate_needs_one_prefill_and_one_decode_pool(tmp_path):
    with pytest.raises(UserError, match="exactly those two \\[\\[fleet.pools\\]\\]"):
        plan(BASE, rate=5.0, slos=["ttft_p99=1"], out=tmp_path, disaggregate=True)
    with pytest.raises(UserError, match="--mix and --disaggregate"):
        plan(PD, rate=5.0, slos=["ttft_p99=1"], out=tmp_path, disaggregate=True, mix=True)
    status = main(["plan", str(SHIPPED), "--max-rate", "--disaggregate", "--slo", "ttft_p99=1"])
    assert status == 2
