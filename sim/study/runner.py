"""One run of a study, as a worker executes it: plain picklable task in, run directory out.

A run directory is written under a temporary name and renamed into place only when complete,
so a directory named ``seed-<k>`` always holds a whole run, whatever interrupted the study.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from sim.rundir import temporary_sibling
from sim.runspec import RunSpec
from sim.study.stats import numeric_metrics


@dataclass(frozen=True)
class RunTask:
    """What a worker needs: the resolved run, the seed and where to write.

    `overrides` are the ``--set`` items that made this point, kept for its error report.
    `spec` is None when the point's scenario did not resolve; `error` then says why.
    """

    spec: RunSpec | None
    overrides: tuple[str, ...]
    seed: int
    run_dir: str
    error: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """A finished task: its flattened numeric metrics, or the error it raised."""

    task: RunTask
    metrics: dict[str, float | None] | None
    error: str | None = None


def run_one(task: RunTask) -> RunOutcome:
    """Simulate one seed of one point and write its run directory; errors are returned."""
    if task.spec is None:  # its scenario did not resolve: nothing to simulate
        return RunOutcome(task, None, task.error)
    final = Path(task.run_dir)
    tmp = temporary_sibling(final)
    try:
        _write_run(task, tmp)
        _move_into_place(tmp, final)
        return RunOutcome(task, read_metrics(final))
    except Exception:  # a failing run is recorded and the study goes on
        shutil.rmtree(tmp, ignore_errors=True)
        return RunOutcome(task, None, traceback.format_exc())


def _write_run(task: RunTask, out: Path) -> None:
    from analysis.rundata import RunData
    from analysis.summary import write_summary
    from sim.engine import run

    result = run(task.spec, seed=task.seed)
    result.save(out)
    write_summary(out, RunData.from_result(result))


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; if another worker got there first, its run stands."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def read_metrics(run_dir: Path) -> dict[str, float | None]:
    """The numeric metrics of a complete run's summary.json (``saturation.*`` among them)."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return numeric_metrics(summary)
