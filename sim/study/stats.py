"""Across-seed statistics: flattened summary metrics, their means and Student-t intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# summary keys that are not results: the seed differs by design, wall time by machine load
NOT_METRICS = frozenset({"seed", "wall_s"})


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dicts as one dict with dotted keys (``latency_s.ttft.p99``)."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(summary: Mapping) -> dict[str, float | None]:
    """Every numeric leaf of a summary, flags as 0 or 1 (their mean over seeds is the share of
    seeds where they hold); None kept: a metric undefined for this run."""
    return {
        k: None if v is None else float(v)
        for k, v in flatten(summary).items()
        if k not in NOT_METRICS and (v is None or isinstance(v, int | float))
    }


def mean_ci(values: Iterable[float | None]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the defined values (NaN where too few: n < 2 for CI)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, v.size - 1)) * sem
    return mean, mean - half, mean + half


def aggregate(metrics_per_seed: list[Mapping[str, float | None]]) -> dict[str, float]:
    """One row: for each metric its mean (named as the metric), ``.ci_low`` and ``.ci_high``."""
    names = list(dict.fromkeys(k for m in metrics_per_seed for k in m))
    row: dict[str, float] = {}
    for name in names:
        mean, low, high = mean_ci(m.get(name) for m in metrics_per_seed)
        row[name], row[f"{name}.ci_low"], row[f"{name}.ci_high"] = mean, low, high
    return row
