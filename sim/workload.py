"""Workload generation: arrival times, request classes and token lengths, as numpy arrays.

Everything is drawn up front from the scenario's seeded generators, so the event loop only walks
arrays. Arrival processes: Poisson, Gamma renewal (bursty, set by CV), piecewise-constant rate
schedule, diurnal sinusoid, weekly pattern (a diurnal day times a factor per day), a measured
rate curve (``time_s,rate`` CSV), and trace replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import UserError
from sim.scenario import Scenario, SimConfig
from sim.traces import Trace, read_trace
from sim.workload_config import (
    EmpiricalLength,
    FixedLength,
    LengthDist,
    LognormalLength,
    UniformLength,
    WorkloadConfig,
)


@dataclass(frozen=True)
class Workload:
    """All requests of a run, sorted by arrival; index i is request id i."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    class_index: np.ndarray
    class_names: tuple[str, ...]
    class_priorities: tuple[int, ...]
    prefix_hashes: tuple[tuple[int, ...], ...] | None = None
    prefix_block_tokens: int = 16

    def __len__(self) -> int:
        return len(self.arrival_s)


def generate_workload(
    scenario: Scenario, trace_files: Mapping[str, str], rngs: dict[str, np.random.Generator]
) -> Workload:
    """Draw every request of the scenario (streams 'arrivals', 'classes', 'lengths').

    `trace_files`: the file of each trace the scenario names (``RunSpec.trace_files``).
    """
    wl, sim = scenario.workload, scenario.sim
    if wl.arrival == TRACE_ARRIVAL:
        trace = read_trace(Path(trace_files[wl.trace or ""]), wl.trace_format)
        return _from_trace(trace, wl, sim.duration_s, sim.num_requests, rngs["classes"])
    times = arrival_times(wl, sim.duration_s, sim.num_requests, rngs["arrivals"], trace_files)
    classes = _assign_classes(wl, len(times), rngs["classes"])
    prompts = np.zeros(len(times), dtype=np.int64)
    outputs = np.zeros(len(times), dtype=np.int64)
    for k, cls in enumerate(wl.classes):
        idx = np.flatnonzero(classes == k)
        p, o = _draw_lengths(
            cls.prompt_tokens, cls.output_tokens, len(idx), rngs["lengths"], trace_files
        )
        prompts[idx], outputs[idx] = p, o
    hashes = _shared_prefixes(wl, classes, prompts, rngs["prefixes"])
    return Workload(
        times,
        prompts,
        outputs,
        classes,
        tuple(c.name for c in wl.classes),
        tuple(c.priority for c in wl.classes),
        hashes,
        SYNTHETIC_PREFIX_BLOCK_TOKENS,
    )


SYNTHETIC_PREFIX_BLOCK_TOKENS = 16
MOONCAKE_PREFIX_BLOCK_TOKENS = 512  # hash_ids of the Mooncake release cover 512-token blocks


def _shared_prefixes(
    wl: WorkloadConfig, classes: np.ndarray, prompts: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[int, ...], ...] | None:
    """Prefix block hashes of the classes' shared system prompts (None when no class has one).

    A request of a class with ``shared_prefix_tokens`` starts with that class's prompt with
    probability ``shared_prefix_fraction`` (capped at its own prompt length).
    """
    if not any(c.shared_prefix_tokens for c in wl.classes):
        return None
    block = SYNTHETIC_PREFIX_BLOCK_TOKENS
    shares = rng.uniform(size=len(classes))
    hashes: list[tuple[int, ...]] = []
    for k, prompt, u in zip(classes.tolist(), prompts.tolist(), shares.tolist(), strict=True):
        cls = wl.classes[k]
        blocks = min(cls.shared_prefix_tokens, prompt) // block
        shared = u < cls.shared_prefix_fraction
        hashes.append(tuple((k << 32) | j for j in range(blocks)) if shared else ())
    return tuple(hashes)


# ----------------------------------------------------------------------------- arrivals


