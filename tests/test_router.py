"""Routers: the heap-based least-outstanding router chooses exactly what a linear scan would."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.router
from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from sim.engine import run
from sim.request import Request
from sim.router import CentralQueue, LeastOutstanding, Pack, RoundRobin
from tests.conftest import scenario


class _Stub:
    """A replica view stand-in with a starting load."""

    def __init__(self, outstanding: int) -> None:
        self.outstanding = outstanding


REQ = Request(0, 0, 0, 0.0, 10, 10)  # the routers under test do not look at the request


def _scan(loads: list[int]) -> int:
    """The reference: fewest outstanding, ties to the lowest index."""
    return min(range(len(loads)), key=lambda i: (loads[i], i))


def _replay(initial: list[int], ops: list[int]) -> None:
    """Apply ops (-1: route a request, i >= 0: a request leaves replica i % n if it has one)."""
    loads = list(initial)
    router = LeastOutstanding([_Stub(x) for x in initial], None, 16)
    for op in ops:
        if op < 0:
            expected = _scan(loads)
            assert router.choose(REQ) == expected
            loads[expected] += 1
        else:
            index = op % len(loads)
            if loads[index]:
                router.left(index, 0)
                loads[index] -= 1
        assert router.loads() == loads


@settings(max_examples=200, deadline=None)
@given(
    initial=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    ops=st.lists(st.integers(-1, 40), max_size=300),
)
def test_least_outstanding_matches_linear_scan_on_any_sequence(initial, ops):
    _replay(initial, ops)


@pytest.mark.parametrize("replicas", [1, 32, 1024])
def test_least_outstanding_matches_linear_scan_on_long_random_sequences(replicas):
    rng = np.random.default_rng(replicas)
    # about as many departures as routings, so loads wander and the heap is rebuilt many times
    ops = np.where(rng.random(20_000) < 0.5, -1, rng.integers(0, replicas, 20_000)).tolist()
    _replay([0] * replicas, ops)


def test_round_robin_cycles_through_replicas():
    router = RoundRobin([_Stub(0)] * 3, None, 16)
    assert [router.choose(REQ) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


class _CheckedLeastOutstanding(LeastOutstanding):
    """Asserts at every arrival that the router's counts are the replicas' outstanding counts."""

    def __init__(self, replicas, rng, prefix_block_tokens) -> None:
        super().__init__(replicas, rng, prefix_block_tokens)
        self.replicas = replicas
        self.checks = 0

    def choose(self, req: Request) -> int:
        assert self.loads() == [r.outstanding for r in self.replicas]
        self.checks += 1
        return super().choose(req)


@pytest.mark.parametrize(
    "overrides",
    [
        ("fleet.replicas=3", "workload.rate=12"),
        ("fleet.replicas=2", "workload.rate=12", "batcher.gpu_memory_utilization=0.21"),
        ("workload.rate=10", "batcher.max_num_batched_tokens=1500"),  # rejections
        ('batcher={kind="static", max_batch=4}', "workload.rate=6"),
        ('batcher={kind="dynamic", max_batch=4, max_queue_delay_s=0.05}', "workload.rate=6"),
    ],
    ids=["continuous", "preemption", "rejection", "static", "dynamic"],
)
def test_router_counts_equal_replica_outstanding_at_every_arrival(monkeypatch, overrides):
    made = []

    def checked(replicas, rng, prefix_block_tokens):
        made.append(_CheckedLeastOutstanding(replicas, rng, prefix_block_tokens))
        return made[-1]

    monkeypatch.setitem(sim.router.ROUTERS, "least_outstanding", checked)
    result = run(scenario(*overrides, "fleet.router=least_outstanding"))
    assert made[0].checks == result.requests.num_rows
    assert made[0].loads() == [0] * len(made[0].replicas)


class _Slotted(_Stub):
    """A replica view stand-in whose batcher runs `slots` requests at once."""

    def __init__(self, outstanding: int, slots: int) -> None:
        super().__init__(outstanding)
        self.slots = slots


def test_central_queue_holds_a_request_only_when_every_replica_is_full():
    router = CentralQueue([_Slotted(0, 2), _Slotted(1, 2)], None, 16)
    assert [router.choose(REQ) for _ in range(3)] == [0, 0, 1]  # least loaded, ties to lowest
    assert router.choose(REQ) is None
    router.left(1, 0)
    assert router.choose(REQ) == 1
    assert router.choose(REQ) is None


def test_central_queue_fleet_never_idles_a_slot_while_a_request_waits():
    """Static batches of one on 3 replicas: at every start of service, the request that waited
    started the moment some replica freed its slot, and requests start in arrival order."""
    result = run(
        scenario(
            'batcher={kind="static", max_batch=1}',
            "fleet.replicas=3",
            "fleet.router=central_queue",
            "workload.rate=2.6",  # ~1 s of service each: about 0.85 busy per replica
            "sim.duration_s=400",
        )
    )
    req = result.requests.to_pandas()
    done = req[req["status"] == "completed"].sort_values("arrival_s")
    start = done["first_scheduled_s"].to_numpy()
    assert (np.diff(start) >= -1e-9).all()  # FCFS across the fleet
    waited = done[done["first_scheduled_s"] > done["arrival_s"] + 1e-9]
    assert len(waited) > 50
    frees = np.sort(req["finish_s"].dropna().to_numpy())
    gap = np.abs(
        frees[np.searchsorted(frees, waited["first_scheduled_s"] - 1e-9)]
        - waited["first_scheduled_s"].to_numpy()
    )
    assert gap.max() < 1e-9  # a waiting request starts exactly when a slot frees


def test_central_queue_leaves_undispatched_requests_unrouted_when_a_run_stops():
    result = run(
        scenario(
            'batcher={kind="static", max_batch=1}',
            "fleet.router=central_queue",
            "workload.rate=8",  # overloaded: the fleet queue grows
            "sim.drain=false",
        )
    )
    req = result.requests.to_pandas()
    held = req[req["replica"] == -1]
    assert len(held) > 10
    assert (held["status"] == "in_flight").all() and held["first_scheduled_s"].isna().all()
    assert not failures(check_run(RunData.from_result(result)))


def test_pack_fills_the_lowest_replica_with_a_free_slot_then_spills_to_the_least_loaded():
    router = Pack([_Slotted(0, 2), _Slotted(1, 2), _Slotted(0, 2)], None, 16)
    # replica 0 fills its two slots, then replica 1 its last, then replica 2
    assert [router.choose(REQ) for _ in range(5)] == [0, 0, 1, 2, 2]
    assert router.choose(REQ) == 0  # all full: the least outstanding, ties to the lowest
    router.left(1, 0)
    assert router.choose(REQ) == 1  # a slot came free on replica 1
    router.set_routable(0, False)
    router.left(0, 0)
    router.left(0, 1)
    assert router.choose(REQ) == 1  # not 0 (free slots, not routable): all full, least loaded


def test_pack_leaves_the_last_replicas_idle_at_low_load():
    data = RunData.from_result(run(scenario("fleet.replicas=3", "fleet.router=pack")))
    assert not failures(check_run(data)), failures(check_run(data))
    per_replica = data.requests["replica"].value_counts()
    assert per_replica.get(0, 0) > 0.9 * len(data.requests)
