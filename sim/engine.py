"""``run(scenario, seed) -> RunResult``: wires workload, replicas and router, and runs SimPy."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import simpy
from tqdm import tqdm

from sim.autoscale import start_autoscalers
from sim.errors import SimWarning, UserError
from sim.events import schedule_urgent
from sim.fleet import Fleet
from sim.recorder import Recorder, write_table
from sim.request import Request
from sim.resolve import resolve
from sim.runspec import RunSpec
from sim.scenario import Scenario
from sim.workload import Workload, arrivals_end_s, generate_workload

# one random stream per concern, in a fixed order: adding a stream at the end shifts no other
STREAMS = ("arrivals", "classes", "lengths", "perf", "router", "prefixes", "failures", "reclaims")
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
    """The traces and facts of one simulation run; `spec` holds the seed the run used."""

    spec: RunSpec
    seed: int
    requests: pa.Table
    steps: pa.Table
    fleet: pa.Table
    simulated_s: float
    wall_s: float
    events: int
    rejections: pa.Table | None = None  # request_id, reason; None when none was rejected

    @property
    def scenario(self) -> Scenario:
        return self.spec.scenario

    def run_facts(self) -> dict:
        """Engine facts stored beside the traces (run.json)."""
        return {
            "seed": self.seed,
            "simulated_s": self.simulated_s,
            "wall_s": self.wall_s,
            "events": self.events,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write requests.parquet, steps.parquet, fleet.parquet, scenario.json and run.json
        into `out_dir`, and rejections.parquet when a request was rejected."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.requests, out / "requests.parquet")
        write_table(self.steps, out / "steps.parquet")
        write_table(self.fleet, out / "fleet.parquet")
        if self.rejections is not None:
            write_table(self.rejections, out / "rejections.parquet")
        _write_json(out / "scenario.json", self.spec.to_json())
        _write_json(out / "run.json", self.run_facts())
        return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def make_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """Independent seed sequences, one per concern, derived from the scenario seed."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)), strict=True))


def run(scenario: Scenario | RunSpec, seed: int | None = None, progress: bool = False) -> RunResult:
    """Simulate a run with `seed` (default: the scenario's) and return its traces.

    A Scenario is resolved first (``sim.resolve``); a RunSpec runs as it is.
    """
    spec = resolve(scenario) if isinstance(scenario, Scenario) else scenario
    seed = spec.scenario.sim.seed if seed is None else seed
    if seed < 0:
        raise UserError(f"{spec.name}: seed {seed} (sim.seed or --seed): must be >= 0")
    spec = spec.with_seed(seed)
    sim = spec.scenario.sim
    wall_start = time.perf_counter()
    streams = make_streams(seed)
    rngs = {name: np.random.default_rng(seq) for name, seq in streams.items()}
    workload = generate_workload(spec.scenario, spec.trace_files, rngs)
    _warn_if_nothing_is_measured(spec.scenario, workload)

    env = simpy.Environment()
    pool_names = [p.name for p in spec.replica_pools()] if len(spec.pools) > 1 else None
    retries = any(p.lifecycle.failures or p.lifecycle.reclaim for p in spec.pools)
    recorder = Recorder(
        workload,
        pool_names,
        longest_context=spec.pads_decode_attention,
        disaggregated=spec.disaggregated,
        retries=retries,
    )
    fleet = Fleet(
        env,
        spec,
        recorder,
        streams["perf"],
        streams["router"],
        workload.prefix_block_tokens,
        streams["failures"],
        streams["reclaims"],
    )
    fleet.start()
    start_autoscalers(env, fleet)
    ArrivalFeed(env, workload, fleet, recorder, over_context(workload, spec)).start()
    horizon = None if sim.drain else sim.duration_s
    _run_env(env, horizon, recorder, len(workload), progress)

    steps = recorder.steps_table()
    end = horizon if horizon is not None else _last_activity_s(workload, steps)
    end = max(end, arrivals_end_s(sim, spec.scenario.workload.arrival, workload.arrival_s))
    return RunResult(
        spec=spec,
        seed=seed,
        requests=recorder.requests_table(),
        steps=steps,
        fleet=recorder.fleet_table([p.name for p in spec.pools]),
        simulated_s=float(end),
        wall_s=time.perf_counter() - wall_start,
        events=events_scheduled(env),
        rejections=recorder.rejections_table(),
    )


