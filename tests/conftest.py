"""Shared helpers: small scenarios built from dicts, and runs analysed in memory."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from analysis.rundata import RunData
from sim.engine import run
from sim.scenario import Scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").rglob("*.toml"))

BASE = {
    "name": "test",
    "sim": {"seed": 3, "duration_s": 60.0, "warmup_s": 5.0},
    "workload": {
        "arrival": "poisson",
        "rate": 8.0,
        "classes": [
            {
                "name": "chat",
                "prompt_tokens": {"dist": "lognormal", "mean": 600, "median": 400, "max": 4000},
                "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 1.0, "max": 1000},
            }
        ],
    },
    "model": {"name": "llama-3.1-8b"},  # the shape of Llama-3-8B with a 128k context
    "fleet": {"gpu": "h100", "replicas": 2},
    "economics": {
        "gpu_usd_per_hour": 4.0,
        "input_usd_per_million": 0.2,
        "output_usd_per_million": 0.6,
    },
}


def regular_workload(rate: float, name: str, output_tokens: int) -> dict:
    """A [workload] of nearly regular arrivals (gamma, cv 0.01) at `rate` req/s, each request
    100 prompt tokens and `output_tokens` output tokens: a D/D/c queue of the service times."""
    return {
        "arrival": "gamma",
        "rate": rate,
        "cv": 0.01,
        "classes": [
            {
                "name": name,
                "prompt_tokens": {"dist": "fixed", "value": 100},
                "output_tokens": {"dist": "fixed", "value": output_tokens},
            }
        ],
    }


def scenario(*overrides: str, base: dict | None = None) -> Scenario:
    """The base test scenario with ``section.field=value`` overrides."""
    return scenario_from_dict(copy.deepcopy(base or BASE), "test", list(overrides))


def simulate(*overrides: str, seed: int | None = None) -> RunData:
    """Run the base test scenario with overrides and return it ready for analysis."""
    return RunData.from_result(run(scenario(*overrides), seed=seed))


@pytest.fixture
def tiny_run() -> RunData:
    return simulate()
