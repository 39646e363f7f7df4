"""``run(scenario, seed) -> RunResult``: wires workload, replicas and router, and runs SimPy."""

from __future__ import annotations

import json
import os
import time
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
from sim.workload import Workload, generate_workload, length_bounds

# one random stream per concern, in a fixed order: adding a stream at the end shifts no other
STREAMS = ("arrivals", "classes", "lengths", "perf", "router", "prefixes")


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it schedules."""

    def __init__(self) -> None:
        super().__init__()
        self.events_scheduled = 0

    def schedule(self, event, priority=1, delay=0) -> None:  # type: ignore[override]
        self.events_scheduled += 1
        super().schedule(event, priority, delay)


class UrgentTimeout(simpy.Event):
    """A timeout processed before ordinary events at the same time (arrivals use it)."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


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

    env = CountingEnvironment()
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
    env.process(_arrivals(env, workload, replicas, make_router(scenario.fleet.router), recorder))
    horizon = None if scenario.sim.drain else scenario.sim.duration_s
    _run_env(env, horizon, recorder, len(workload), progress)

    steps = recorder.steps_table()
    end = horizon if horizon is not None else _last_activity_s(workload, steps)
    if scenario.sim.duration_s is not None:
        end = max(end, scenario.sim.duration_s)
    return RunResult(
        scenario=scenario,
        seed=seed,
        requests=recorder.requests_table(),
        steps=steps,
        simulated_s=float(end),
        wall_s=time.perf_counter() - wall_start,
        events=env.events_scheduled,
        kv_capacity_blocks=capacity,
    )


def _last_activity_s(workload: Workload, steps: pa.Table) -> float:
    """When the last arrival or iteration happened (stale timeouts may outlive both)."""
    last_arrival = float(workload.arrival_s[-1]) if len(workload) else 0.0
    last_step = float(np.max(steps["end_s"].to_numpy())) if steps.num_rows else 0.0
    return max(last_arrival, last_step)


def _arrivals(
    env: simpy.Environment,
    workload: Workload,
    replicas: list[Replica],
    router: Router,
    recorder: Recorder,
):
    """The one process that feeds every request, in arrival order, to the router."""
    arrivals = workload.arrival_s.tolist()
    prompts = workload.prompt_tokens.tolist()
    outputs = workload.output_tokens.tolist()
    classes = workload.class_index.tolist()
    priorities = workload.class_priorities
    hashes = workload.prefix_hashes or ()
    chosen = recorder.replica
    for rid, arrival_s in enumerate(arrivals):
        delay = arrival_s - env.now
        if delay > 0:
            yield UrgentTimeout(env, delay)
        cls = classes[rid]
        prefix = hashes[rid] if hashes else ()
        req = Request(rid, cls, priorities[cls], arrival_s, prompts[rid], outputs[rid], prefix)
        index = router.choose(replicas)
        chosen[rid] = index
        replicas[index].submit(req)


def _run_env(
    env: simpy.Environment, horizon: float | None, recorder: Recorder, total: int, progress: bool
) -> None:
    """Run until `horizon` (None: until no event is left), with an optional progress bar."""
    if not progress:
        env.run(until=horizon)
        return
    with tqdm(total=total, unit="req", delay=2.0, desc="simulating") as bar:
        while bar.n < total and (horizon is None or env.now < horizon):
            target = env.now + 1.0 if horizon is None else min(env.now + 1.0, horizon)
            env.run(until=target)
            bar.update(recorder.num_completed + recorder.num_rejected - bar.n)
    env.run(until=horizon)


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