def over_context(workload: Workload, spec: RunSpec) -> np.ndarray | None:
    """Which requests the server refuses at once because prompt + output tokens exceed the
    context of their class's model (vLLM's OpenAI server refuses prompt + max_tokens >
    max_model_len); None when none does."""
    shapes = {p.model: p.model_shape for p in spec.pools}
    unlimited = np.iinfo(np.int64).max
    limits = np.array([shapes[m].max_context or unlimited for m in spec.class_models])
    too_long = workload.prompt_tokens + workload.output_tokens > limits[workload.class_index]
    return too_long if too_long.any() else None


def _last_activity_s(workload: Workload, steps: pa.Table) -> float:
    """When the last arrival or iteration happened (stale timeouts may outlive both)."""
    last_arrival = float(workload.arrival_s[-1]) if len(workload) else 0.0
    last_step = float(np.max(steps["end_s"].to_numpy())) if steps.num_rows else 0.0
    return max(last_arrival, last_step)


class ArrivalFeed:
    """Hands every request, in arrival order, to the fleet.

    One URGENT event per distinct arrival time (processed before iteration boundaries at the
    same time); its callback submits the request(s) arriving then and schedules the next.

    A request longer than its model's context (`too_long`) is recorded as rejected on arrival,
    before the fleet sees it (replica -1), as vLLM's OpenAI server refuses it.
    """

    def __init__(
        self,
        env: simpy.Environment,
        workload: Workload,
        fleet: Fleet,
        recorder: Recorder,
        too_long: np.ndarray | None = None,
    ) -> None:
        self.env, self.fleet, self.recorder, self._too_long = env, fleet, recorder, too_long
        # array buffers rather than lists: a million Python numbers would cost ~100 MB
        self._arrival_s = _buffer(workload.arrival_s, "d")
        self._prompts = _buffer(workload.prompt_tokens, "q")
        self._outputs = _buffer(workload.output_tokens, "q")
        self._classes = _buffer(workload.class_index, "h")
        self._priorities = workload.class_priorities
        self._prefixes = workload.prefix_hashes
        self._next = 0

    def start(self) -> None:
        """Schedule the first arrival."""
        if self._arrival_s:
            schedule_urgent(self.env, self._arrival_s[0], self._arrive)

    def _arrive(self, _event: simpy.Event) -> None:
        """Submit the request this event is for and any due at the same time; schedule the next."""
        now, arrivals, rid = self.env.now, self._arrival_s, self._next
        classes, priorities, prefixes = self._classes, self._priorities, self._prefixes
        prompts, outputs, submit = self._prompts, self._outputs, self.fleet.submit
        too_long, rejected = self._too_long, self.recorder.rejected
        while True:
            if too_long is not None and too_long[rid]:
                rejected(rid, "max_context")
            else:
                cls = classes[rid]
                prefix = prefixes[rid] if prefixes else ()
                req = Request(
                    rid, cls, priorities[cls], arrivals[rid], prompts[rid], outputs[rid], prefix
                )
                submit(req)
            rid += 1
            if rid == len(arrivals) or arrivals[rid] > now:
                break
        self._next = rid
        if rid < len(arrivals):
            schedule_urgent(self.env, arrivals[rid], self._arrive)


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


def _warn_if_nothing_is_measured(scenario: Scenario, workload: Workload) -> None:
    """Warn, before simulating, of a warm-up that every arrival falls into (a num_requests or
    trace run; ``warmup_s >= duration_s`` is a scenario error): statistics would be empty."""
    warmup_s = scenario.sim.warmup_s
    if warmup_s > 0 and (not len(workload) or workload.arrival_s[-1] < warmup_s):
        last = f"the last at {workload.arrival_s[-1]:.6g} s" if len(workload) else "none"
        warnings.warn(
            f"{scenario.name}: sim.warmup_s = {warmup_s:g}: all {len(workload)} requests arrive "
            f"before it ({last}), so no latency or throughput will be measured",
            SimWarning,
            stacklevel=3,
        )
