"""A run as analysis sees it: the two trace tables plus the resolved run and its facts.

Everything in ``analysis`` starts from a :class:`RunData`, loaded from a run directory or taken
from an in-memory result, so a saved run can be re-analysed without re-simulating. The resolved
run (:class:`~sim.runspec.RunSpec`: pools with their accelerator, model shape, KV capacity and
GPU price) is read back from scenario.json as it was saved, without the catalogue, calibration
files or price table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sim.errors import UserError
from sim.runspec import RunSpec, read_run_spec
from sim.scenario import Scenario

RUN_FILES = ("requests.parquet", "steps.parquet", "scenario.json", "run.json")


@dataclass
class RunData:
    """Traces and facts of one run. Times in seconds."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    spec: RunSpec
    run: dict

    @property
    def scenario(self) -> Scenario:
        return self.spec.scenario

    @property
    def simulated_s(self) -> float:
        return float(self.run["simulated_s"])

    def request_pools(self) -> pd.Series:
        """The pool name of each request's replica (None where it never reached one).

        Derived from the replica and the run's pools, so it holds whether or not the traces
        have a `pool` column (written only for fleets of several pools).
        """
        names = np.array([p.name for p in self.spec.replica_pools()] + [None], dtype=object)
        replica = self.requests["replica"].to_numpy()
        return pd.Series(names[replica], index=self.requests.index, name="pool")

    @property
    def measured(self) -> pd.DataFrame:
        """Requests that arrived after the warm-up: the ones statistics are taken over."""
        return self.requests[self.requests["arrival_s"] >= self.scenario.sim.warmup_s]

    @classmethod
    def from_result(cls, result) -> RunData:
        """From an in-memory ``sim.engine.RunResult``."""
        return cls(
            result.requests.to_pandas(), result.steps.to_pandas(), result.spec, result.run_facts()
        )


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory written by ``python -m sim run`` (or a sweep)."""
    run_dir = Path(run_dir)
    missing = [f for f in RUN_FILES if not (run_dir / f).exists()]
    if missing:
        raise UserError(f"{run_dir}: not a complete run directory; missing {', '.join(missing)}")
    return RunData(
        pq.read_table(run_dir / "requests.parquet").to_pandas(),
        pq.read_table(run_dir / "steps.parquet").to_pandas(),
        read_run_spec(run_dir / "scenario.json"),
        json.loads((run_dir / "run.json").read_text(encoding="utf-8")),
    )
