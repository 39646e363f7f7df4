"""Routers: the heap-based least-outstanding router chooses exactly what a linear scan would."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.router
from sim.engine import run
from sim.router import LeastOutstanding, RoundRobin
from tests.conftest import scenario


class _Stub:
    """A replica stand-in with a starting load."""

    def __init__(self, outstanding: int) -> None:
        self.outstanding = outstanding


def _scan(loads: list[int]) -> int:
    """The reference: fewest outstanding, ties to the lowest index."""
    return min(range(len(loads)), key=lambda i: (loads[i], i))


def _replay(initial: list[int], ops: list[int]) -> None:
    """Apply ops (-1: route a request, i >= 0: a request leaves replica i % n if it has one)."""
    loads = list(initial)
    router = LeastOutstanding([_Stub(x) for x in initial])
    for op in ops:
        if op < 0:
            expected = _scan(loads)
            assert router.choose() == expected
            loads[expected] += 1
        else:
            index = op % len(loads)
            if loads[index]:
                router.left(index)
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
    router = RoundRobin([_Stub(0)] * 3)
    assert [router.choose() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


class _CheckedLeastOutstanding(LeastOutstanding):
    """Asserts at every arrival that the router's counts are the replicas' outstanding counts."""

    def __init__(self, replicas) -> None:
        super().__init__(replicas)
        self.replicas = replicas
        self.checks = 0

    def choose(self) -> int:
        assert self.loads() == [r.outstanding for r in self.replicas]
        self.checks += 1
        return super().choose()


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

    def checked(replicas):
        made.append(_CheckedLeastOutstanding(replicas))
        return made[-1]

    monkeypatch.setitem(sim.router.ROUTERS, "least_outstanding", checked)
    result = run(scenario(*overrides, "fleet.router=least_outstanding"))
    assert made[0].checks == result.requests.num_rows
    assert made[0].loads() == [0] * len(made[0].replicas)
