"""The resolved run: a scenario with every reference looked up, as frozen data (``RunSpec``).

:func:`sim.resolve.resolve` makes a :class:`RunSpec` once, at load time; the engine, analysis
and the studies read from it and never from the catalogue, calibration files or price table
again. ``scenario.json`` of a run directory is :meth:`RunSpec.to_json`, and
:meth:`RunSpec.from_json` reads it back without any of those files, so a saved run re-analyses
(and re-runs) as it was even after the catalogue or a calibration changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from sim.catalog import Accelerator, ModelShape
from sim.errors import UserError
from sim.fleet_config import COLOCATED, AutoscaleConfig, FailureConfig, ReclaimConfig
from sim.noise import MarkovLognormal, StepNoise
from sim.perf import PerfParams, RooflineSetup
from sim.prices import GpuPrice
from sim.scenario import BatcherConfig, ReplayConfig, Scenario, ServiceTimeConfig

FORMAT = 2  # of scenario.json; 1 (no "format" key) held the scenario and catalogue entries only

_BATCHER = TypeAdapter(BatcherConfig)


@dataclass(frozen=True)
class PoolLifecycle:
    """How a pool's replicas come, go and are billed over time (docs/fleet.md, "Over time").

    pricing: ``reserved``, ``on_demand``, ``spot`` or ``owned``; spare: warm standby replicas;
    provision_s: provisioning a new replica; load_s: loading it (weights over the storage
    bandwidth plus the engine's start), seconds; autoscale, failures, reclaim: the scenario's
    tables (None: off).
    """

    pricing: str = "on_demand"
    spare: int = 0
    provision_s: float = 0.0
    load_s: float = 0.0
    autoscale: AutoscaleConfig | None = None
    failures: FailureConfig | None = None
    reclaim: ReclaimConfig | None = None

    @property
    def billed_always(self) -> bool:
        """Reserved and owned GPUs cost the same whether provisioned or not."""
        return self.pricing in ("reserved", "owned")

    @property
    def changes(self) -> bool:
        """Whether the pool's replicas can change during a run."""
        return bool(self.autoscale or self.failures or self.reclaim or self.spare)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("autoscale", "failures", "reclaim"):
            value = getattr(self, name)
            out[name] = None if value is None else value.model_dump(mode="json")
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PoolLifecycle:
        """The inverse of :meth:`to_json` (missing keys take their defaults)."""
        tables = {"autoscale": AutoscaleConfig, "failures": FailureConfig, "reclaim": ReclaimConfig}
        out = dict(data)
        for key, table in tables.items():
            if out.get(key) is not None:
                out[key] = table.model_validate(out[key])
        return cls(**out)


@dataclass(frozen=True)
class PoolSpec:
    """One pool: `replicas` identical replicas, each one model on `tp` GPUs of one type.

    Replicas are numbered across the fleet; this pool's are ``first_replica`` to
    ``first_replica + replicas - 1``. `perf` is the step-time model's parameters: the roofline's
    (:class:`~sim.perf.RooflineSetup`, calibration already loaded), a service-time distribution,
    or a step log to replay (its absolute path). `prefill_s_per_token` and `decode_s_per_token`
    are the step-time model's predicted seconds per prompt and per output token of one replica
    (``sim.resolve`` says how), which routers use to weigh pools by speed. `price` is None when
    the scenario has no ``[economics]``. `role`: ``colocated``, ``prefill`` or ``decode``
    (docs/disaggregation.md).
    """

    name: str
    index: int
    gpu: str
    accelerator: Accelerator
    tp: int
    replicas: int
    first_replica: int
    model: str
    model_shape: ModelShape
    weight_dtype: str
    kv_dtype: str
    batcher: BatcherConfig
    perf: RooflineSetup | ServiceTimeConfig | ReplayConfig
    kv_capacity_blocks: int
    swap_s_per_block: float
    weight_bytes: float
    prefill_s_per_token: float
    decode_s_per_token: float
    price: GpuPrice | None
    role: str = COLOCATED
    lifecycle: PoolLifecycle = PoolLifecycle()

    @property
    def gpus(self) -> int:
        """GPUs of the whole pool."""
        return self.replicas * self.tp

    @property
    def usd_per_replica_hour(self) -> float | None:
        """The GPUs of one replica for one hour (None without a price)."""
        return None if self.price is None else self.price.usd_per_gpu_hour * self.tp

    @property
    def pads_decode_attention(self) -> bool:
        """Whether decode attention is costed over the batch padded to its longest context."""
        return isinstance(self.perf, RooflineSetup) and self.perf.decode_attention == "padded"

    @property
    def replica_indices(self) -> range:
        """Fleet-wide indices of this pool's replicas."""
        return range(self.first_replica, self.first_replica + self.replicas)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (non-finite floats as text)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "perf":
                value = _perf_json(value)
            elif f.name == "price":
                value = None if value is None else dataclasses.asdict(value)
            elif f.name == "lifecycle":
                value = value.to_json()
            elif hasattr(value, "model_dump"):
                value = value.model_dump(mode="json")
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PoolSpec:
        """The inverse of :meth:`to_json`."""
        price = data["price"]
        return cls(
            **{
                **data,
                "accelerator": Accelerator.model_validate(data["accelerator"]),
                "model_shape": ModelShape.model_validate(data["model_shape"]),
                "batcher": _BATCHER.validate_python(data["batcher"]),
                "perf": _perf_from_json(data["perf"]),
                "price": None if price is None else GpuPrice(**price),
                # runs saved before pools had a lifecycle: a fixed pool
                "lifecycle": PoolLifecycle.from_json(data.get("lifecycle", {})),
            }
        )


def _perf_json(perf: RooflineSetup | ServiceTimeConfig | ReplayConfig) -> dict[str, Any]:
    if not isinstance(perf, RooflineSetup):
        return perf.model_dump(mode="json")
    params = dataclasses.asdict(perf.params)
    return {
        "kind": perf.kind,
        "params": {k: _finite(v) for k, v in params.items()},
        "decode_attention": perf.decode_attention,
        "noise": None if perf.noise is None else dataclasses.asdict(perf.noise),
    }


def _perf_from_json(data: Mapping[str, Any]) -> RooflineSetup | ServiceTimeConfig | ReplayConfig:
    if data["kind"] == "service_time":
        return ServiceTimeConfig.model_validate(data)
    if data["kind"] == "replay":
        return ReplayConfig.model_validate(data)
    params = PerfParams(**{k: float(v) for k, v in data["params"].items()})
    noise = data["noise"]
    if noise is not None:
        noise = StepNoise(**{phase: _markov(noise[phase]) for phase in ("prefill", "decode")})
    return RooflineSetup(params, data["decode_attention"], noise)


def _markov(data: Mapping[str, Any]) -> MarkovLognormal:
    return MarkovLognormal(
        tuple(data["log_means"]),
        tuple(data["log_sigmas"]),
        tuple(tuple(row) for row in data["transitions"]),
    )


@dataclass(frozen=True)
class Interconnect:
    """The link that carries KV caches from prefill to decode replicas.

    bandwidth_gb_s: per GPU and direction (GB/s; a replica's tp GPUs each send their shard of
    the KV cache at once); latency_s: per transfer; link: ``infiniband`` or ``nvlink``; source:
    where the two numbers come from.
    """

    link: str
    bandwidth_gb_s: float
    latency_s: float
    source: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (an infinite bandwidth as the text 'inf')."""
        data = dataclasses.asdict(self)
        data["bandwidth_gb_s"] = _finite(self.bandwidth_gb_s)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Interconnect:
        """The inverse of :meth:`to_json`."""
        return cls(**{**data, "bandwidth_gb_s": float(data["bandwidth_gb_s"])})


def _finite(value: float) -> float | str:
    """A float for JSON: non-finite ones as text ('inf', 'nan')."""
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, resolved: the scenario, its pools, router and trace files.

    `scenario` keeps the workload, simulation and economics sections as the user wrote them;
    `trace_files` maps each trace named in the scenario (``builtin:NAME`` or a path) to its
    absolute file path; `class_models` is the model each request class needs, in the order of
    the workload's classes; `interconnect` is the KV-cache link of a fleet with prefill and
    decode pools (None without).
    """

    scenario: Scenario
    pools: tuple[PoolSpec, ...]
    router: str
    trace_files: Mapping[str, str]
    class_models: tuple[str, ...]
    interconnect: Interconnect | None = None

    @property
    def disaggregated(self) -> bool:
        """Whether some model is served by prefill and decode pools."""
        return self.interconnect is not None

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def pads_decode_attention(self) -> bool:
        """Whether any pool costs decode attention over padded batches (the steps trace then
        records each interval's longest context)."""
        return any(p.pads_decode_attention for p in self.pools)

    @property
    def num_replicas(self) -> int:
        """Replicas of the whole fleet."""
        return sum(p.replicas for p in self.pools)

    def replica_pools(self) -> list[PoolSpec]:
        """The pool of each replica, by fleet-wide replica index."""
        return [p for p in self.pools for _ in p.replica_indices]

    def models(self) -> list[str]:
        """The served models, in the order of the pools that serve them."""
        return list(dict.fromkeys(p.model for p in self.pools))

    def with_seed(self, seed: int) -> RunSpec:
        """The same run with ``sim.seed`` set to `seed`."""
        if seed == self.scenario.sim.seed:
            return self
        sim = self.scenario.sim.model_copy(update={"seed": seed})
        return dataclasses.replace(self, scenario=self.scenario.model_copy(update={"sim": sim}))

    def to_json(self) -> dict[str, Any]:
        """The contents of scenario.json."""
        return {
            "format": FORMAT,
            "scenario": self.scenario.model_dump(mode="json"),
            "pools": [p.to_json() for p in self.pools],
            "router": self.router,
            "trace_files": dict(self.trace_files),
            "class_models": list(self.class_models),
            "interconnect": None if self.interconnect is None else self.interconnect.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        """A RunSpec from scenario.json; ValueError for another format."""
        if data.get("format") != FORMAT:
            raise ValueError(f"scenario.json format {data.get('format', 1)}, expected {FORMAT}")
        return cls(
            Scenario.model_validate(data["scenario"]),
            tuple(PoolSpec.from_json(p) for p in data["pools"]),
            data["router"],
            dict(data["trace_files"]),
            tuple(data["class_models"]),
            _interconnect(data.get("interconnect")),  # absent in runs saved before it existed
        )


def _interconnect(data: Mapping[str, Any] | None) -> Interconnect | None:
    return None if data is None else Interconnect.from_json(data)


def read_run_spec(path: str | Path) -> RunSpec:
    """The resolved run stored in a run directory's scenario.json; UserError if it is not one."""
    path = Path(path)
    try:
        return RunSpec.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path}: not a scenario.json this version can read ({exc}); run its scenario again"
        ) from None
