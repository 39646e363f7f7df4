"""Sweeps: every point of a grid of overrides, each run for several seeds, with 95% intervals.

Layout of a sweep folder::

    DIR/sweep.json                      what was asked (scenario, overrides, grid, seeds)
    DIR/points/<point>/seed-<k>/        an ordinary run directory, complete once it exists
    DIR/points/<point>/seed-<k>.error.txt   the traceback of a run that raised
    DIR/results.parquet, results.csv    one row per point: mean, ci_low, ci_high of each metric
    DIR/runs.parquet                    one row per run: its seed, status and metrics

Seed k of every point is the point's ``sim.seed + k``: all points share the same seeds (common
random numbers), which makes differences between points less noisy than the points themselves.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from sim.errors import UserError
from sim.resolve import resolve
from sim.rundir import check_study_out
from sim.scenario import Scenario, read_scenario_file, scenario_from_dict
from sim.study.executors import Executor, open_executor
from sim.study.grid import Axis, Point, grid_points, parse_axis
from sim.study.runner import RunOutcome, RunTask, read_metrics, run_one
from sim.study.stats import aggregate

ScenarioLike = str | Path | Mapping | Scenario
GridLike = Iterable[str] | Mapping[str, object]


@dataclass(frozen=True)
class ScenarioSource:
    """A scenario as raw data (before overrides) and the name its errors are reported under."""

    data: dict
    source: str


def scenario_source(scenario: ScenarioLike) -> ScenarioSource:
    """Raw data of a scenario file path, a dict, or a validated Scenario."""
    if isinstance(scenario, Scenario):
        return ScenarioSource(scenario.model_dump(mode="json", exclude_unset=True), scenario.name)
    if isinstance(scenario, Mapping):
        return ScenarioSource(dict(scenario), str(scenario.get("name", "<scenario>")))
    data = read_scenario_file(scenario)
    scenario_from_dict(data, source=str(scenario))  # reports an invalid file before any run
    return ScenarioSource(data, str(scenario))


@dataclass(frozen=True)
class PlannedRun:
    """One seed of one point: its task for a worker (with the resolved run to reproduce)."""

    point: Point
    seed_index: int
    task: RunTask

    @property
    def run_dir(self) -> Path:
        return Path(self.task.run_dir)

    @property
    def error_file(self) -> Path:
        return self.run_dir.with_name(f"{self.run_dir.name}.error.txt")


def layout_runs(
    src: ScenarioSource,
    points: list[Point],
    seeds: int,
    out: Path,
    overrides: tuple[str, ...] = (),
) -> list[PlannedRun]:
    """Validate every point's scenario (UserError before anything runs), resolve it and place
    its seeds; workers get the resolved runs. A point that does not resolve is planned as
    failed with its error."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be at least 1")
    runs = []
    for point in points:
        all_overrides = (*overrides, *point.overrides)
        try:
            scenario = scenario_from_dict(src.data, src.source, list(all_overrides))
        except UserError as exc:
            raise UserError(f"grid point {point.name}: {exc}") from None
        try:  # a point that cannot be deployed (the model does not fit, ...) fails alone
            spec, error = resolve(scenario), None
        except UserError as exc:
            spec, error = None, f"UserError: {exc}"
        for k in range(seeds):
            run_dir = out / "points" / point.name / f"seed-{k}"
            task = RunTask(spec, all_overrides, scenario.sim.seed + k, str(run_dir), error)
            runs.append(PlannedRun(point, k, task))
    return runs


def execute(runs: list[PlannedRun], ex: Executor, progress: bool = False) -> pd.DataFrame:
    """Run what is missing, reuse what is complete; one row per run (status, error, metrics)."""
    for run in runs:
        _check_not_stale(run)
    _remove_leftovers(runs)
    by_dir = {r.task.run_dir: r for r in runs if not r.run_dir.is_dir()}
    outcomes = {
        r.task.run_dir: RunOutcome(r.task, read_metrics(r.run_dir))
        for r in runs
        if r.task.run_dir not in by_dir
    }
    left = {r.point.name: 0 for r in runs}
    for r in by_dir.values():
        left[r.point.name] += 1
    todo = [r.task for r in by_dir.values()]
    with tqdm(total=len(todo), unit="run", desc="sweep", disable=not progress) as bar:
        bar.set_postfix_str(_points_done(left))
        for outcome in ex.outcomes(run_one, todo):
            run = by_dir[outcome.task.run_dir]
            _record(run, outcome)
            outcomes[outcome.task.run_dir] = outcome
            left[run.point.name] -= 1
            bar.set_postfix_str(_points_done(left), refresh=False)
            bar.update()
    return pd.DataFrame(
        [_run_row(r, outcomes[r.task.run_dir], r.task.run_dir in by_dir) for r in runs]
    )


def _points_done(left: dict[str, int]) -> str:
    """Progress text: points whose every seed is finished, of all points."""
    return f"points {sum(n == 0 for n in left.values())}/{len(left)}"


