"""A run as analysis sees it: its trace tables plus the resolved run and its facts.

Everything in ``analysis`` starts from a :class:`RunData`, loaded from a run directory or taken
from an in-memory result, so a saved run can be re-analysed without re-simulating. The resolved
run (:class:`~sim.runspec.RunSpec`: pools with their accelerator, model shape, KV capacity and
GPU price) is read back from scenario.json as it was saved, without the catalogue, calibration
files or price table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sim.errors import UserError
from sim.runspec import PoolSpec, RunSpec, read_run_spec
from sim.scenario import Scenario

RUN_FILES = ("requests.parquet", "steps.parquet", "scenario.json", "run.json")
FLEET_FILE = "fleet.parquet"  # written by every run since fleets change over time


def initial_fleet(spec: RunSpec) -> pd.DataFrame:
    """The fleet trace of a run whose replicas serve from time 0 to its end (runs saved
    before fleet.parquet existed had only such fleets)."""
    pools = spec.replica_pools()
    return pd.DataFrame(
        {
            "time_s": np.zeros(len(pools)),
            "pool": [p.name for p in pools],
            "replica": np.arange(len(pools), dtype=np.int32),
            "from": "none",
            "to": "serving",
            "cause": "initial",
        }
    )


@dataclass
class RunData:
    """Traces and facts of one run. Times in seconds; `fleet`: every change of a replica's
    state (fleet.parquet; None: the run's fixed fleet)."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    spec: RunSpec
    run: dict
    fleet: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.fleet is None:
            self.fleet = initial_fleet(self.spec)

    @property
    def scenario(self) -> Scenario:
        return self.spec.scenario

    @cached_property
    def replica_pool(self) -> list[PoolSpec]:
        """The pool of each replica, by its fleet-wide index (replicas added during the run
        included), from the fleet trace."""
        assert self.fleet is not None
        first = self.fleet.drop_duplicates("replica").set_index("replica")["pool"]
        by_name = {p.name: p for p in self.spec.pools}
        return [by_name[first[i]] for i in range(len(first))]

    @property
    def num_replicas(self) -> int:
        """Replicas that existed during the run."""
        return len(self.replica_pool)

    def pool_replicas(self, pool: PoolSpec) -> np.ndarray:
        """The fleet-wide indices of `pool`'s replicas (all that existed during the run)."""
        return np.array([i for i, p in enumerate(self.replica_pool) if p.index == pool.index])

    @property
    def simulated_s(self) -> float:
        return float(self.run["simulated_s"])

    def request_pools(self) -> pd.Series:
        """The pool name of each request's replica (None where it never reached one).

        Derived from the replica and the run's pools, so it holds whether or not the traces
        have a `pool` column (written only for fleets of several pools).
        """
        names = np.array([p.name for p in self.replica_pool] + [None], dtype=object)
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
            result.requests.to_pandas(),
            result.steps.to_pandas(),
            result.spec,
            result.run_facts(),
            result.fleet.to_pandas(),
        )


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory written by ``python -m sim run`` (or a sweep)."""
    run_dir = Path(run_dir)
    missing = [f for f in RUN_FILES if not (run_dir / f).exists()]
    if missing:
        raise UserError(f"{run_dir}: not a complete run directory; missing {', '.join(missing)}")
    fleet = run_dir / FLEET_FILE
    return RunData(
        pq.read_table(run_dir / "requests.parquet").to_pandas(),
        pq.read_table(run_dir / "steps.parquet").to_pandas(),
        read_run_spec(run_dir / "scenario.json"),
        json.loads((run_dir / "run.json").read_text(encoding="utf-8")),
        pq.read_table(fleet).to_pandas() if fleet.exists() else None,
    )
