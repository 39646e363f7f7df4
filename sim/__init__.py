"""Discrete-event simulator of LLM inference serving clusters.

For notebooks: ``sim.run(scenario, seed=...)``, ``sim.sweep(...)``, ``sim.plan(...)`` and
``sim.max_rate(...)``; they are imported on first use, so ``import sim`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "run": "sim.study.api",
    "Run": "sim.study.api",
    "sweep": "sim.study.sweep",
    "SweepResult": "sim.study.sweep",
    "plan": "sim.study.plan",
    "max_rate": "sim.study.plan",
    "PlanResult": "sim.study.plan",
}
__all__ = [
    "PlanResult",
    "Run",
    "SweepResult",
    "__version__",
    "max_rate",
    "plan",
    "run",
    "sweep",
]

if TYPE_CHECKING:
    from sim.study.api import Run, run
    from sim.study.plan import PlanResult, max_rate, plan
    from sim.study.sweep import SweepResult, sweep


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
