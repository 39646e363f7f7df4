"""Run the validation cases as independent replications and compare them with theory.

Replications run in parallel worker processes (one engine run each). Each replication starts
empty, drops the arrivals of its first `WARMUP_RELAXATIONS` relaxation times through
``sim.warmup_s`` (the start-empty bias decays like exp(-t / relaxation)), keeps at least
`MEASURED_RELAXATIONS` relaxation times of arrivals, and yields one mean per metric; the checker
of ``analysis.invariants`` must pass on every run.
"""

from __future__ import annotations

import math
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from analysis.invariants import check_run, failures
from analysis.metrics import latencies
from analysis.rundata import RunData
from sim.engine import run
from sim.processes import process_pool
from sim.scenario import scenario_from_dict
from sim.validation.cases import LOADS, Case, all_cases, requests_needed
from sim.validation.stats import (
    Interval,
    passes,
    per_check_confidence,
    relative_error,
    t_interval,
)

WARMUP_RELAXATIONS = 5.0
MEASURED_RELAXATIONS = 5.0
MIN_REQUESTS_PER_REPLICATION = 2_000
MAX_REPLICATION_FACTOR = 4  # second stage: at most this many times the first's replications
# The second stage aims for a relative standard error of tolerance / 3.5: an exact engine then
# misses the tolerance with probability P(|Z| > 3.5) ~ 5e-4 per check, ~5% over 100 checks.
TOLERANCE_IN_STANDARD_ERRORS = 3.5
WAIT_EPS_S = 1e-9  # a wait above this counts as waiting (arrival times are float sums)


@dataclass(frozen=True)
class Profile:
    """How hard to validate: loads, precision, replications and the relative tolerance."""

    name: str
    loads: tuple[float, ...]
    target_rse: float
    replications: int
    tolerance: float


FULL = Profile("full", LOADS, target_rse=0.01, replications=10, tolerance=0.03)
# the slow test suite: the full precision at the loads that fit CI's time limit (rho = 0.95
# takes 2.7x the engine time of all other loads together; docs/validation.md covers it)
CI = Profile("ci", LOADS[:3], target_rse=0.01, replications=10, tolerance=0.03)
QUICK = Profile("quick", (0.5, 0.8), target_rse=0.03, replications=10, tolerance=0.10)


def replication_metrics(case: Case, num_requests: int, seed: int) -> dict[str, float]:
    """Run one replication of `case` and return its metric values (after warm-up)."""
    warmup_s = WARMUP_RELAXATIONS * case.relaxation_s
    scenario = scenario_from_dict(
        {
            **case.scenario,
            "name": f"{case.name} rho={case.rho}",
            "sim": {"seed": seed, "num_requests": num_requests, "warmup_s": warmup_s},
        }
    )
    data = RunData.from_result(run(scenario))
    broken = failures(check_run(data))
    if broken:
        raise AssertionError(
            f"{scenario.name} seed {seed}: invariants broken: "
            + "; ".join(f"{b.name} ({b.violations}x, e.g. {b.example})" for b in broken)
        )
    wall_s = data.run["wall_s"]
    lat = latencies(data.measured)
    wait = lat["queue"].to_numpy()
    return {
        "mean_wait_s": float(wait.mean()),
        "p_wait": float((wait > WAIT_EPS_S).mean()),
        "max_wait_s": float(wait.max()),
        "mean_sojourn_s": float(lat["e2e"].mean()),
        "wall_s": float(wall_s),
    }


def case_seed(case: Case) -> int:
    """First seed of a case's replications: the same in every profile that runs the case."""
    return zlib.crc32(f"{case.name}|{case.rho}".encode()) * 1000


def _task(args: tuple[Case, int, int]) -> dict[str, float]:
    return replication_metrics(*args)


def plan(profile: Profile) -> list[tuple[Case, int]]:
    """Each case of the profile with its requests per replication."""
    out = []
    for case in all_cases(profile.loads):
        measured = requests_needed(case, profile.target_rse) / profile.replications
        measured = max(measured, MEASURED_RELAXATIONS * case.relaxation_s * case.arrival_rate)
        warmup = WARMUP_RELAXATIONS * case.relaxation_s * case.arrival_rate
        per_rep = max(MIN_REQUESTS_PER_REPLICATION, math.ceil(measured + warmup))
        out.append((case, per_rep))
    return out


