"""Confidence intervals from independent replications, and the pass rule of a check.

Each replication is one engine run from an empty system with its own seed; its warm-up
(requests that arrived before the warm-up time) is dropped and the statistic is averaged over
the rest. The replication means are i.i.d., so a Student-t interval on them is valid however
strongly the requests inside one run are correlated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

FAMILY_CONFIDENCE = 0.95  # simultaneous level over every check of one validation run


@dataclass(frozen=True)
class Interval:
    """Mean of replication means and its two-sided confidence interval."""

    mean: float
    low: float
    high: float


def t_interval(values: np.ndarray | list[float], confidence: float) -> Interval:
    """Student-t interval for the mean of i.i.d. `values` at level `confidence`."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("a confidence interval needs at least two replications")
    mean = float(v.mean())
    half = stats.t.ppf(0.5 + confidence / 2.0, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return Interval(mean, mean - float(half), mean + float(half))


def per_check_confidence(num_checks: int) -> float:
    """Bonferroni level that makes all `num_checks` intervals hold together at 95%."""
    return 1.0 - (1.0 - FAMILY_CONFIDENCE) / max(num_checks, 1)


def relative_error(simulated: float, theory: float) -> float:
    """|simulated - theory| / |theory|."""
    return abs(simulated - theory) / abs(theory)


def passes(relation: str, theory: float, ci: Interval, tolerance: float) -> bool:
    """The pass rule of one check.

    '=': theory inside the interval and relative error below `tolerance`.
    '>=' (theory is a lower bound): the interval does not lie below it.
    '<' (theory is an upper bound that must be beaten): the interval lies below it.
    '<=' (theory is a hard ceiling for a maximum): the simulated value does not exceed it.
    """
    if relation == "=":
        return ci.low <= theory <= ci.high and relative_error(ci.mean, theory) < tolerance
    if relation == ">=":
        return ci.high >= theory
    if relation == "<":
        return ci.high < theory
    if relation == "<=":
        return ci.high <= theory * (1.0 + 1e-9)
    raise ValueError(f"unknown relation {relation!r}")
