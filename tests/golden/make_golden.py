"""Write the golden traces: requests and steps tables that later engine changes must reproduce.

    .venv/bin/python tests/golden/make_golden.py

The files in this folder were produced by commit edd70c4 (main before the fleet redesign of
issue 12), so `tests/test_golden_traces.py` proves that features which are off change no trace.
Do not regenerate them to make that test pass: a difference is a behaviour change.

Cases (capped at a few hundred arrivals, their other settings unchanged, so that they still
batch, queue, preempt and hit the prefix cache):

* ``scenario-<path>``: every shipped scenario (``scenarios/**/*.toml``; `path` relative to
  ``scenarios/``, ``/`` written ``.``), its own seed and step-compression setting, capped at
  `SCENARIO_REQUESTS`;
* ``compression-<workload>-on`` / ``-off``: each workload of ``tests/test_step_compression.py``
  with step compression on and off, capped at `COMPRESSION_REQUESTS`.

Each case is ``<case>.requests.parquet`` and ``<case>.steps.parquet``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from sim.engine import run  # noqa: E402
from sim.scenario import Scenario, load_scenario  # noqa: E402
from tests.conftest import scenario  # noqa: E402
from tests.test_step_compression import TRACE_REPLAY, WORKLOADS  # noqa: E402

GOLDEN_DIR = Path(__file__).resolve().parent
SCENARIO_REQUESTS = 300  # arrivals per shipped scenario
COMPRESSION_REQUESTS = 150  # per compression workload: step-by-step runs make many steps rows
SCENARIO_PREFIX = "scenario-"
COMPRESSION_PREFIX = "compression-"
TABLES = ("requests", "steps")


def shipped_scenarios() -> dict[str, Path]:
    """Every shipped scenario file by its path under scenarios/ (no suffix, ``/`` as ``.``)."""
    folder = ROOT / "scenarios"
    return {
        ".".join(p.relative_to(folder).with_suffix("").parts): p
        for p in sorted(folder.rglob("*.toml"))
    }


def golden_scenario(case: str) -> Scenario:
    """The scenario of a golden case, with its arrivals capped (and no warm-up: it only sets what
    analysis measures, and a warm-up past the capped arrivals would be warned about)."""
    if case.startswith(SCENARIO_PREFIX):
        path = shipped_scenarios()[case.removeprefix(SCENARIO_PREFIX)]
        return load_scenario(path, [f"sim.num_requests={SCENARIO_REQUESTS}", "sim.warmup_s=0"])
    cap = f"sim.num_requests={COMPRESSION_REQUESTS}"
    workload, _, mode = case.removeprefix(COMPRESSION_PREFIX).rpartition("-")
    compress = f"sim.step_compression={'true' if mode == 'on' else 'false'}"
    if workload == "trace_replay":
        path, *overrides = TRACE_REPLAY
        return load_scenario(path, [*overrides, cap, compress, "sim.warmup_s=0"])
    return scenario(*WORKLOADS[workload], cap, compress)


def golden_cases() -> list[str]:
    """The names of every golden case this generator writes."""
    workloads = [*WORKLOADS, "trace_replay"]
    return [SCENARIO_PREFIX + stem for stem in shipped_scenarios()] + [
        f"{COMPRESSION_PREFIX}{w}-{mode}" for w in workloads for mode in ("on", "off")
    ]


def golden_path(case: str, table: str) -> Path:
    """The file of one table of one case."""
    return GOLDEN_DIR / f"{case}.{table}.parquet"


def simulate(case: str) -> dict[str, pa.Table]:
    """The requests and steps tables of one case, simulated now."""
    result = run(golden_scenario(case))
    return {"requests": result.requests, "steps": result.steps}


def main() -> None:
    for case in golden_cases():
        tables = simulate(case)
        for name in TABLES:
            pq.write_table(tables[name], golden_path(case, name), compression="zstd")
        print(f"{case}: {tables['requests'].num_rows} requests, {tables['steps'].num_rows} steps")


if __name__ == "__main__":
    main()
