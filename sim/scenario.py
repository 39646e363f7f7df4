"""Scenario files: the TOML schema, loading, ``--set`` overrides and clear errors.

A scenario is validated once, at the boundary, into frozen pydantic objects; every component is
handed its own section. Every mistake is reported as a :class:`~sim.errors.UserError` that names
the file, the dotted field path, the bad value and what is allowed.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from sim.catalog import (
    Accelerator,
    ModelShape,
    builtin_accelerators,
    builtin_models,
    canonical_id,
)
from sim.economics_config import EconomicsConfig
from sim.errors import UserError
from sim.fleet_config import (
    COLOCATED,
    DYNAMIC_KEYS,
    BackgroundConfig,
    InterconnectConfig,
    PoolDynamics,
    PoolRole,
    check_pool_dynamics,
    check_roles,
)
from sim.overrides import apply_override, deep_copy
from sim.schema_errors import format_errors
from sim.section import Section
from sim.workload_config import WorkloadConfig

Dtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
KvDtype = Literal["bf16", "fp16", "fp8"]


# ----------------------------------------------------------------------------- [sim]


class SimConfig(Section):
    """How long to simulate and with which randomness."""

    seed: int = Field(default=0, ge=0)
    duration_s: float | None = Field(default=None, gt=0, description="arrival window, seconds")
    num_requests: int | None = Field(default=None, gt=0, description="cap on arrivals")
    warmup_s: float = Field(default=0.0, ge=0, description="arrivals before this are not measured")
    drain: bool = Field(default=True, description="run until every request is done")
    step_compression: bool = True

    @model_validator(mode="after")
    def _warmup_inside_window(self) -> SimConfig:
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s = {self.warmup_s:g} must be below duration_s = {self.duration_s:g}: "
                "only arrivals after the warm-up are measured, so nothing would be"
            )
        return self


# ----------------------------------------------------------------------------- [model]


class ModelConfig(Section):
    """Which model is served, and at which precision."""

    name: str = Field(description="catalogue id (llama-3-8b, ...) or a [models.NAME] entry")
    weight_dtype: Dtype = "bf16"
    kv_dtype: KvDtype = "bf16"


# ----------------------------------------------------------------------------- [batcher]


MOVED_TO_PERF = {
    "cpu_overhead_s": "perf.host_prefill_step_s and perf.host_decode_step_s",
    "cpu_overhead_per_seq_s": "perf.host_seq_s",
}


class _BatcherBase(Section):
    """KV-cache memory, common to every batcher."""

    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    block_size: int = Field(default=16, ge=1, description="tokens per KV-cache block")

    @model_validator(mode="before")
    @classmethod
    def _host_time_moved(cls, data: Any) -> Any:
        moved = [name for name in MOVED_TO_PERF if isinstance(data, dict) and name in data]
        if moved:
            raise ValueError(
                f"{moved[0]} is no longer a batcher field: host time is part of the step-time "
                f"model; set {MOVED_TO_PERF[moved[0]]} in [perf] (seconds) instead"
            )
        return data


class ContinuousBatcherConfig(_BatcherBase):
    """Continuous batching (Orca, vLLM): iteration-level scheduling over a paged KV cache."""

    kind: Literal["continuous"] = "continuous"
    max_num_seqs: int = Field(default=256, ge=1, description="running sequences per replica")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="tokens per iteration")
    chunked_prefill: bool = Field(
        default=False, description="split prompts over iterations under the token budget"
    )
    mix_prefill_decode: bool = Field(
        default=True, description="false: an iteration prefills or decodes, never both (vLLM v0)"
    )
    order: Literal["fcfs", "priority", "shortest_prompt"] = "fcfs"
    preemption: Literal["recompute", "swap"] = "recompute"
    prefix_caching: bool = False
    cuda_graph_padding: bool = Field(
        default=False, description="pad decode batches to captured CUDA-graph sizes"
    )

    @model_validator(mode="after")
    def _chunking_needs_mixing(self) -> ContinuousBatcherConfig:
        if self.chunked_prefill and not self.mix_prefill_decode:
            raise ValueError("chunked_prefill needs mix_prefill_decode = true")
        return self


class StaticBatcherConfig(_BatcherBase):
    """Static batching (FasterTransformer): a padded batch runs until its longest request ends."""

    kind: Literal["static"]
    max_batch: int = Field(default=8, ge=1, description="requests per batch")


class DynamicBatcherConfig(_BatcherBase):
    """Dynamic batching (Triton): a batch starts when full or when its oldest request waited."""

    kind: Literal["dynamic"]
    max_batch: int = Field(default=8, ge=1, description="requests per batch")
    max_queue_delay_s: float = Field(default=0.01, ge=0, description="longest wait to fill")
    preferred_batch_sizes: list[int] | None = Field(
        default=None, description="sizes started at once when that many requests wait"
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> DynamicBatcherConfig:
        too_big = [b for b in self.preferred_batch_sizes or [] if not 1 <= b <= self.max_batch]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} must lie in 1..max_batch")
        return self


BatcherConfig = Annotated[
    Union[ContinuousBatcherConfig, StaticBatcherConfig, DynamicBatcherConfig],  # noqa: UP007
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- [perf]


class RooflineConfig(Section):
    """Roofline step time, kernel by kernel (sim/perf.py): each kernel takes the slower of its
    FLOPs / achieved FLOP/s and bytes / achieved bytes/s; plus `overhead_s` per iteration.

    Default efficiencies are the ceilings measured on an H200 (shared profile README): a bf16
    8192^3 matmul reached 797 of 989.4 TFLOP/s (0.80), a 2 GiB copy 2.75 of 4.8 TB/s (0.57).
    """

    kind: Literal["roofline"] = "roofline"
    compute_efficiency: float = Field(default=0.80, gt=0, le=1)
    memory_efficiency: float = Field(default=0.57, gt=0, le=1)
    overhead_s: float = Field(default=0.0, ge=0, description="fixed GPU time per iteration")
    host_prefill_step_s: float = Field(
        default=0.0, ge=0, description="host time of an iteration that prefills, seconds"
    )
    host_decode_step_s: float = Field(
        default=0.0, ge=0, description="host time of a pure decode iteration, seconds"
    )
    host_seq_s: float = Field(
        default=0.0, ge=0, description="host time per sequence in an iteration, seconds"
    )
    host_prompt_s: float = Field(
        default=0.0, ge=0, description="more host time per prompt chunk in an iteration, seconds"
    )
    calibration: str | None = Field(
        default=None,
        description="fitted parameters (`sim perf fit`): a TOML file relative to the scenario "
        "file, or builtin:NAME for one under sim/data/calibrations/; replaces the efficiencies "
        "and overheads above",
    )
    decode_attention: Literal["summed", "padded"] | None = Field(
        default=None,
        description="summed: over each sequence's context; padded: batch x longest context "
        "(default: the calibration's, else summed)",
    )
    noise: bool = Field(
        default=False,
        description="multiply step times by the calibration's fitted noise (its [noise] table)",
    )


class ServiceTimeConfig(Section):
    """Each iteration's duration is drawn from a distribution, whatever the batch holds.

    With ``scale_with_batch`` the draw is multiplied by the number of sequences in the batch
    (processor sharing). Meant for validating the engine against queueing theory.
    """

    kind: Literal["service_time"]
    distribution: Literal["exponential", "deterministic", "lognormal", "gamma"]
    mean_s: float = Field(gt=0)
    cv: float | None = Field(default=None, gt=0)
    scale_with_batch: bool = False

    @model_validator(mode="after")
    def _cv_where_needed(self) -> ServiceTimeConfig:
        takes_cv = self.distribution in ("lognormal", "gamma")
        if takes_cv and self.cv is None:
            raise ValueError(f"distribution '{self.distribution}' needs cv")
        if not takes_cv and self.cv is not None:
            raise ValueError(f"distribution '{self.distribution}' does not take cv; remove it")
        return self


class ReplayConfig(Section):
    """Each iteration takes the next measured duration of a step log, in order (sim/replay.py).

    For checking a batcher's scheduling against the engine that wrote the log: a live log
    (``start_s,end_s,kind,batch,tokens,max_context,sum_context``) or a ``steps.parquet`` run
    step by step. One replica replays the log.
    """

    kind: Literal["replay"]
    steps: str = Field(description="step log (CSV or Parquet), relative to the scenario file")


PerfConfig = Annotated[
    Union[RooflineConfig, ServiceTimeConfig, ReplayConfig],  # noqa: UP007
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- [fleet]

SINGLE_POOL_KEYS = ("gpu", "tp", "replicas", *DYNAMIC_KEYS)
RouterName = Literal[
    "round_robin",
    "least_outstanding",
    "central_queue",
    "least_work",
    "power_of_two",
    "prefix_affinity",
    "cheapest_first",
    "pack",
]


class PoolConfig(PoolDynamics):
    """A pool of identical replicas, each one model on `tp` GPUs of one type.

    Unset fields inherit: `model`, `weight_dtype` and `kv_dtype` from ``[model]``, `batcher`
    from ``[batcher]`` and `perf` from ``[perf]`` (a pool's own table replaces the whole
    section), the price from ``[economics]`` or the defaults table for the pool's GPU and
    pricing. Its fields over time (pricing, spares, cold start, autoscaling, failures, spot
    reclaims) are those of :class:`~sim.fleet_config.PoolDynamics`. `role`: ``colocated``
    replicas prefill and decode; a ``prefill`` pool's replicas prefill and hand each request's
    KV cache to a ``decode`` pool's replica (docs/disaggregation.md).
    """

    name: str = Field(min_length=1)
    role: PoolRole = COLOCATED
    gpu: str = Field(description="catalogue id (h100, ...) or an [accelerators.NAME] entry")
    tp: int = Field(default=1, ge=1, le=64)
    replicas: int = Field(default=1, ge=0, description="at the start (0 only with autoscale)")
    model: str | None = Field(default=None, description="model served (default: [model] name)")
    weight_dtype: Dtype | None = None
    kv_dtype: KvDtype | None = None
    batcher: BatcherConfig | None = None
    perf: PerfConfig | None = None
    gpu_usd_per_hour: float | None = Field(
        default=None, ge=0, description="this pool's price of one GPU-hour (rented pricing)"
    )
    price_source: str | None = Field(default=None, description="where this pool's price is from")


class FleetConfig(PoolDynamics):
    """The replicas: one pool (`gpu`, `tp`, `replicas` and the fields of
    :class:`~sim.fleet_config.PoolDynamics`) or several (`pools`), the router, the background
    work idle replicas take (`background`), and `interconnect` for fleets with prefill and
    decode pools."""

    gpu: str | None = Field(
        default=None, description="catalogue id (h100, ...) or an [accelerators.NAME] entry"
    )
    tp: int = Field(default=1, ge=1, le=64)
    replicas: int = Field(default=1, ge=0, description="at the start (0 only with autoscale)")
    router: RouterName = "least_outstanding"
    pools: list[PoolConfig] = Field(default_factory=list)
    background: BackgroundConfig | None = None
    interconnect: InterconnectConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pools"):
            given = [k for k in SINGLE_POOL_KEYS if k in data]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: with [[fleet.pools]] each pool sets its own "
                    f"{given[0]}; remove fleet.{given[0]}"
                )
        return data

    @model_validator(mode="after")
    def _pools_or_gpu(self) -> FleetConfig:
        if not self.pools and self.gpu is None:
            raise ValueError("give fleet.gpu, or [[fleet.pools]] entries")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_keys(self, handler: Any) -> dict:
        """With pools, the single-pool keys are not written (they would not validate back)."""
        data = handler(self)
        if self.pools:
            for key in SINGLE_POOL_KEYS:
                data.pop(key, None)
        return data


# ----------------------------------------------------------------------------- the scenario

_MAX_CONTEXT = "the longest prompt + output served, tokens (max_position_embeddings)"
_GPUS_PER_NODE = "the GPUs of one NVLink (scale-up) domain, the most one replica may span"
_DEFAULT_KINDS = {"batcher": "continuous", "perf": "roofline"}


class Scenario(Section):
    """A whole scenario file, validated."""

    name: str = "scenario"
    sim: SimConfig = Field(default_factory=SimConfig)
    workload: WorkloadConfig
    model: ModelConfig | None = None
    fleet: FleetConfig
    batcher: BatcherConfig = Field(default_factory=ContinuousBatcherConfig)
    perf: PerfConfig = Field(default_factory=RooflineConfig)
    economics: EconomicsConfig | None = None
    accelerators: dict[str, Accelerator] = Field(default_factory=dict)
    models: dict[str, ModelShape] = Field(default_factory=dict)
    base_dir: str = Field(default=".", description="folder that relative paths start from")

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = _with_default_kinds(data)
            fleet = data.get("fleet")
            if isinstance(fleet, dict) and isinstance(fleet.get("pools"), list):
                pools = [_with_default_kinds(p) for p in fleet["pools"]]
                data["fleet"] = {**fleet, "pools": pools}
            data = _gpu_ids_any_case(data)
        return data

    @model_validator(mode="after")
    def _references_resolve(self) -> Scenario:
        gpus = {**builtin_accelerators(), **self.accelerators}
        for field, gpu in self._pool_fields("gpu"):
            if gpu not in gpus:
                raise ValueError(
                    f"{field}: unknown accelerator '{gpu}'; allowed: "
                    f"{', '.join(sorted(gpus))}, or define [accelerators.{gpu}]"
                )
        models = {**builtin_models(), **self.models}
        for field, name in self._pool_fields("model"):
            if name is None:
                raise ValueError(f"{field}: required (there is no [model] section to inherit)")
            if name not in models:
                raise ValueError(
                    f"{field}: unknown model '{name}'; allowed: "
                    f'{", ".join(sorted(models))}, or define [models."{name}"]'
                )
        self._check_class_models()
        self._check_pool_prices()
        self._check_dynamics()
        kv_dtype = self.model.kv_dtype if self.model is not None else "bf16"
        check_roles(self.fleet, [m for _, m in self._pool_fields("model")], self.batcher, kv_dtype)
        if self.fleet.router == "cheapest_first" and self.economics is None:
            raise ValueError(
                "fleet.router = 'cheapest_first' ranks pools by price: add [economics]"
            )
        self._check_own_entries()
        if self.workload.arrival != "trace" and not (self.sim.duration_s or self.sim.num_requests):
            raise ValueError("sim: give duration_s or num_requests (or replay a trace)")
        if not self.sim.drain and self.sim.duration_s is None:
            raise ValueError("sim.drain = false needs sim.duration_s (when to stop)")
        self._check_schedule_arrives()
        return self

    def _check_schedule_arrives(self) -> None:
        """A schedule whose rates are 0 until the arrivals end would run without requests."""
        end = self.sim.duration_s if self.sim.duration_s is not None else math.inf
        if self.workload.schedule and not any(
            rate > 0 for start, rate in self.workload.schedule if start < end
        ):
            raise ValueError(
                f"workload.schedule: no rate > 0 starts before the arrivals end "
                f"(sim.duration_s = {end:g} s), so no request would arrive"
            )

    def _pool_fields(self, key: str) -> list[tuple[str, Any]]:
        """(field path, value) of `key` (gpu or model) for each pool, inherited where unset."""
        default_model = self.model.name if self.model is not None else None
        if not self.fleet.pools:
            field = "fleet.gpu" if key == "gpu" else "model.name"
            return [(field, self.fleet.gpu if key == "gpu" else default_model)]
        return [
            (f"fleet.pools.{i}.{key}", p.gpu if key == "gpu" else (p.model or default_model))
            for i, p in enumerate(self.fleet.pools)
        ]

    def served_models(self) -> list[str]:
        """The models the fleet serves, in the order of the pools that serve them."""
        return list(dict.fromkeys(name for _, name in self._pool_fields("model")))

    def class_models(self) -> list[str]:
        """The model each request class needs, in class order (one class 'trace' without any)."""
        served = self.served_models()
        return [c.model or served[0] for c in self.workload.classes] or served[:1]

    def _check_own_entries(self) -> None:
        """A model or accelerator of the scenario's own states what every catalogue entry does
        (optional in the shared schema: shapes of measured profiles have no context)."""
        required = (
            ("models", self.models, "max_context", _MAX_CONTEXT),
            ("accelerators", self.accelerators, "gpus_per_node", _GPUS_PER_NODE),
        )
        for table, entries, field, meaning in required:
            for name, entry in entries.items():
                if getattr(entry, field) is None:
                    raise ValueError(f'{table}."{name}".{field}: required of your own: {meaning}')

    def _check_class_models(self) -> None:
        served = self.served_models()
        classes = self.workload.classes
        for i, c in enumerate(classes):
            if c.model is None and len(served) > 1:
                raise ValueError(
                    f"workload.classes.{i}.model: the fleet serves {', '.join(served)}; "
                    f"name the model class '{c.name}' needs"
                )
            if c.model is not None and c.model not in served:
                raise ValueError(
                    f"workload.classes.{i}.model = '{c.model}': no pool serves it; served: "
                    f"{', '.join(served)}"
                )
        if not classes and len(served) > 1:
            raise ValueError(
                f"workload: the fleet serves {', '.join(served)}; replayed requests need "
                f"[[workload.classes]] that name their model"
            )

    def _check_pool_prices(self) -> None:
        for i, pool in enumerate(self.fleet.pools):
            if pool.gpu_usd_per_hour is None and pool.price_source is None:
                continue
            field = f"fleet.pools.{i}.gpu_usd_per_hour"
            if self.economics is None:
                raise ValueError(f"{field}: a pool price needs an [economics] section")
            if self.economics.pricing == "owned":
                raise ValueError(
                    f"{field}: pricing = 'owned' prices GPUs from purchase_usd_per_gpu; remove it"
                )

    def pool_tables(self) -> list[tuple[str, int, PoolDynamics]]:
        """Per pool: where it is written (``fleet`` or ``fleet.pools.N``), its replicas at the
        start and its fields over time."""
        if not self.fleet.pools:
            return [("fleet", self.fleet.replicas, self.fleet)]
        return [(f"fleet.pools.{i}", p.replicas, p) for i, p in enumerate(self.fleet.pools)]

    def _check_dynamics(self) -> None:
        default_pricing = self.economics.pricing if self.economics is not None else "on_demand"
        models = self.served_models()
        pool_models = [name for _, name in self._pool_fields("model")]
        for (field, replicas, dyn), model in zip(self.pool_tables(), pool_models, strict=True):
            classes = [c for c in self.workload.classes if (c.model or models[0]) == model]
            check_pool_dynamics(field, replicas, dyn, dyn.pricing or default_pricing, classes)

    def resolve_path(self, path: str) -> Path:
        """A path from the scenario, relative to the scenario file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


