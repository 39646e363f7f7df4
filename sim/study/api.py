"""``sim.run`` for notebooks: one run from a path, dict or Scenario, with pandas tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.rundata import RunData
from analysis.summary import summarize, write_summary
from sim.engine import RunResult
from sim.engine import run as simulate
from sim.rundir import check_run_out, writing_run
from sim.scenario import scenario_from_dict
from sim.study.sweep import ScenarioLike, scenario_source


@dataclass
class Run:
    """One simulated run: traces as DataFrames (``requests``, ``steps``) and its summary dict."""

    result: RunResult
    data: RunData
    summary: dict

    @property
    def requests(self) -> pd.DataFrame:
        return self.data.requests

    @property
    def steps(self) -> pd.DataFrame:
        return self.data.steps

    def save(self, out_dir: str | Path, force: bool = False) -> Path:
        """Write an ordinary run directory (traces, scenario, run facts, summary.json), whole
        or not at all; `force` replaces a run or sweep already there (sim.rundir)."""
        out = check_run_out(out_dir, force)
        with writing_run(out) as tmp:
            self.result.save(tmp)
            write_summary(tmp, self.data)
        return out


def run(scenario: ScenarioLike, seed: int | None = None, overrides: Iterable[str] = ()) -> Run:
    """Simulate a scenario (file path, dict or Scenario) with ``--set``-style overrides."""
    src = scenario_source(scenario)
    result = simulate(scenario_from_dict(src.data, src.source, list(overrides)), seed=seed)
    data = RunData.from_result(result)
    return Run(result, data, summarize(data))