def arrivals_end_s(sim: SimConfig, arrival: str, arrival_s: np.ndarray) -> float:
    """When the arrivals of a run stop, seconds: ``duration_s``, unless ``num_requests`` ran out
    first or a trace is replayed (then the last arrival); the last arrival without a duration.

    `arrival` is ``workload.arrival``; `arrival_s` the run's arrival times, in order.
    """
    capped = sim.num_requests is not None and len(arrival_s) >= sim.num_requests
    if sim.duration_s is not None and not capped and arrival != "trace":
        return float(sim.duration_s)
    return float(arrival_s[-1]) if len(arrival_s) else 0.0


def _poisson(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Exponential gaps at `rate`."""
    return _renewal(lambda n: rng.exponential(1.0 / wl.rate, n), wl.rate, duration_s, cap)


def _gamma(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Gamma gaps of mean 1 / `rate` and CV `cv` (a renewal process; bursty above CV 1)."""
    shape = 1.0 / wl.cv**2
    scale = 1.0 / (wl.rate * shape)
    return _renewal(lambda n: rng.gamma(shape, scale, n), wl.rate, duration_s, cap)


def _renewal(draw, rate: float, duration_s: float | None, cap: int | None) -> np.ndarray:
    """Cumulative sums of i.i.d. gaps, drawn in blocks until the window or the cap is filled."""
    want = cap if cap is not None else int(rate * duration_s * 1.05) + 100
    times = np.cumsum(draw(want))
    while duration_s is not None and times[-1] < duration_s and (cap is None or len(times) < cap):
        more = times[-1] + np.cumsum(draw(max(1000, len(times) // 2)))
        times = np.concatenate([times, more])
    return _clip(times, duration_s, cap)


def _schedule(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Poisson arrivals with a piecewise-constant rate (exact: memoryless within each piece)."""
    schedule = wl.schedule or []
    ends = [s for s, _ in schedule[1:]] + [np.inf]
    pieces = []
    count = 0
    for (start, rate), end in zip(schedule, ends, strict=True):
        stop = min(end, duration_s if duration_s is not None else np.inf)
        if start >= stop:
            break
        if rate > 0:
            if np.isinf(stop):
                need = cap - count if cap is not None else 0
                t = start + np.cumsum(rng.exponential(1.0 / rate, need))
            else:
                n = rng.poisson(rate * (stop - start))
                t = np.sort(rng.uniform(start, stop, n))
            pieces.append(t)
            count += len(t)
        if cap is not None and count >= cap:
            break
    if not pieces or (duration_s is None and cap is None):
        raise UserError("workload.schedule yields no arrivals; check its rates and sim.duration_s")
    return _clip(np.concatenate(pieces), duration_s, cap)


def _diurnal(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Rate r(t) = rate * (1 + A sin(2 pi t / P)), by thinning a Poisson process at the peak."""
    peak = wl.rate * (1.0 + wl.diurnal_amplitude)
    candidates = _renewal(lambda n: rng.exponential(1.0 / peak, n), peak, duration_s, None)
    keep_p = 1.0 + wl.diurnal_amplitude * np.sin(2 * np.pi * candidates / wl.diurnal_period_s)
    keep = rng.uniform(0.0, 1.0 + wl.diurnal_amplitude, len(candidates)) < keep_p
    return _clip(candidates[keep], duration_s, cap)


SECONDS_PER_DAY = 86400.0
THINNING_BLOCK = 65536  # candidate arrivals drawn at a time when only a count caps the arrivals


def _thinned(
    rate_at, peak: float, duration_s: float | None, cap: int | None, rng: np.random.Generator
) -> np.ndarray:
    """A Poisson process of rate `rate_at(t)` <= `peak`, by thinning one at the peak rate."""
    kept: list[np.ndarray] = []
    start, count = 0.0, 0
    while True:
        if duration_s is not None:
            candidates = _renewal(lambda n: rng.exponential(1.0 / peak, n), peak, duration_s, None)
        else:
            candidates = start + np.cumsum(rng.exponential(1.0 / peak, THINNING_BLOCK))
        keep = rng.uniform(0.0, peak, len(candidates)) < rate_at(candidates)
        kept.append(candidates[keep])
        count += int(keep.sum())
        if duration_s is not None or (cap is not None and count >= cap):
            return _clip(np.concatenate(kept), duration_s, cap)
        start = float(candidates[-1])


def _weekly(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Rate r(t) = rate * day_factors[day] * (1 + A sin(2 pi t / 1 day)); the run starts on
    day 0 at midnight."""
    factors = np.asarray(wl.day_factors, dtype=np.float64)
    amplitude = wl.diurnal_amplitude

    def rate_at(t: np.ndarray) -> np.ndarray:
        day = (t // SECONDS_PER_DAY).astype(np.int64) % 7
        return wl.rate * factors[day] * (1.0 + amplitude * np.sin(2 * np.pi * t / SECONDS_PER_DAY))

    return _thinned(rate_at, wl.rate * factors.max() * (1.0 + amplitude), duration_s, cap, rng)


def _rate_curve(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    files: Mapping[str, str],
) -> np.ndarray:
    """Poisson arrivals whose rate follows a measured curve (`files` maps the scenario's
    ``rate_curve`` to its file), linear between its points and held at its last rate after."""
    assert wl.rate_curve is not None
    times, rates = read_rate_curve(Path(files[wl.rate_curve]))

    def rate_at(t: np.ndarray) -> np.ndarray:
        return np.interp(t, times, rates)

    return _thinned(rate_at, float(rates.max()), duration_s, cap, rng)


def read_rate_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A rate curve CSV (header ``time_s,rate``; times from 0, increasing; rates >= 0 per
    second, not all 0): its times and rates. UserError naming the file otherwise."""
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().strip()
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except FileNotFoundError:
        raise UserError(f"{path}: no such rate curve") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a rate curve of numbers ({exc})") from None
    if header != "time_s,rate" or data.shape[1] != 2 or len(data) < 1:
        raise UserError(f"{path}: a rate curve has the header time_s,rate and one or more rows")
    times, rates = data[:, 0], data[:, 1]
    if not (np.isfinite(data).all() and times[0] == 0 and (np.diff(times) > 0).all()):
        raise UserError(f"{path}: times must start at 0 and increase (seconds)")
    if (rates < 0).any() or not (rates > 0).any():
        raise UserError(f"{path}: rates must be >= 0 and not all 0 (requests per second)")
    return times, rates


# synthetic arrival processes by ``workload.arrival``; "trace" replays a file instead
ARRIVAL_PROCESSES = {
    "poisson": _poisson,
    "gamma": _gamma,
    "schedule": _schedule,
    "diurnal": _diurnal,
    "weekly": _weekly,
    "rate_curve": _rate_curve,
}
TRACE_ARRIVAL = "trace"


def arrival_times(
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
    trace_files: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Arrival times in seconds, increasing, inside [0, duration_s) and at most `cap` of them.

    `trace_files`: the file of each file the scenario names (``RunSpec.trace_files``).
    """
    return ARRIVAL_PROCESSES[wl.arrival](wl, duration_s, cap, rng, trace_files or {})


def _clip(times: np.ndarray, duration_s: float | None, cap: int | None) -> np.ndarray:
    if duration_s is not None:
        times = times[times < duration_s]
    if cap is not None:
        times = times[:cap]
    return np.ascontiguousarray(times, dtype=np.float64)


# ----------------------------------------------------------------------------- classes, lengths


def _assign_classes(wl: WorkloadConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    shares = np.array([c.share for c in wl.classes], dtype=np.float64)
    if len(shares) == 1:
        return np.zeros(n, dtype=np.int16)
    return rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int16)


def _draw_lengths(
    prompt: LengthDist,
    output: LengthDist,
    n: int,
    rng: np.random.Generator,
    trace_files: Mapping[str, str],
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths; two empirical draws from one trace share their rows."""
    both_empirical = isinstance(prompt, EmpiricalLength) and isinstance(output, EmpiricalLength)
    if both_empirical and prompt.trace == output.trace:
        trace = read_trace(Path(trace_files[prompt.trace]))
        rows = rng.integers(0, len(trace.arrival_s), n)
        return trace.prompt_tokens[rows], trace.output_tokens[rows]
    return (
        _draw(prompt, n, rng, trace_files, "prompt"),
        _draw(output, n, rng, trace_files, "output"),
    )


def _draw(
    dist: LengthDist,
    n: int,
    rng: np.random.Generator,
    trace_files: Mapping[str, str],
    column: str,
) -> np.ndarray:
    """Token counts (>= 1) from one length distribution."""
    if isinstance(dist, FixedLength):
        return np.full(n, dist.value, dtype=np.int64)
    if isinstance(dist, UniformLength):
        return rng.integers(dist.low, dist.high + 1, n).astype(np.int64)
    if isinstance(dist, LognormalLength):
        if dist.median is not None:
            mu, sigma = np.log(dist.median), np.sqrt(2.0 * np.log(dist.mean / dist.median))
        else:
            sigma = np.sqrt(np.log1p(dist.cv**2))
            mu = np.log(dist.mean) - sigma**2 / 2.0
        values = np.maximum(1, np.rint(rng.lognormal(mu, sigma, n))).astype(np.int64)
        return np.minimum(values, dist.max) if dist.max is not None else values
    trace = read_trace(Path(trace_files[dist.trace]))
    source = trace.prompt_tokens if column == "prompt" else trace.output_tokens
    return source[rng.integers(0, len(source), n)]


def length_bounds(
    dist: LengthDist, trace_files: Mapping[str, str], column: str
) -> tuple[int, int | None]:
    """Smallest and largest possible draw (None = unbounded); `column` is prompt or output."""
    if isinstance(dist, FixedLength):
        return dist.value, dist.value
    if isinstance(dist, UniformLength):
        return dist.low, dist.high
    if isinstance(dist, LognormalLength):
        return 1, dist.max
    trace = read_trace(Path(trace_files[dist.trace]))
    source = trace.prompt_tokens if column == "prompt" else trace.output_tokens
    return int(source.min()), int(source.max())


# ----------------------------------------------------------------------------- traces


def replay_rate_per_s(scenario: Scenario, trace_files: Mapping[str, str]) -> float:
    """Requests per second of the scenario's trace replayed at ``load_scale = 1``: the arrivals
    its ``num_requests`` and ``duration_s`` keep, over their span (`trace_files`: as for
    :func:`generate_workload`)."""
    wl, sim = scenario.workload, scenario.sim
    trace = read_trace(Path(trace_files[wl.trace or ""]), wl.trace_format)
    times = _clip(trace.arrival_s, sim.duration_s, sim.num_requests)
    if len(times) < 2 or times[-1] <= times[0]:
        raise UserError(f"{scenario.name}: workload.trace has no arrival span to take a rate of")
    return len(times) / float(times[-1] - times[0])


def _from_trace(
    trace: Trace,
    wl: WorkloadConfig,
    duration_s: float | None,
    cap: int | None,
    rng: np.random.Generator,
) -> Workload:
    times = trace.arrival_s / wl.load_scale
    n = len(_clip(times, duration_s, cap))
    names = tuple(c.name for c in wl.classes) or ("trace",)
    priorities = tuple(c.priority for c in wl.classes) or (0,)
    classes = _assign_classes(wl, n, rng) if wl.classes else np.zeros(n, dtype=np.int16)
    hashes = trace.prefix_hashes[:n] if trace.prefix_hashes is not None else None
    return Workload(
        np.ascontiguousarray(times[:n]),
        trace.prompt_tokens[:n].copy(),
        trace.output_tokens[:n].copy(),
        classes,
        names,
        priorities,
        hashes,
        MOONCAKE_PREFIX_BLOCK_TOKENS,
    )