def _with_default_kinds(section: dict) -> dict:
    """A copy of a table whose batcher and perf sub-tables get their default ``kind``."""
    out = dict(section)
    for key, kind in _DEFAULT_KINDS.items():
        if isinstance(out.get(key), dict) and "kind" not in out[key]:
            out[key] = {"kind": kind, **out[key]}
    return out


def _gpu_ids_any_case(data: dict) -> dict:
    """Each GPU of the fleet spelled as its catalogue or scenario id, whatever its case (H100 is
    h100): `fleet.gpu` and every pool's `gpu`."""
    fleet, custom = data.get("fleet"), data.get("accelerators", {})
    if not isinstance(fleet, dict):
        return data
    ids = [*builtin_accelerators(), *(custom if isinstance(custom, dict) else {})]

    def canonical(table: Any) -> Any:
        if isinstance(table, dict) and isinstance(table.get("gpu"), str):
            return {**table, "gpu": canonical_id(table["gpu"], ids)}
        return table

    fleet = canonical(fleet)
    if isinstance(fleet.get("pools"), list):
        fleet = {**fleet, "pools": [canonical(pool) for pool in fleet["pools"]]}
    return {**data, "fleet": fleet}


# ----------------------------------------------------------------------------- loading


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The tables of a TOML file; UserError naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """A scenario file's raw data, with its `name` and `base_dir` filled in.

    The name is the file's stem unless the file names itself; `base_dir` is the folder that
    the scenario's relative paths start from.
    """
    path = Path(path)
    data = read_toml(path, "scenario")
    data.setdefault("name", path.stem)
    data["base_dir"] = str(path.parent.resolve())
    return data


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override (``section.field=value``) and validate a scenario file."""
    return scenario_from_dict(read_scenario_file(path), source=str(path), overrides=overrides)


def scenario_from_dict(
    data: dict[str, Any], source: str = "<scenario>", overrides: list[str] | tuple[str, ...] = ()
) -> Scenario:
    """Validate a scenario given as nested dicts, after applying ``--set`` overrides."""
    data = deep_copy(data)
    set_paths = [apply_override(data, item, source) for item in overrides]
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_errors(exc, Scenario, data, source, set_paths)) from None
