"""``sim study run studies/NAME``: run a study's cases (plans and sweeps), then write its table,
its figure and the provenance that reproduces them.

Layout of a study's results folder (default ``studies/NAME/results``)::

    cases/<case>/              the case's plan or sweep folder (runs reused by a rerun)
    NAME.csv                   the study's table
    NAME.png, .svg, .pdf       its figure, one paper column wide
    provenance.json            project version, file digests, seeds, command, package versions
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim.rundir import check_out_dir
from sim.scenario import read_scenario_file, scenario_from_dict
from sim.study.plan import PlanResult, parse_slos, plan
from sim.study.studyfile import PlanCase, Study, SweepCase, load_study
from sim.study.sweep import sweep

PACKAGES = ("simpy", "numpy", "scipy", "pandas", "pyarrow", "pydantic", "matplotlib")
PROJECT = "llm-serving-sim"
_MIX = re.compile(r"^(\d+) \S+ \+ (\d+) \S+$")


@dataclass
class StudyResult:
    """A finished study: its table, the files it wrote and the cases' own result tables."""

    table: pd.DataFrame
    files: list[Path]
    cases: dict[str, pd.DataFrame]


def run_study(
    folder: str | Path,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    command: str = "",
    log: Callable[[str], None] = lambda _: None,
) -> StudyResult:
    """Run every case of the study in `folder` into `out` (reusing finished runs), then write
    the table, the figure and provenance.json (`command` is recorded there as given)."""
    from analysis.study_figures import FIGURES, save_figure
    from analysis.study_tables import STUDIES

    study = load_study(folder)
    out = check_out_dir(Path(out) if out is not None else study.folder / "results")
    seeds = {case.name: _seeds(study, case) for case in study.spec.cases}  # checks each scenario
    if study.spec.slos:
        parse_slos(study.spec.slos)
    executor = {"workers": workers, "scheduler": scheduler}
    cases = {}
    for case in study.spec.cases:
        log(f"case {case.name} ({case.kind}):")
        cases[case.name] = _run_case(study, case, out / "cases" / case.name, executor, log)
    kind = STUDIES[study.spec.figure]
    table = kind.table(cases, study.params)
    name = study.folder.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    figure = FIGURES[kind.figure](table, study.params)
    files = [out / f"{name}.csv", *save_figure(figure, out / name)]
    provenance = out / "provenance.json"
    text = json.dumps(provenance_record(study, seeds, command), indent=2) + "\n"
    provenance.write_text(text, encoding="utf-8")
    return StudyResult(table, [*files, provenance], cases)


def _run_case(
    study: Study, case: PlanCase | SweepCase, out: Path, executor: dict, log
) -> pd.DataFrame:
    """One row per plan option (with its chosen point's metrics) or per sweep point."""
    scenario = study.scenario_of(case)
    common = {"seeds": study.spec.seeds, "out": out, "overrides": case.set, **executor}
    if isinstance(case, SweepCase):
        return sweep(scenario, case.grid, **common).results
    result = plan(
        scenario,
        case.rate,
        study.spec.slos,
        gpus=case.gpus,
        max_replicas=case.max_replicas,
        prices=case.prices,
        mix=case.mix,
        log=log,
        **common,
    )
    return options_with_metrics(result)


def options_with_metrics(result: PlanResult) -> pd.DataFrame:
    """The plan's options, each met one with every metric of the point it chose (the summary
    means over seeds: cost per million tokens, margin, utilization, ...)."""
    rows = []
    for option in result.options.to_dict("records"):
        metrics = {}
        if option["status"] == "ok":
            metrics = _chosen_point(result.evaluations, option)
        rows.append({**metrics, **option})
    return pd.DataFrame(rows)


def _chosen_point(evaluations: pd.DataFrame, option: dict) -> dict:
    """The evaluated point an option reports: its fleet's replicas (a mix: of each pool)."""
    mix = option.get("mix")
    if isinstance(mix, str) and mix:
        k_a, k_b = (int(k) for k in _MIX.match(mix).groups())
        chosen = (evaluations["fleet.pools.0.replicas"] == k_a) & (
            evaluations["fleet.pools.1.replicas"] == k_b
        )
    else:
        chosen = (
            (evaluations["fleet.gpu"] == option["gpu"])
            & (evaluations["fleet.tp"] == option["tp"])
            & (evaluations["fleet.replicas"] == option["replicas"])
        )
    return evaluations[chosen].iloc[-1].to_dict()


def provenance_record(study: Study, seeds: dict[str, list[int]], command: str) -> dict:
    """What reproduces the study's figure: version, file digests, each case's seeds, command,
    packages."""
    return {
        "study": study.spec.title,
        "project": {"name": PROJECT, "version": _version(PROJECT)},
        "command": command,
        "files": {_shown(path): _sha256(path) for path in study.files()},
        "seeds": seeds,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _seeds(study: Study, case: PlanCase | SweepCase) -> list[int]:
    """Seed k of every point is the case scenario's sim.seed + k (docs/studies.md); reading
    the scenario with the case's --set items checks both (UserError)."""
    path = study.scenario_of(case)
    base = scenario_from_dict(read_scenario_file(path), str(path), case.set).sim.seed
    return [base + k for k in range(study.spec.seeds)]


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is inside it (portable), else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
