"""A run as analysis sees it: its trace tables plus the resolved run and its facts.

Everything in ``analysis`` starts from a :class:`RunData`, loaded from a run directory or taken
from an in-memory result, so a saved run can be re-analysed without re-simulating. The resolved
run (:class:`~sim.runspec.RunSpec`: pools with their accelerator, model shape, KV capacity and
GPU price) is read back from scenario.json as it was saved, without the catalogue, calibration
files or price table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import UserError
from sim.runspec import PoolSpec, RunSpec, read_run_spec
from sim.scenario import Scenario

RUN_FILES = ("requests.parquet", "steps.parquet", "scenario.json", "run.json")
REJECTIONS_FILE = "rejections.parquet"  # written only when a request was rejected
FLEET_FILE = "fleet.parquet"  # written by every run since fleets change over time
T = TypeVar("T")


def no_rejections() -> pd.DataFrame:
    """The rejections table of a run that rejected nothing."""
    return pd.DataFrame({"request_id": pd.Series(dtype="int64"), "reason": pd.Series(dtype=str)})


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
    """Traces and facts of one run. Times in seconds; `rejections`: request_id and reason of
    each rejected request; `fleet`: every change of a replica's state (fleet.parquet; None:
    the run's fixed fleet)."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    spec: RunSpec
    run: dict
    rejections: pd.DataFrame = field(default_factory=no_rejections)
    fleet: pd.DataFrame | None = None
    _derived: dict[Hashable, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.fleet is None:
            self.fleet = initial_fleet(self.spec)

    @property
    def scenario(self) -> Scenario:
        return self.spec.scenario

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`, computed once per run and `key` and shared by every later call (do not
        modify it): for what the summary and the curves derive many times over, such as the
        capacity (a thousand sampled batches per pool) and the fleet's state intervals."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

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
        return np.array(
            [i for i, p in enumerate(self.replica_pool) if p.index == pool.index], dtype=np.int64
        )

    @property
    def simulated_s(self) -> float:
        return float(self.run["simulated_s"])

    def request_pools(self, replica: pd.Series | None = None) -> pd.Series:
        """The pool name of each request's replica (None where it never reached one); of the
        replicas in `replica` (a column of numbers indexed like the requests) where given.

        Derived from the replica and the run's pools, so it holds whether or not the traces
        have a `pool` column (written only for fleets of several pools).
        """
        names = np.array([p.name for p in self.replica_pool] + [None], dtype=object)
        replica = self.requests["replica"] if replica is None else replica
        return pd.Series(names[replica.to_numpy()], index=replica.index, name="pool")

    @property
    def measured(self) -> pd.DataFrame:
        """Requests that arrived after the warm-up: the ones statistics are taken over."""
        return self.requests[self.requests["arrival_s"] >= self.scenario.sim.warmup_s]

    @classmethod
    def from_result(cls, result) -> RunData:
        """From an in-memory ``sim.engine.RunResult``."""
        rejections = result.rejections
        return cls(
            result.requests.to_pandas(),
            result.steps.to_pandas(),
            result.spec,
            result.run_facts(),
            no_rejections() if rejections is None else rejections.to_pandas(),
            result.fleet.to_pandas(),
        )


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory written by ``python -m sim run`` (or a sweep); UserError naming
    the file when one is missing or damaged."""
    run_dir = Path(run_dir)
    missing = [f for f in RUN_FILES if not (run_dir / f).exists()]
    if missing:
        raise UserError(f"{run_dir}: not a complete run directory; missing {', '.join(missing)}")
    rejections, fleet = run_dir / REJECTIONS_FILE, run_dir / FLEET_FILE
    return RunData(
        read_parquet(run_dir / "requests.parquet"),
        read_parquet(run_dir / "steps.parquet"),
        read_run_spec(run_dir / "scenario.json"),
        _read_json(run_dir / "run.json"),
        read_parquet(rejections) if rejections.exists() else no_rejections(),
        read_parquet(fleet) if fleet.exists() else None,
    )


def read_parquet(path: Path) -> pd.DataFrame:
    """A trace table; UserError when the file is empty, truncated or not Parquet."""
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: {_DAMAGED} ({exc})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: {_DAMAGED} ({exc})") from None


_DAMAGED = "cannot be read: the file is empty, truncated or damaged; rerun the run"
