"""The `[workload]` table of a scenario: arrival processes, request classes, length
distributions (tokens) and rates (requests per second)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from sim.section import Section


class FixedLength(Section):
    dist: Literal["fixed"]
    value: int = Field(gt=0)


class UniformLength(Section):
    dist: Literal["uniform"]
    low: int = Field(gt=0)
    high: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class LognormalLength(Section):
    """Lognormal token count, set by its mean and either its median or its CV."""

    dist: Literal["lognormal"]
    mean: float = Field(gt=0)
    median: float | None = Field(default=None, gt=0)
    cv: float | None = Field(default=None, gt=0)
    max: int | None = Field(default=None, gt=0, description="draws above are clipped to this")

    @model_validator(mode="after")
    def _one_shape(self) -> LognormalLength:
        if (self.median is None) == (self.cv is None):
            raise ValueError("give exactly one of median or cv besides mean")
        if self.median is not None and self.median > self.mean:
            raise ValueError(f"median ({self.median}) must not exceed mean ({self.mean})")
        return self


class EmpiricalLength(Section):
    """Lengths resampled from a trace's prompt or output column (jointly when both name it)."""

    dist: Literal["empirical"]
    trace: str = Field(description="trace file, or builtin:NAME for a shipped trace")


LengthDist = Annotated[
    Union[FixedLength, UniformLength, LognormalLength, EmpiricalLength],  # noqa: UP007
    Field(discriminator="dist"),
]


class RequestClass(Section):
    """One kind of request: its share of arrivals, its lengths and its priority."""

    name: str = Field(min_length=1)
    share: float = Field(default=1.0, gt=0, description="relative weight among classes")
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    priority: int = Field(default=0, description="higher is served first by priority batchers")
    slo_ttft_s: float | None = Field(default=None, gt=0, description="time-to-first-token SLO")
    slo_tpot_s: float | None = Field(default=None, gt=0, description="time-per-output-token SLO")
    shared_prefix_tokens: int = Field(
        default=0, ge=0, description="leading prompt tokens shared by the class (system prompt)"
    )
    shared_prefix_fraction: float = Field(
        default=1.0, ge=0, le=1, description="share of the class's requests that carry it"
    )
    input_usd_per_million: float | None = Field(
        default=None, ge=0, description="this class's prompt-token price (default: [economics])"
    )
    output_usd_per_million: float | None = Field(
        default=None, ge=0, description="this class's output-token price (default: [economics])"
    )
    cached_input_usd_per_million: float | None = Field(
        default=None, ge=0, description="this class's cached-prefix price (default: [economics])"
    )
    model: str | None = Field(
        default=None, description="the model this class needs (default: the one served model)"
    )


class WorkloadConfig(Section):
    """Arrival process and request classes."""

    arrival: Literal["poisson", "gamma", "schedule", "diurnal", "weekly", "rate_curve", "trace"] = (
        "poisson"
    )
    rate: float | None = Field(default=None, gt=0, description="mean arrivals per second")
    cv: float | None = Field(default=None, gt=0, description="gamma: CV of inter-arrival times")
    schedule: list[tuple[float, float]] | None = Field(
        default=None, description="schedule: [[start_s, rate], ...], rates piecewise constant"
    )
    diurnal_amplitude: float | None = Field(default=None, ge=0, lt=1)
    diurnal_period_s: float | None = Field(default=None, gt=0)
    day_factors: list[float] | None = Field(
        default=None, description="weekly: the rate of each of 7 days, times `rate`"
    )
    rate_curve: str | None = Field(
        default=None, description="rate_curve: a CSV of time_s,rate (piecewise linear)"
    )
    trace: str | None = Field(default=None, description="trace file, or builtin:NAME")
    trace_format: Literal["plain", "azure", "mooncake"] | None = None
    load_scale: float = Field(default=1.0, gt=0, description="trace: 2.0 replays at twice the load")
    classes: list[RequestClass] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields_match_arrival(self) -> WorkloadConfig:
        needs = {
            "poisson": {"rate"},
            "gamma": {"rate", "cv"},
            "schedule": {"schedule"},
            "diurnal": {"rate", "diurnal_amplitude", "diurnal_period_s"},
            "weekly": {"rate", "diurnal_amplitude", "day_factors"},
            "rate_curve": {"rate_curve"},
            "trace": {"trace"},
        }
        optional = {"trace": {"trace_format"}}
        settable = {"rate", "cv", "schedule", "diurnal_amplitude", "diurnal_period_s", "trace"}
        settable |= {"trace_format", "day_factors", "rate_curve"}
        given = {f for f in settable if getattr(self, f) is not None}
        missing = needs[self.arrival] - given
        if missing:
            raise ValueError(f"arrival = '{self.arrival}' needs {', '.join(sorted(missing))}")
        extra = given - needs[self.arrival] - optional.get(self.arrival, set())
        if extra:
            raise ValueError(
                f"arrival = '{self.arrival}' does not use {', '.join(sorted(extra))}; remove it"
            )
        if self.load_scale != 1.0 and self.arrival != "trace":
            raise ValueError("load_scale applies to arrival = 'trace' only")
        if self.schedule is not None:
            _check_schedule(self.schedule)
        if self.day_factors is not None and (
            len(self.day_factors) != 7 or min(self.day_factors) < 0
        ):
            raise ValueError("day_factors: 7 numbers >= 0, one per day of the week")
        self._check_classes()
        return self

    def _check_classes(self) -> None:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if self.arrival == "trace":
            for c in self.classes:
                if c.prompt_tokens is not None or c.output_tokens is not None:
                    raise ValueError(
                        f"class '{c.name}': a trace gives the lengths; remove prompt_tokens"
                        " and output_tokens"
                    )
            return
        if not self.classes:
            raise ValueError("synthetic arrivals need at least one [[workload.classes]] entry")
        for c in self.classes:
            if c.prompt_tokens is None or c.output_tokens is None:
                raise ValueError(f"class '{c.name}' needs prompt_tokens and output_tokens")


def _check_schedule(schedule: list[tuple[float, float]]) -> None:
    starts = [s for s, _ in schedule]
    if not schedule or starts[0] != 0.0:
        raise ValueError("schedule must start at 0.0")
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError("schedule start times must increase")
    if any(r < 0 for _, r in schedule):
        raise ValueError("schedule rates must be >= 0")
