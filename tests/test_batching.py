"""Batching policies, checked on the traces they produce."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import batching, latencies, throughput
from analysis.rundata import RunData
from sim.engine import run
from sim.scenario import load_scenario
from sim.traces import builtin_trace_path, read_trace
from tests.conftest import ROOT, simulate

STATIC = ('batcher={kind="static", max_batch=8}',)
DYNAMIC = ('batcher={kind="dynamic", max_batch=8, max_queue_delay_s=0.05}',)


def _batches(requests: pd.DataFrame) -> pd.DataFrame:
    """Per replica and batch start: the batch's members' start and last finish."""
    done = requests[requests["status"] == "completed"]
    return (
        done.groupby(["replica", "first_scheduled_s"])
        .agg(end=("finish_s", "max"), size=("request_id", "count"))
        .reset_index()
        .sort_values(["replica", "first_scheduled_s"])
    )


@pytest.mark.parametrize("policy", [STATIC, DYNAMIC], ids=["static", "dynamic"])
def test_no_request_joins_a_running_batch(policy):
    data = simulate(*policy, "workload.rate=12")
    batches = _batches(data.requests)
    assert batches["size"].max() > 1
    for _, b in batches.groupby("replica"):
        starts = b["first_scheduled_s"].to_numpy()
        ends = b["end"].to_numpy()
        assert (starts[1:] >= ends[:-1]).all()


def test_static_batches_take_at_most_max_batch():
    data = simulate(*STATIC, "workload.rate=20")
    assert _batches(data.requests)["size"].max() == 8


def _busy(steps: pd.DataFrame, replica: int, t0: float, t1: float) -> bool:
    s = steps[steps["replica"] == replica]
    return bool(((s["start_s"] < t1) & (s["end_s"] > t0)).any())


def test_dynamic_batching_never_holds_a_request_past_the_delay_while_the_replica_is_free():
    delay = 0.05
    data = simulate(*DYNAMIC, "workload.rate=1", "fleet.replicas=1", "sim.duration_s=300")
    req = data.requests
    queue = req["first_scheduled_s"] - req["arrival_s"]
    checked = 0
    for row, wait in zip(req.itertuples(), queue, strict=True):
        if not _busy(data.steps, row.replica, row.arrival_s, row.arrival_s + delay):
            assert wait <= delay + 1e-9
            checked += 1
    assert checked > 20
    assert queue.max() > delay  # some waited behind a running batch: the check has teeth


def test_dynamic_batching_starts_a_full_or_preferred_batch_at_once():
    data = simulate(
        'batcher={kind="dynamic", max_batch=8, max_queue_delay_s=100.0, preferred_batch_sizes=[2]}',
        "workload.rate=1",
        "fleet.replicas=1",
    )
    req = data.requests
    batches = _batches(req).set_index("first_scheduled_s")
    members = req.groupby("first_scheduled_s")["arrival_s"]
    first_arrival, last_arrival = members.min(), members.max()
    previous_end = batches["end"].shift(1, fill_value=0.0)
    started_idle = batches.index > previous_end + 1e-9
    preferred = batches["size"] == 2
    # a preferred-size batch on a free replica starts the moment its second request arrives
    idle_pairs = batches.index[started_idle & preferred]
    assert len(idle_pairs) > 5
    assert np.allclose(idle_pairs, last_arrival[idle_pairs])
    # with a 100 s delay a lone request starts only once it has waited the whole delay
    lone = batches.index[batches["size"] == 1]
    assert ((lone - first_arrival[lone]) >= 100.0 - 1e-9).all()


def test_continuous_batching_is_work_conserving():
    """No replica is idle while a request that it could admit waits there."""
    data = simulate("workload.rate=10")
    req, steps = data.requests, data.steps
    for replica, s in steps.groupby("replica"):
        s = s.sort_values("start_s")
        gap_starts = np.concatenate([[0.0], s["end_s"].to_numpy()])
        gap_ends = np.concatenate([s["start_s"].to_numpy(), [np.inf]])
        mine = req[req["replica"] == replica]
        arrived = mine["arrival_s"].to_numpy()
        started = mine["first_scheduled_s"].to_numpy()
        for g0, g1 in zip(gap_starts, gap_ends, strict=True):
            if g1 - g0 <= 1e-12:
                continue
            waiting_in_gap = (arrived < g1 - 1e-12) & (started > g0 + 1e-12)
            assert not waiting_in_gap.any(), f"replica {replica} idle in ({g0}, {g1})"


LONG_PROMPTS = (
    "fleet.replicas=1",
    "workload.rate=3",
    'workload.classes.0.prompt_tokens={dist="uniform", low=3000, high=8000}',
    'workload.classes.0.output_tokens={dist="fixed", value=200}',
    "batcher.max_num_batched_tokens=8192",
)


CHUNKED = ("batcher.chunked_prefill=true", "batcher.max_num_batched_tokens=512")


def test_chunked_prefill_never_exceeds_the_token_budget():
    data = simulate(*LONG_PROMPTS, *CHUNKED)
    steps = data.steps
    tokens = steps["prefill_tokens"] + steps["decode_seqs"]
    assert (tokens <= 512).all()
    assert (steps["prefill_tokens"] > 0).sum() > len(data.requests)  # prompts were split
    assert (data.requests["status"] == "completed").all()


def test_chunked_prefill_lowers_tpot_p99_on_long_prompts():
    plain = simulate(*LONG_PROMPTS)
    chunked = simulate(*LONG_PROMPTS, *CHUNKED)
    p99 = lambda d: np.percentile(latencies(d.measured)["tpot"], 99)  # noqa: E731
    assert p99(chunked) < 0.8 * p99(plain)


def test_vllm_v0_mode_never_mixes_prefill_and_decode():
    data = simulate("batcher.mix_prefill_decode=false", "workload.rate=10")
    prefill = data.steps[data.steps["prefill_tokens"] > 0]
    assert len(prefill) > 0
    assert (prefill["decode_seqs"] == 0).all()
    mixed = simulate("workload.rate=10").steps
    assert ((mixed["prefill_tokens"] > 0) & (mixed["decode_seqs"] > 0)).any()


def _throughput(*overrides: str) -> float:
    return throughput(simulate(*overrides, "workload.rate=40", "fleet.replicas=1"))[
        "output_tokens_per_s"
    ]


def test_at_high_load_continuous_beats_dynamic_beats_static():
    continuous = _throughput("batcher.max_num_seqs=32")
    dynamic = _throughput('batcher={kind="dynamic", max_batch=32, max_queue_delay_s=0.05}')
    static = _throughput('batcher={kind="static", max_batch=32}')
    assert continuous > dynamic > static


def _prefill_work(data: RunData) -> int:
    return int(data.steps["prefill_tokens"].sum())


SHARED = (
    "batcher.prefix_caching=true",
    'workload.classes.0.prompt_tokens={dist="uniform", low=1100, high=1500}',
    "workload.classes.0.shared_prefix_tokens=1024",
)


def test_prefix_caching_saves_the_shared_prefix_of_every_request_but_the_first():
    shared = simulate(*SHARED, "workload.classes.0.shared_prefix_fraction=1.0")
    unshared = simulate(*SHARED, "workload.classes.0.shared_prefix_fraction=0.0")
    assert _prefill_work(unshared) == unshared.requests["prompt_tokens"].sum()
    n = len(shared.requests)
    # every request after the first finds the 1024-token system prompt (64 blocks) cached;
    # requests admitted in the same iteration as the first one still compute it
    saved = _prefill_work(unshared) - _prefill_work(shared)
    assert (n - 3) * 1024 <= saved <= (n - 1) * 1024
    hit = batching(shared)["prefix_cache_hit_rate"]
    expected = 1024 / shared.measured["prompt_tokens"].mean()
    assert hit == pytest.approx(expected, rel=0.02)
    assert batching(unshared)["prefix_cache_hit_rate"] == 0.0


def _ideal_hit_rate(trace, n: int) -> float:
    """Hit rate of an unbounded cache that every request of the trace shares."""
    seen: set[int] = set()
    hit = 0
    for hashes, prompt in zip(trace.prefix_hashes[:n], trace.prompt_tokens[:n], strict=True):
        matched = 0
        for h in hashes:
            if h not in seen:
                break
            matched += 1
        hit += min(matched * 512, int(prompt) - 1)
        seen.update(hashes)
    return hit / int(trace.prompt_tokens[:n].sum())


def test_prefix_caching_reuses_mooncake_trace_prefixes():
    path = ROOT / "scenarios" / "mooncake_prefix_caching.toml"
    setup = ["sim.num_requests=1000", "sim.warmup_s=0", "fleet.replicas=1"]
    setup.append("workload.load_scale=0.25")  # one replica, not overloaded

    def replay(*more: str) -> RunData:
        return RunData.from_result(run(load_scenario(path, [*setup, *more])))

    on, off = replay(), replay("batcher.prefix_caching=false")
    assert on.requests["preemptions"].sum() == 0
    # the prefill skipped is exactly the cached prefix tokens
    cached = int(on.requests["cached_prompt_tokens"].sum())
    assert cached > 0
    assert _prefill_work(off) - _prefill_work(on) == cached
    # an LRU cache that only holds what free KV memory allows finds less than an unbounded one
    ideal = _ideal_hit_rate(read_trace(builtin_trace_path("mooncake_conversation")), 1000)
    small = replay("batcher.gpu_memory_utilization=0.3")
    hit = batching(on)["prefix_cache_hit_rate"]
    assert 0 < batching(small)["prefix_cache_hit_rate"] < hit < ideal


PRIORITY = (
    "batcher.order=priority",
    "fleet.replicas=1",
    "workload.rate=30",
    "batcher.max_num_seqs=16",
    'workload.classes=[{name="gold", share=1, priority=1, '
    'prompt_tokens={dist="fixed", value=500}, output_tokens={dist="fixed", value=100}}, '
    '{name="free", share=3, priority=0, '
    'prompt_tokens={dist="fixed", value=500}, output_tokens={dist="fixed", value=100}}]',
)


def test_high_priority_class_queues_less_under_load():
    data = simulate(*PRIORITY)
    req = data.measured
    queue = req["first_scheduled_s"] - req["arrival_s"]
    gold, free = queue[req["class"] == "gold"].mean(), queue[req["class"] == "free"].mean()
    assert gold < 0.5 * free


def test_shortest_prompt_first_serves_short_prompts_sooner():
    data = simulate(
        "batcher.order=shortest_prompt",
        "fleet.replicas=1",
        "workload.rate=30",
        "batcher.max_num_seqs=16",
    )
    req = data.measured
    queue = req["first_scheduled_s"] - req["arrival_s"]
    short = req["prompt_tokens"] < req["prompt_tokens"].median()
    assert queue[short].mean() < queue[~short].mean()


TIGHT = ("fleet.replicas=1", "workload.rate=12", "batcher.gpu_memory_utilization=0.21")


def test_swap_preemption_moves_kv_instead_of_recomputing():
    recompute = simulate(*TIGHT)
    swap = simulate(*TIGHT, "batcher.preemption=swap")
    assert swap.requests["preemptions"].sum() > 0
    assert (swap.requests["status"] == "completed").all()
    # a swapped request is never prefilled twice
    assert _prefill_work(swap) == swap.requests["prompt_tokens"].sum()
    assert _prefill_work(recompute) > recompute.requests["prompt_tokens"].sum()


def test_compare_command_tabulates_every_scenario(tmp_path, capsys):
    from sim.cli import main

    out = tmp_path / "table.md"
    paths = [str(ROOT / "scenarios" / "policies" / f"{p}.toml") for p in ("static", "continuous")]
    assert main(["compare", *paths, "--set", "sim.duration_s=40", "--out", str(out)]) == 0
    table = out.read_text().splitlines()
    assert table[0].startswith("| scenario | batcher | req/s")
    assert [row.split(" | ")[1] for row in table[2:]] == ["static", "continuous"]
    captured = capsys.readouterr()
    assert captured.out.strip() == out.read_text().strip()
    # progress on stderr, one line per scenario as it starts
    assert [x for x in captured.err.splitlines() if x.startswith("[")] == [
        f"[1/2] {paths[0]}",
        f"[2/2] {paths[1]}",
    ]


def test_cuda_graph_padding_rounds_decode_batches_up_to_captured_sizes():
    from sim.batching.continuous import cuda_graph_rows

    assert [cuda_graph_rows(n) for n in (1, 3, 5, 8, 9, 250, 256, 300)] == [
        1,
        4,
        8,
        8,
        16,
        256,
        256,
        300,
    ]


def test_cuda_graph_padding_slows_decoding_and_can_be_switched_off():
    base = simulate("workload.rate=6")
    padded = simulate("workload.rate=6", "batcher.cuda_graph_padding=true")
    tpot = lambda d: latencies(d.measured)["tpot"].mean()  # noqa: E731
    assert tpot(padded) > tpot(base)
