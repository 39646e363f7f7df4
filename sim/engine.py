"""``run(scenario, seed) -> RunResult``: wires workload, replicas and router, and runs SimPy."""

from __future__ import annotations

import json
import math
import os
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import simpy
from simpy.core import URGENT
from tqdm import tqdm

from sim.batching import make_batcher
from sim.errors import UserError
from sim.memory import kv_capacity_blocks, swap_s_per_block
from sim.perf import make_step_time_model
from sim.recorder import Recorder, write_table
from sim.replica import Replica
from sim.request import Request
from sim.router import Router, make_router
from sim.scenario import Scenario
from sim.workload import Workload, arrivals_end_s, generate_workload, length_bounds

# one random stream per concern, in a fixed order: adding a stream at the end shifts no other
STREAMS = ("arrivals", "classes", "lengths", "perf", "router", "prefixes")
PROGRESS_EVERY_EVENTS = 4096  # progress-bar refresh period


def events_scheduled(env: simpy.Environment) -> int:
    """How many events `env` has scheduled so far (every one is also processed in a drained run).

    SimPy numbers each scheduled event from the counter ``env._eid`` (its tie-breaker at equal
    times and priorities), so the count costs nothing during the run. Reading takes the next
    number, which only leaves a gap in the numbering.
    """
    return next(env._eid)


