"""The study file (``studies/NAME/study.toml``): which sweeps and plans a study runs, and which
table and figure it makes of them, validated once at load time like a scenario.

```toml
title = "Hardware: the cheapest fleet per accelerator"
question = "Which accelerator serves this chat load at the SLOs for the least money?"
figure = "hardware"              # a key of analysis.study_tables.STUDIES
scenario = "scenario.toml"       # default scenario of the cases, relative to the study folder
seeds = 2                        # seeds per point (plans need >= 2)
slos = { ttft_p99 = 1.0 }        # plan cases: every SLO a fleet must meet

[params]                         # inputs of the figure's table (checked by that figure)

[[cases]]
name = "types"                   # the case's folder: RESULTS/cases/NAME
kind = "plan"                    # plan: sim plan --rate; sweep: sim sweep
rate = 30
gpus = ["h100", "h200"]
set = ["sim.duration_s=120"]     # --set items of this case
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim.errors import UserError
from sim.scenario import read_toml
from sim.schema_errors import format_errors

STUDY_FILE = "study.toml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Case(_Strict):
    name: str = Field(description="lower-case letters, digits, - and _: the case's folder")
    scenario: str | None = Field(default=None, description="default: the study's scenario")
    set: list[str] = Field(default_factory=list, description="--set items of this case")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("use lower-case letters, digits, '-' and '_' (it names a folder)")
        return name


class PlanCase(_Case):
    """``sim plan SCENARIO --rate RATE``: the fewest replicas per GPU type meeting the SLOs."""

    kind: Literal["plan"]
    rate: float = Field(gt=0, description="target arrival rate, requests per second")
    gpus: list[str] | None = Field(default=None, min_length=1)
    mix: bool = False
    max_replicas: int = Field(default=64, ge=1)
    prices: dict[str, float] = Field(default_factory=dict, description="USD per GPU-hour")


class SweepCase(_Case):
    """``sim sweep SCENARIO --grid KEY=VALUES ...`` (no grid: the scenario alone, over seeds)."""

    kind: Literal["sweep"]
    grid: dict[str, list[Any]] = Field(default_factory=dict)


Case = Annotated[PlanCase | SweepCase, Field(discriminator="kind")]


class StudyFile(_Strict):
    """A study: its question, the cases it runs and the figure it makes."""

    title: str
    question: str
    figure: str
    scenario: str | None = None
    seeds: int = Field(default=2, ge=1)
    slos: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case] = Field(min_length=1)

    @field_validator("cases")
    @classmethod
    def _unique_names(cls, cases: list) -> list:
        names = [c.name for c in cases]
        if len(set(names)) != len(names):
            raise ValueError(f"case names must differ, got {names}")
        return cases


class Study:
    """A loaded study: the validated file, its folder, and each case's scenario path."""

    def __init__(self, folder: Path, spec: StudyFile, params: BaseModel) -> None:
        self.folder, self.spec, self.params = folder, spec, params

    @property
    def file(self) -> Path:
        return self.folder / STUDY_FILE

    def scenario_of(self, case: PlanCase | SweepCase) -> Path:
        """The scenario file a case runs (relative paths start at the study folder)."""
        return self.folder / (case.scenario or self.spec.scenario or "")

    def files(self) -> list[Path]:
        """The study file and every scenario file it uses, each once."""
        scenarios = dict.fromkeys(self.scenario_of(c) for c in self.spec.cases)
        return [self.file, *scenarios]


def load_study(folder: str | Path) -> Study:
    """Read and check ``folder/study.toml`` (UserError naming the file and field otherwise)."""
    from analysis.study_tables import STUDIES

    folder = Path(folder)
    path = folder / STUDY_FILE
    if not folder.is_dir():
        raise UserError(f"{folder}: no such study folder")
    data = read_toml(path, "study")
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_errors(exc, StudyFile, data, str(path), [], "study")) from None
    kind = STUDIES.get(spec.figure)
    if kind is None:
        raise UserError(f"{path}: figure = {spec.figure!r}: allowed: {', '.join(sorted(STUDIES))}")
    try:
        params = kind.params.model_validate(spec.params)
    except ValidationError as exc:
        what = f"params of figure '{spec.figure}'"
        raise UserError(format_errors(exc, kind.params, spec.params, str(path), [], what)) from None
    study = Study(folder, spec, params)
    _check_cases(study, path, kind.cases)
    return study


def _check_cases(study: Study, path: Path, wanted: dict[str, str] | str) -> None:
    """The cases the figure reads: exact names and kinds, or (a kind alone) any names."""
    cases = {c.name: c.kind for c in study.spec.cases}
    if isinstance(wanted, str):
        wrong = [n for n, k in cases.items() if k != wanted]
        if wrong:
            raise UserError(f"{path}: cases {wrong}: figure '{study.spec.figure}' needs {wanted}s")
    elif cases != wanted:
        allowed = ", ".join(f"{n} ({k})" for n, k in wanted.items())
        raise UserError(f"{path}: cases: figure '{study.spec.figure}' reads exactly {allowed}")
    unknown = sorted(study.params.case_names() - set(cases))
    if unknown:
        raise UserError(f"{path}: params: cases {unknown} are not cases of the study")
    for case in study.spec.cases:
        if not (case.scenario or study.spec.scenario):
            raise UserError(f"{path}: case {case.name}: no scenario (set scenario = FILE)")
        if not study.scenario_of(case).is_file():
            raise UserError(f"{path}: case {case.name}: no scenario file {study.scenario_of(case)}")
        if case.kind == "plan" and not study.spec.slos:
            raise UserError(f"{path}: slos: plan cases need at least one SLO")
        if case.kind == "plan" and study.spec.seeds < 2:
            raise UserError(f"{path}: seeds = {study.spec.seeds}: plan cases need at least 2")