def run_validation(
    profile: Profile, workers: int | None = None, progress: bool = False
) -> list[dict]:
    """Every check of the profile: theory, simulated mean, interval and verdict (JSON-ready).

    Two stages: `profile.replications` replications of every case (sized for
    `profile.target_rse`), then, for a case whose equality checks came out less precise than
    `second_stage_rse(profile)`, more replications of the same size, as many as the first
    stage's variance says that needs (at most `MAX_REPLICATION_FACTOR` times the first stage).
    `progress` shows a bar of replications done per stage on stderr.
    """
    planned = plan(profile)
    workers = workers or os.cpu_count() or 1
    reps: list[list[dict[str, float]]] = [[] for _ in planned]
    with process_pool(workers) as pool:
        first = {k: profile.replications for k in range(len(planned))}
        _run_replications(pool, planned, first, reps, "stage 1" if progress else None)
        more = {
            k: _replications_needed(case, reps[k], profile) - len(reps[k])
            for k, (case, _) in enumerate(planned)
        }
        more = {k: n for k, n in more.items() if n > 0}
        _run_replications(pool, planned, more, reps, "stage 2" if progress else None)
    num_checks = sum(len(case.checks) for case, _ in planned)
    confidence = per_check_confidence(num_checks)
    entries = []
    for k, (case, per_rep) in enumerate(planned):
        for check in case.checks:
            values = np.array([r[check.metric] for r in reps[k]])
            ci = _summarize(values, check.relation, confidence)
            entries.append(
                {
                    "case": case.name,
                    "rho": case.rho,
                    "metric": check.metric,
                    "relation": check.relation,
                    "theory": check.theory,
                    "simulated": ci.mean,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "rel_error": relative_error(ci.mean, check.theory),
                    "passed": passes(check.relation, check.theory, ci, profile.tolerance),
                    "requests": per_rep * len(reps[k]),
                    "wall_s": float(sum(r["wall_s"] for r in reps[k])),
                    "replications": len(reps[k]),
                    "confidence": confidence,
                    "tolerance": profile.tolerance,
                }
            )
    return entries


def _run_replications(
    pool: ProcessPoolExecutor,
    planned: list[tuple[Case, int]],
    counts: dict[int, int],
    reps: list[list[dict[str, float]]],
    progress: str | None = None,
) -> None:
    """Run `counts[k]` more replications of case k (seeds follow on), biggest first; a
    `progress` label shows a bar of replications done."""
    tasks = [
        (k, (planned[k][0], planned[k][1], case_seed(planned[k][0]) + len(reps[k]) + i))
        for k, n in counts.items()
        for i in range(n)
    ]
    tasks.sort(key=lambda t: -t[1][1] * t[1][0].cost)
    done = []
    with tqdm(total=len(tasks), unit="run", desc=progress, disable=progress is None) as bar:
        for metrics in pool.map(_task, [t[1] for t in tasks]):
            done.append(metrics)
            bar.update()
    results = list(zip([t[0] for t in tasks], [t[1][2] for t in tasks], done, strict=True))
    for k, _, metrics in sorted(results, key=lambda r: (r[0], r[1])):
        reps[k].append(metrics)


def second_stage_rse(profile: Profile) -> float:
    """The relative standard error the second stage aims for on every equality."""
    return min(profile.target_rse, profile.tolerance / TOLERANCE_IN_STANDARD_ERRORS)


def _replications_needed(case: Case, reps: list[dict[str, float]], profile: Profile) -> int:
    """Replications for a relative standard error of `second_stage_rse` on every equality."""
    worst = 0.0
    for check in case.checks:
        if check.relation != "=":
            continue
        values = np.array([r[check.metric] for r in reps])
        rse = values.std(ddof=1) / np.sqrt(len(values)) / abs(values.mean())
        worst = max(worst, float(rse))
    needed = math.ceil(len(reps) * (worst / second_stage_rse(profile)) ** 2)
    return min(max(needed, len(reps)), MAX_REPLICATION_FACTOR * profile.replications)


def _summarize(values: np.ndarray, relation: str, confidence: float) -> Interval:
    """A maximum is reported as the largest over replications; means get a t interval."""
    if relation == "<=":
        top = float(values.max())
        return Interval(top, top, top)
    return t_interval(values, confidence)


PROFILES = {p.name: p for p in (FULL, CI, QUICK)}