@dataclass
class RunResult:
    """The traces and facts of one simulation run."""

    scenario: Scenario
    seed: int
    requests: pa.Table
    steps: pa.Table
    simulated_s: float
    wall_s: float
    events: int
    kv_capacity_blocks: int

    def run_facts(self) -> dict:
        """Engine facts stored beside the traces (run.json)."""
        return {
            "seed": self.seed,
            "simulated_s": self.simulated_s,
            "wall_s": self.wall_s,
            "events": self.events,
            "kv_capacity_blocks": self.kv_capacity_blocks,
        }

    def resolved_scenario(self) -> dict:
        """The scenario with every catalogue reference spelled out (scenario.json)."""
        s = self.scenario
        return {
            "scenario": s.model_dump(mode="json"),
            "resolved": {
                "accelerator": s.accelerator().model_dump(mode="json"),
                "model_shape": s.model_shape().model_dump(mode="json"),
                "kv_capacity_blocks": self.kv_capacity_blocks,
                "gpus_per_replica": s.fleet.tp,
            },
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write requests.parquet, steps.parquet, scenario.json and run.json into `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.requests, out / "requests.parquet")
        write_table(self.steps, out / "steps.parquet")
        _write_json(out / "scenario.json", self.resolved_scenario())
        _write_json(out / "run.json", self.run_facts())
        return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def make_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """Independent seed sequences, one per concern, derived from the scenario seed."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)), strict=True))


def run(scenario: Scenario, seed: int | None = None, progress: bool = False) -> RunResult:
    """Simulate `scenario` with `seed` (default: the scenario's) and return its traces."""
    seed = scenario.sim.seed if seed is None else seed
    wall_start = time.perf_counter()
    streams = make_streams(seed)
    rngs = {name: np.random.default_rng(seq) for name, seq in streams.items()}
    workload = generate_workload(scenario, rngs)
    capacity = kv_capacity_blocks(scenario)
    _check_prompts_can_fit(scenario, capacity)

    env = simpy.Environment()
    recorder = Recorder(workload)
    perf_seeds = streams["perf"].spawn(scenario.fleet.replicas)
    replicas = [
        Replica(
            env,
            i,
            make_batcher(
                scenario.batcher,
                capacity,
                recorder,
                swap_s_per_block(scenario),
                workload.prefix_block_tokens,
            ),
            make_step_time_model(scenario, np.random.default_rng(perf_seeds[i])),
            recorder,
            scenario.sim.step_compression,
        )
        for i in range(scenario.fleet.replicas)
    ]
    router = make_router(scenario.fleet.router, replicas)
    feed = ArrivalFeed(env, workload, replicas, router, recorder)
    recorder.on_leave = feed.left
    feed.start()
    horizon = None if scenario.sim.drain else scenario.sim.duration_s
    _run_env(env, horizon, recorder, len(workload), progress)

    steps = recorder.steps_table()
    end = horizon if horizon is not None else _last_activity_s(workload, steps)
    end = max(end, arrivals_end_s(scenario.sim, scenario.workload.arrival, workload.arrival_s))
    return RunResult(
        scenario=scenario,
        seed=seed,
        requests=recorder.requests_table(),
        steps=steps,
        simulated_s=float(end),
        wall_s=time.perf_counter() - wall_start,
        events=events_scheduled(env),
        kv_capacity_blocks=capacity,
    )


def _last_activity_s(workload: Workload, steps: pa.Table) -> float:
    """When the last arrival or iteration happened (stale timeouts may outlive both)."""
    last_arrival = float(workload.arrival_s[-1]) if len(workload) else 0.0
    last_step = float(np.max(steps["end_s"].to_numpy())) if steps.num_rows else 0.0
    return max(last_arrival, last_step)


class ArrivalFeed:
    """Feeds every request, in arrival order, to the router and the chosen replica.

    One URGENT event per distinct arrival time (processed before iteration boundaries at the
    same time); its callback submits the request(s) arriving then and schedules the next.
    A chain of callbacks rather than a SimPy process: it skips the generator resumption.

    A request the router holds (``choose()`` returns None) waits in the fleet's FIFO `held`;
    when a request leaves a replica, an URGENT event at the same time dispatches held requests
    while the router finds them a replica (an event rather than a direct call, so that no
    request enters a batcher in the middle of its own bookkeeping).
    """

    def __init__(
        self,
        env: simpy.Environment,
        workload: Workload,
        replicas: list[Replica],
        router: Router,
        recorder: Recorder,
    ) -> None:
        self.env, self.replicas, self.router, self.recorder = env, replicas, router, recorder
        # array buffers rather than lists: a million Python numbers would cost ~100 MB
        self._arrival_s = _buffer(workload.arrival_s, "d")
        self._prompts = _buffer(workload.prompt_tokens, "q")
        self._outputs = _buffer(workload.output_tokens, "q")
        self._classes = _buffer(workload.class_index, "h")
        self._priorities = workload.class_priorities
        self._prefixes = workload.prefix_hashes
        self._next = 0
        self.held: deque[Request] = deque()
        self._dispatch_pending = False

    def start(self) -> None:
        """Schedule the first arrival."""
        if self._arrival_s:
            self._schedule(self._arrival_s[0])

    def left(self, index: int) -> None:
        """A request left replica `index`: tell the router; dispatch held requests soon."""
        self.router.left(index)
        if self.held and not self._dispatch_pending:
            self._dispatch_pending = True
            self._schedule(self.env.now, self._dispatch_held)

    def _dispatch_held(self, _event: simpy.Event) -> None:
        self._dispatch_pending = False
        held, choose = self.held, self.router.choose
        while held and (index := choose()) is not None:
            req = held.popleft()
            self.recorder.replica[req.rid] = index
            self.replicas[index].submit(req)

    def _schedule(self, at_s: float, callback: Callable[[simpy.Event], None] | None = None) -> None:
        """An URGENT event at `at_s` whose callback is `callback` (default: the next arrival)."""
        event = simpy.Event(self.env)
        event._ok, event._value = True, None
        event.callbacks.append(callback or self._arrive)
        self.env.schedule(event, URGENT, at_s - self.env.now)

    def _arrive(self, _event: simpy.Event) -> None:
        """Submit the request this event is for and any due at the same time; schedule the next."""
        now, arrivals, rid = self.env.now, self._arrival_s, self._next
        classes, priorities, prefixes = self._classes, self._priorities, self._prefixes
        prompts, outputs = self._prompts, self._outputs
        chosen, replicas, choose = self.recorder.replica, self.replicas, self.router.choose
        held = self.held
        while True:
            cls = classes[rid]
            prefix = prefixes[rid] if prefixes else ()
            req = Request(
                rid, cls, priorities[cls], arrivals[rid], prompts[rid], outputs[rid], prefix
            )
            index = None if held else choose()  # nobody overtakes a held request
            if index is None:
                held.append(req)
            else:
                chosen[rid] = index
                replicas[index].submit(req)
            rid += 1
            if rid == len(arrivals) or arrivals[rid] > now:
                break
        self._next = rid
        if rid < len(arrivals):
            self._schedule(arrivals[rid])


def _buffer(values: np.ndarray, typecode: str) -> array:
    """`values` as an ``array.array`` whose items read back as plain Python numbers."""
    out = array(typecode)
    out.frombytes(np.ascontiguousarray(values, dtype=np.dtype(typecode)).tobytes())
    return out


def _run_env(
    env: simpy.Environment, horizon: float | None, recorder: Recorder, total: int, progress: bool
) -> None:
    """Process events until none is left or the next one is at or after `horizon`.

    A loop over ``env.step()`` rather than ``env.run(until=...)``, whose stop events would
    count as simulation events and make the count depend on the progress bar.
    """
    if horizon is None and not progress:
        env.run()
        return
    limit = math.inf if horizon is None else horizon
    step, peek = env.step, env.peek
    with tqdm(total=total, unit="req", delay=2.0, desc="simulating", disable=not progress) as bar:
        processed = 0
        while peek() < limit:
            step()
            processed += 1
            if not processed % PROGRESS_EVERY_EVENTS:
                bar.update(recorder.num_completed + recorder.num_rejected - bar.n)
        bar.update(recorder.num_completed + recorder.num_rejected - bar.n)


def _check_prompts_can_fit(scenario: Scenario, capacity_blocks: int) -> None:
    """Refuse a class whose every prompt is longer than a replica's whole KV cache."""
    block_size = scenario.batcher.block_size
    for cls in scenario.workload.classes:
        if cls.prompt_tokens is None:
            continue
        shortest, _ = length_bounds(cls.prompt_tokens, Path(scenario.base_dir), "prompt")
        if shortest > capacity_blocks * block_size:
            raise UserError(
                f"{scenario.name}: workload.classes '{cls.name}': prompt_tokens of at least "
                f"{shortest} tokens never fit the KV cache of a replica "
                f"({capacity_blocks * block_size} tokens on fleet.tp = {scenario.fleet.tp} x "
                f"'{scenario.fleet.gpu}'); shorten the prompts or add memory (tp, gpu, "
                f"gpu_memory_utilization)"
            )
