"""The engine's event count is the number of SimPy events scheduled in the run."""

from __future__ import annotations

import pytest
import simpy

import sim.engine
from sim.engine import events_scheduled, run
from tests.conftest import scenario


class _CountingEnvironment(simpy.Environment):
    """Counts schedule() calls the slow way, as the reference."""

    made: list[_CountingEnvironment] = []

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0
        _CountingEnvironment.made.append(self)

    def schedule(self, event, priority=1, delay=0) -> None:
        self.scheduled += 1
        super().schedule(event, priority, delay)


def test_events_scheduled_counts_timeouts_processes_and_triggers():
    env = _CountingEnvironment()
    wake = env.event()

    def sleeper():
        yield wake
        yield env.timeout(2.0)

    env.process(sleeper())  # Initialize event, then the process' own end event
    env.timeout(1.0).callbacks.append(lambda _: wake.succeed())
    env.run()
    assert env.scheduled == 5
    assert events_scheduled(env) == env.scheduled


def test_run_reports_every_scheduled_event(monkeypatch):
    monkeypatch.setattr(sim.engine.simpy, "Environment", _CountingEnvironment)
    _CountingEnvironment.made.clear()
    result = run(scenario("workload.rate=12", "batcher.gpu_memory_utilization=0.21"))
    (env,) = _CountingEnvironment.made
    assert result.events == env.scheduled > result.requests.num_rows


@pytest.mark.parametrize("drain", ["true", "false"])
def test_progress_bar_changes_neither_traces_nor_event_count(drain):
    overrides = ("workload.rate=30", f"sim.drain={drain}")
    quiet = run(scenario(*overrides))
    shown = run(scenario(*overrides), progress=True)
    assert shown.events == quiet.events
    assert shown.requests.to_pandas().equals(quiet.requests.to_pandas())
    assert shown.steps.equals(quiet.steps)
