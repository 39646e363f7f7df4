"""Scenario tables of a fleet that changes over simulated time (docs/fleet.md, "Over time").

A pool (``[[fleet.pools]]``, or ``[fleet]`` itself for the single-pool form) may set:

* ``pricing``: ``reserved``, ``on_demand`` or ``spot`` (default: ``[economics]``'s pricing);
* ``spare``: warm standby replicas (N+k), loaded and billed but not routed to;
* ``[cold_start]``: how long a new replica takes to serve (provisioning, then loading);
* ``[autoscale]``: replicas driven by a signal (``queue``, ``utilization``, ``slo``) or a
  time-of-day ``schedule``;
* ``[failures]``: replica failures and repairs (MTBF, MTTR);
* ``[reclaim]``: spot capacity taken back by the provider (spot pools only).

``[fleet.background]`` lends idle replicas to preemptible background work (training, batch).

A pool's ``role`` (colocated, prefill or decode) and ``[fleet.interconnect]`` make a fleet that
disaggregates prefill and decode (docs/disaggregation.md); such pools keep their replicas for
the whole run, so they take none of the fields over time above but ``pricing``.

Defaults that come from measurements or documentation name their source beside them; those
without one are marked as assumptions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_serializer, model_validator

from sim.section import Section

if TYPE_CHECKING:
    from sim.scenario import BatcherConfig, FleetConfig

SECONDS_PER_DAY = 86400.0

# Weights are streamed from storage into GPU memory at this rate (GB/s, 1e9 bytes): the Run:ai
# Model Streamer loaded Llama-3-8B (bf16, one safetensors file) from AWS S3 to the GPUs of a
# g5.12xlarge at 3.51 GiB/s (run-ai/runai-model-streamer, docs/src/benchmarks.md, streamer 0.6.0).
STORAGE_GB_PER_S = 3.51 * 1.073741824
# Engine start besides loading weights (seconds): vLLM 0.10.0 serving Llama-2-7B on an A100,
# "initialize_engine took 43.10 seconds" of which "Model loading took ... 7.800328 seconds"
# (upb-cn/vllm-startup-profiler, experiments/A100/examples/batch_size/iterations/1/
# output_model_llama2-7b-hf_cuda-graph-sizes_256.txt; the log of "Breaking the Ice: Analyzing
# Cold Start Latency in vLLM", MLSys 2026): 43.10 - 7.80 = 35.3 s of tokenizer, torch.compile
# (from its cache), KV-cache profiling and CUDA-graph capture.
ENGINE_START_S = 35.3
# Provisioning a GPU node until its container starts (seconds): an ASSUMPTION, no measurement;
# guides on Kubernetes GPU autoscaling quote 2-4 minutes for a new GPU node.
PROVISION_S = 120.0
# Kubernetes Horizontal Pod Autoscaler defaults (kubernetes.io/docs, "Horizontal Pod
# Autoscaling"): metrics are evaluated every 15 s, a scale-down waits for a 300 s stabilization
# window, a scale-up does not wait, a ratio within 10% of 1 changes nothing, and the default
# scale-up policy adds per period at most 100% of the pods or 4 pods, whichever is more.
AUTOSCALE_PERIOD_S = 15.0
HPA_SCALE_UP_PODS = 4
SCALE_DOWN_COOLDOWN_S = 300.0
AUTOSCALE_TOLERANCE = 0.1
# A spot instance gets a two-minute interruption notice before EC2 reclaims it (AWS EC2 User
# Guide, "Spot Instance interruption notices").
RECLAIM_NOTICE_S = 120.0

PoolPricing = Literal["on_demand", "reserved", "spot"]
SIGNALS = ("queue", "utilization", "slo", "schedule")


class ColdStartConfig(Section):
    """How long a new (or repaired) replica takes before it serves, in seconds.

    provisioning: ``provision_s``; then loading: its weights over ``storage_gb_per_s`` plus
    ``engine_start_s`` (the engine's own start: compilation, KV-cache profiling, CUDA graphs).
    """

    provision_s: float = Field(default=PROVISION_S, ge=0, description="node until container start")
    storage_gb_per_s: float = Field(
        default=STORAGE_GB_PER_S, gt=0, description="weights read into GPU memory, GB/s"
    )
    engine_start_s: float = Field(
        default=ENGINE_START_S, ge=0, description="engine start besides weights, seconds"
    )


class AutoscaleConfig(Section):
    """Serving replicas of a pool chosen every `period_s` seconds.

    signal ``queue``: requests waiting to start (in the model's held queue and in the
    batchers' queues) per serving replica; ``utilization``: arrival rate over the last
    `window_s` / the serving replicas' capacity (``sim.capacity``); ``slo``: p90 over the
    requests that arrived in the last `window_s` of time to first token / their class's
    ``slo_ttft_s``. Each takes `target`, and the desired count is the Kubernetes HPA's
    ``ceil(serving x signal / target)``. ``schedule``: replicas by time of day,
    ``[[seconds_since_midnight, replicas], ...]`` from 0, repeated every day.
    """

    signal: Literal["queue", "utilization", "slo", "schedule"]
    min: int = Field(default=0, ge=0, description="fewest serving replicas")
    max: int | None = Field(default=None, ge=1, description="most serving replicas")
    target: float | None = Field(default=None, gt=0, description="the signal's set point")
    schedule: list[tuple[float, int]] | None = Field(
        default=None, description="schedule: [[seconds since midnight, replicas], ...]"
    )
    period_s: float = Field(default=AUTOSCALE_PERIOD_S, gt=0, description="evaluation period")
    window_s: float = Field(default=60.0, gt=0, description="utilization, slo: look-back")
    scale_up_cooldown_s: float = Field(default=0.0, ge=0, description="after any scaling")
    scale_down_cooldown_s: float = Field(
        default=SCALE_DOWN_COOLDOWN_S,
        ge=0,
        description="scale-in only to the highest recommendation of this look-back, seconds",
    )

    @model_validator(mode="after")
    def _fields_match_signal(self) -> AutoscaleConfig:
        if self.signal == "schedule":
            if self.schedule is None:
                raise ValueError("signal = 'schedule' needs schedule = [[seconds, replicas], ...]")
            if self.target is not None:
                raise ValueError("signal = 'schedule' takes no target; remove it")
            _check_schedule(self.schedule)
        else:
            if self.target is None:
                raise ValueError(f"signal = '{self.signal}' needs target")
            if self.max is None:
                raise ValueError(f"signal = '{self.signal}' needs max")
            if self.schedule is not None:
                raise ValueError(
                    f"schedule applies to signal = 'schedule' only, not '{self.signal}'"
                )
        if self.signal == "utilization" and self.target is not None and self.target > 1:
            raise ValueError(f"target {self.target}: a capacity utilization is at most 1")
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        low, high = self.bounds
        if self.schedule is not None and not all(low <= n <= high for _, n in self.schedule):
            raise ValueError(f"schedule replicas must lie within min..max ({low}..{high})")
        return self

    @property
    def bounds(self) -> tuple[int, int]:
        """Fewest and most serving replicas (a schedule's largest when max is unset)."""
        high = self.max if self.max is not None else max(n for _, n in self.schedule or [(0, 1)])
        return self.min, high


def _check_schedule(schedule: list[tuple[float, int]]) -> None:
    starts = [s for s, _ in schedule]
    if not schedule or starts[0] != 0.0:
        raise ValueError("schedule must start at 0.0 (midnight)")
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError("schedule times must increase")
    if starts[-1] >= SECONDS_PER_DAY:
        raise ValueError(f"schedule times are seconds since midnight, below {SECONDS_PER_DAY:.0f}")
    if any(n < 0 for _, n in schedule):
        raise ValueError("schedule replicas must be >= 0")
    if not any(n > 0 for _, n in schedule):
        raise ValueError("schedule never serves: give at least one time with replicas >= 1")


class FailureConfig(Section):
    """Replica failures: each replica fails after an up time of mean `mtbf_s` and is repaired
    after a down time of mean `mttr_s` (seconds), both exponential or Weibull with `shape`."""

    mtbf_s: float = Field(gt=0, description="mean time between failures of one replica")
    mttr_s: float = Field(gt=0, description="mean time to repair it")
    distribution: Literal["exponential", "weibull"] = "exponential"
    shape: float | None = Field(default=None, gt=0, description="weibull: shape k")

    @model_validator(mode="after")
    def _shape_for_weibull(self) -> FailureConfig:
        if self.distribution == "weibull" and self.shape is None:
            raise ValueError("distribution = 'weibull' needs shape")
        if self.distribution != "weibull" and self.shape is not None:
            raise ValueError("shape applies to distribution = 'weibull' only; remove it")
        return self


class ReclaimConfig(Section):
    """Spot capacity taken back: each replica is reclaimed at `rate_per_hour` (Poisson) after a
    notice of `notice_s` seconds, during which it drains."""

    rate_per_hour: float = Field(gt=0, description="reclaims per replica-hour")
    notice_s: float = Field(default=RECLAIM_NOTICE_S, ge=0, description="warning before it goes")


class BackgroundConfig(Section):
    """Idle serving replicas lent to preemptible background jobs (training, batch inference).

    A replica that has held no request for `idle_after_s` runs background work until a request
    reaches it; handing the GPU back takes `preemption_s` (the request waits that long), and
    each preemption loses `restart_loss_s` of background work (since its last checkpoint). A job
    is `job_gpu_hours` of work worth `usd_per_gpu_hour` per GPU-hour done.
    """

    idle_after_s: float = Field(gt=0, description="serving queue empty this long: lend it")
    preemption_s: float = Field(ge=0, description="handing the GPU back to serving, seconds")
    restart_loss_s: float = Field(ge=0, description="background work lost per preemption, s")
    job_gpu_hours: float = Field(gt=0, description="GPU-hours of one background job")
    usd_per_gpu_hour: float = Field(ge=0, description="value of one GPU-hour of background work")


class PoolDynamics(Section):
    """The fields of a pool that shape it over time (shared by ``[fleet]`` and pools)."""

    pricing: PoolPricing | None = Field(
        default=None, description="reserved, on_demand or spot (default: [economics] pricing)"
    )
    spare: int = Field(default=0, ge=0, description="warm standby replicas (N+k)")
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    autoscale: AutoscaleConfig | None = None
    failures: FailureConfig | None = None
    reclaim: ReclaimConfig | None = None


DYNAMIC_KEYS = tuple(PoolDynamics.model_fields)


def check_pool_dynamics(
    field: str, replicas: int, dyn: PoolDynamics, pricing: str, classes: list
) -> None:
    """Refuse what a pool's fields over time cannot mean together (ValueError naming `field`).

    `replicas`: the pool's replicas at the start; `pricing`: its pricing, resolved; `classes`:
    the request classes its model serves (``slo`` autoscaling needs their ``slo_ttft_s``).
    """
    scale = dyn.autoscale
    if scale is None and replicas == 0:
        raise ValueError(f"{field}.replicas = 0: a pool without [autoscale] needs replicas >= 1")
    if scale is not None:
        low, high = scale.bounds
        if not low <= replicas <= high:
            raise ValueError(
                f"{field}.replicas = {replicas}: the replicas at the start must lie within "
                f"{field}.autoscale min..max ({low}..{high})"
            )
        missing = [c.name for c in classes if c.slo_ttft_s is None]
        if scale.signal == "slo" and (missing or not classes):
            raise ValueError(
                f"{field}.autoscale.signal = 'slo' compares time to first token with each "
                f"class's slo_ttft_s; set it for {', '.join(missing) or 'the classes'}"
            )
    if dyn.reclaim is not None and pricing != "spot":
        raise ValueError(
            f"{field}.reclaim: only spot capacity is reclaimed; the pool's pricing is "
            f"'{pricing}' (set {field}.pricing = 'spot')"
        )


# ----------------------------------------------------------------------------- roles

COLOCATED, PREFILL, DECODE = "colocated", "prefill", "decode"
PoolRole = Literal["colocated", "prefill", "decode"]
# fields over time a prefill or decode pool leaves at their defaults: its replicas are fixed
_FIXED_DEFAULTS = {
    k: PoolDynamics.model_fields[k].get_default(call_default_factory=True)
    for k in ("spare", "cold_start", "autoscale", "failures", "reclaim")
}


class InterconnectConfig(Section):
    """The link that carries KV caches from prefill to decode replicas (docs/disaggregation.md).

    `link` picks the defaults: ``infiniband`` between nodes (the catalogue's 400 Gb/s NDR port
    per GPU) or ``nvlink`` inside a node (the accelerators' scale-up link, one direction);
    `bandwidth_gb_s` and `latency_s` replace them.
    """

    link: Literal["infiniband", "nvlink"] = "infiniband"
    bandwidth_gb_s: float | None = Field(
        default=None,
        gt=0,  # also refuses nan
        allow_inf_nan=True,
        description="per GPU, one direction, GB/s (inf: transfers take no time)",
    )
    latency_s: float | None = Field(default=None, ge=0, description="per transfer, seconds")

    @field_serializer("bandwidth_gb_s", when_used="json")
    def _finite_json(self, value: float | None) -> float | str | None:
        """An infinite bandwidth as the text 'inf' (JSON has no infinity; it reads back)."""
        return "inf" if value is not None and math.isinf(value) else value


def check_roles(
    fleet: FleetConfig, models: list[str], batcher: BatcherConfig, kv_dtype: str
) -> None:
    """Refuse what pool roles cannot mean (ValueError naming the field): a model is served by
    colocated pools only, or by prefill and decode pools only; those batch continuously, share
    a KV dtype and keep their replicas for the whole run; only they take an interconnect.

    `models`: each pool's model, inherited; `batcher` and `kv_dtype`: the ones pools inherit.
    """
    pools = fleet.pools
    split = [(i, p) for i, p in enumerate(pools) if p.role != COLOCATED]
    if not split:
        if fleet.interconnect is not None:
            raise ValueError(
                "fleet.interconnect: only a fleet with prefill and decode pools moves KV "
                "caches between replicas (fleet.pools.N.role); remove it"
            )
        return
    if fleet.background is not None:
        raise ValueError(
            f"fleet.background: prefill and decode replicas are not lent to background work "
            f"(fleet.pools.{split[0][0]} is a {split[0][1].role} pool); remove [fleet.background]"
        )
    for i, pool in split:
        serving = [j for j, m in enumerate(models) if m == models[i]]
        roles = {pools[j].role: j for j in serving}
        if COLOCATED in roles:
            raise ValueError(
                f"fleet.pools.{roles[COLOCATED]}.role = 'colocated': model '{models[i]}' is "
                f"also served by a {pool.role} pool (fleet.pools.{i}); a model is served by "
                f"colocated pools only, or by prefill and decode pools only"
            )
        other = DECODE if pool.role == PREFILL else PREFILL
        if other not in roles:
            raise ValueError(
                f"fleet.pools.{i}.role = '{pool.role}': no pool serves model '{models[i]}' "
                f"with role = '{other}'; a model is served by colocated pools only, or by "
                f"prefill and decode pools"
            )
        kind = (pool.batcher or batcher).kind
        if kind != "continuous":
            where = f"fleet.pools.{i}.batcher" if pool.batcher else "batcher"
            raise ValueError(
                f"{where}.kind = '{kind}': prefill and decode pools (fleet.pools.{i} "
                f"is a {pool.role} pool) need kind = 'continuous'"
            )
        dtypes = {pools[j].kv_dtype or kv_dtype: j for j in serving}
        if len(dtypes) > 1:
            raise ValueError(
                f"fleet.pools.{i}.kv_dtype: the prefill and decode pools of model "
                f"'{models[i]}' store the KV cache as {' and '.join(sorted(dtypes))}; a KV "
                f"cache moves between them as it is, so give them one kv_dtype"
            )
        fixed = [k for k, default in _FIXED_DEFAULTS.items() if getattr(pool, k) != default]
        if fixed:
            raise ValueError(
                f"fleet.pools.{i}.{fixed[0]}: a {pool.role} pool keeps its replicas for the "
                f"whole run (no spares, cold starts, autoscaling, failures or reclaims); "
                f"remove it, or serve model '{models[i]}' with colocated pools"
            )