def _check_not_stale(run: PlannedRun) -> None:
    """A complete run must be of this point's scenario and seed, else the folder is reused."""
    if not run.run_dir.is_dir():
        return
    try:
        stored = json.loads((run.run_dir / "scenario.json").read_text(encoding="utf-8"))
        seed = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))["seed"]
    except (OSError, ValueError, KeyError):
        raise UserError(
            f"{run.run_dir}: not a run directory; remove it or use another --out"
        ) from None
    if run.task.spec is None:
        raise UserError(f"{run.run_dir}: exists, but its point does not resolve: {run.task.error}")
    expected = run.task.spec.scenario.model_dump(mode="json")
    if _comparable(stored["scenario"]) != _comparable(expected) or seed != run.task.seed:
        raise UserError(
            f"{run.run_dir}: holds a run of another scenario or seed than this sweep asks for "
            f"(the scenario file or --set changed?); use another --out or remove that folder"
        )


def _comparable(dump: dict) -> dict:
    """A scenario dump without its folder and seed (run.json's seed is compared instead)."""
    sim = {k: v for k, v in dump["sim"].items() if k != "seed"}
    return {**{k: v for k, v in dump.items() if k != "base_dir"}, "sim": sim}


def _remove_leftovers(runs: list[PlannedRun]) -> None:
    """Temporary folders of runs that were interrupted (one sweep per folder at a time)."""
    for folder in {r.run_dir.parent for r in runs if r.run_dir.parent.is_dir()}:
        for tmp in folder.glob(".seed-*.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def _record(run: PlannedRun, outcome: RunOutcome) -> None:
    """Write a failed run's error beside where its directory would be; clear it on success."""
    if outcome.error is None:
        run.error_file.unlink(missing_ok=True)
        return
    run.error_file.parent.mkdir(parents=True, exist_ok=True)
    run.error_file.write_text(
        f"seed {run.task.seed}, overrides {list(run.task.overrides)}\n{outcome.error}",
        encoding="utf-8",
    )


def _run_row(run: PlannedRun, outcome: RunOutcome, new: bool) -> dict:
    return {
        "point": run.point.name,
        **run.point.values,
        "seed_index": run.seed_index,
        "seed": run.task.seed,
        "status": "failed" if outcome.error else "complete",
        "new": new,
        "run_dir": run.task.run_dir,
        "error": _last_line(outcome.error),
        **(outcome.metrics or {}),
    }


def _last_line(error: str | None) -> str | None:
    return error.strip().splitlines()[-1] if error else None


def point_results(runs: pd.DataFrame, points: list[Point]) -> pd.DataFrame:
    """One row per point: grid values, seeds_complete, seeds_failed, and each metric's CI."""
    meta = {"point", "seed_index", "seed", "status", "new", "run_dir", "error"}
    keys = list(dict.fromkeys(k for p in points for k in p.values))
    metric_names = [c for c in runs.columns if c not in meta and c not in keys]
    rows = []
    for point in points:
        mine = runs[runs["point"] == point.name]
        ok = mine[mine["status"] == "complete"]
        per_seed = [
            {m: (None if pd.isna(v) else float(v)) for m, v in zip(metric_names, row, strict=True)}
            for row in ok[metric_names].itertuples(index=False)
        ]
        rows.append(
            {
                "point": point.name,
                **point.values,
                "seeds_complete": len(ok),
                "seeds_failed": int((mine["status"] == "failed").sum()),
                **aggregate(per_seed),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class SweepResult:
    """A finished sweep: its folder, one row per point (results), one row per run (runs)."""

    out: Path
    results: pd.DataFrame
    runs: pd.DataFrame

    @property
    def failed(self) -> pd.DataFrame:
        """The runs that raised (their tracebacks are in ``<run_dir>.error.txt``)."""
        return self.runs[self.runs["status"] == "failed"]


def axes_of(grid: GridLike) -> list[Axis]:
    """Axes from ``KEY=VALUES`` strings or a mapping of key to values (list, or VALUES text)."""
    if isinstance(grid, Mapping):
        return [
            parse_axis(f"{k}={v}" if isinstance(v, str) else f"{k}={','.join(map(_toml, v))}")
            for k, v in grid.items()
        ]
    return [parse_axis(spec) for spec in grid]


def _toml(value: object) -> str:
    """A Python value as TOML text (strings quoted, booleans lower-case, lists bracketed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def sweep(
    scenario: ScenarioLike,
    grid: GridLike = (),
    seeds: int = 1,
    out: str | Path = "runs/sweep",
    overrides: Iterable[str] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Run every grid point for `seeds` seeds into `out` (reusing complete runs) and summarize.

    grid: ``["workload.rate=10,20,40", "fleet.replicas=2:8:2"]`` or
    ``{"workload.rate": [10, 20, 40]}``; overrides: ``--set`` items applied to every point.
    """
    src = scenario_source(scenario)
    axes = axes_of(grid)
    points = grid_points(axes)
    out = check_study_out(out)
    runs = layout_runs(src, points, seeds, out, tuple(overrides))
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "scenario": src.source,
        "overrides": list(overrides),
        "grid": [f"{a.key}={','.join(a.values)}" for a in axes],
        "seeds": seeds,
    }
    (out / "sweep.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    with open_executor(workers, scheduler) as ex:
        table = execute(runs, ex, progress)
    results = point_results(table, points)
    for frame in (table, results):  # a key with text and numbers (1, "auto") becomes text
        for key in {k for p in points for k in p.values}:
            if frame[key].map(type).nunique() > 1 and frame[key].map(type).eq(str).any():
                frame[key] = frame[key].astype(str)
    results.to_parquet(out / "results.parquet", index=False)
    results.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "runs.parquet", index=False)
    return SweepResult(out, results, table)
