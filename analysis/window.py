"""The measurement window of a run: from the end of the warm-up to the end of the arrivals.

Latency, throughput, utilization and the steady-state economics of a summary are all measured
over this one window (docs/economics.md). Before it lies the warm-up, after it the drain tail
(requests still being served after the last arrival); both are reported, in the whole-run
totals, but neither is billed into the steady state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.rundata import RunData
from sim.workload import arrivals_end_s


@dataclass(frozen=True)
class Window:
    """[start_s, end_s] of a run, seconds."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length of the window, seconds (0 when the warm-up outlasts the arrivals)."""
        return max(0.0, self.end_s - self.start_s)

    def clip(self, start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
        """Seconds of each interval [start_s, end_s] inside the window."""
        inside = np.minimum(end_s, self.end_s) - np.maximum(start_s, self.start_s)
        return np.clip(inside, 0.0, None)

    def holds(self, times: pd.Series) -> pd.Series:
        """Which of `times` lie in the window (both ends included)."""
        return times.between(self.start_s, self.end_s)


def measurement_window(data: RunData) -> Window:
    """[warmup_s, end of the arrivals] of a run (see ``sim.workload.arrivals_end_s``)."""
    sim, arrival = data.scenario.sim, data.scenario.workload.arrival
    end = arrivals_end_s(sim, arrival, data.requests["arrival_s"].to_numpy())
    return Window(sim.warmup_s, end)


def completed_in(data: RunData, window: Window) -> pd.DataFrame:
    """Requests that completed inside `window` (whenever they arrived): the work it served."""
    req = data.requests
    return req[(req["status"] == "completed") & window.holds(req["finish_s"])]


def window_block(data: RunData, window: Window) -> dict[str, float]:
    """The summary's `window` block: start, end and length of the window, warm-up and drain (s)."""
    return {
        "start_s": window.start_s,
        "end_s": window.end_s,
        "duration_s": window.duration_s,
        "warmup_s": window.start_s,
        "drain_s": max(0.0, data.simulated_s - window.end_s),
    }
