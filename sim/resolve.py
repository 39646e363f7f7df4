"""``resolve(scenario) -> RunSpec``: every reference of a scenario looked up, every error raised.

The one place that reads the catalogue, calibration files, trace files and the GPU price table
for a run. Whatever a scenario can get wrong beyond its schema is found here, before anything is
simulated, as a :class:`~sim.errors.UserError` naming the scenario, the field and what is
allowed: an unknown calibration or one that cannot be read, a calibration given together with
hand-set efficiencies, trace files that are missing or malformed, weights that do not fit the
GPUs, prompts that can never fit a replica's KV cache, a GPU price that cannot be resolved, an
NVLink between prefill and decode pools whose GPUs have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.calibration import Calibration, load_calibration, resolve_calibration
from sim.catalog import (
    Accelerator,
    ModelShape,
    builtin_accelerators,
    builtin_links,
    builtin_models,
)
from sim.errors import UserError
from sim.fleet_config import COLOCATED, InterconnectConfig, PoolDynamics
from sim.memory import (
    kv_bytes_per_token,
    kv_capacity_blocks,
    swap_s_per_block,
    usable_bytes,
    weight_bytes,
)
from sim.noise import StepNoise
from sim.perf import HOST_PARAMS, PerfParams, Roofline, RooflineSetup, StepWork
from sim.prices import GpuPrice, gpu_price, known_defaults
from sim.replay import replay_durations_s
from sim.runspec import Interconnect, PoolLifecycle, PoolSpec, RunSpec
from sim.scenario import (
    BatcherConfig,
    ReplayConfig,
    RooflineConfig,
    Scenario,
    ServiceTimeConfig,
)
from sim.traces import read_trace, resolve_trace
from sim.workload import TRACE_ARRIVAL, length_bounds, read_rate_curve
from sim.workload_config import EmpiricalLength

HAND_SET_PERF = ("compute_efficiency", "memory_efficiency", "overhead_s", *HOST_PARAMS)
# The reference request of a pool's token costs: the mean prompt and output of the Azure LLM
# inference trace 2023, conversation part (sim/data/traces/azure2023_conv.csv), whose decode
# attends the prompt and half the output on average.
REFERENCE_PROMPT_TOKENS = 1155
REFERENCE_OUTPUT_TOKENS = 211
REFERENCE_CONTEXT_TOKENS = REFERENCE_PROMPT_TOKENS + REFERENCE_OUTPUT_TOKENS // 2


def resolve(scenario: Scenario) -> RunSpec:
    """The run `scenario` describes, with everything looked up; UserError for any problem."""
    trace_files = _trace_files(scenario)
    pools = []
    for source in _pool_sources(scenario):
        pools.append(_pool(scenario, source, len(pools), sum(p.replicas for p in pools)))
    _check_prompts_fit(scenario, pools, trace_files)
    return RunSpec(
        scenario,
        tuple(pools),
        scenario.fleet.router,
        trace_files,
        tuple(scenario.class_models()),
        _interconnect(scenario, pools),
    )


@dataclass(frozen=True)
class _PoolSource:
    """One pool's settings as the scenario gives them, inherited where unset.

    field: where the pool is written (``fleet`` for the single-pool form, else
    ``fleet.pools.N``); perf_field: where its [perf] section is.
    """

    field: str
    name: str
    gpu: str
    tp: int
    replicas: int
    model: str
    weight_dtype: str
    kv_dtype: str
    batcher: BatcherConfig
    perf: RooflineConfig | ServiceTimeConfig | ReplayConfig
    perf_field: str
    gpu_usd_per_hour: float | None
    price_source: str | None
    dynamics: PoolDynamics
    role: str = COLOCATED

    @property
    def model_field(self) -> str:
        return "model.name" if self.field == "fleet" else f"{self.field}.model"


def _pool_sources(scenario: Scenario) -> list[_PoolSource]:
    """The pools of the scenario: its [[fleet.pools]], or the one pool of its [fleet] section
    (named after its GPU)."""
    fleet, model = scenario.fleet, scenario.model
    dtypes = (model.weight_dtype, model.kv_dtype) if model is not None else ("bf16", "bf16")
    if not fleet.pools:
        assert fleet.gpu is not None and model is not None  # schema-checked
        return [
            _PoolSource(
                field="fleet",
                name=fleet.gpu,
                gpu=fleet.gpu,
                tp=fleet.tp,
                replicas=fleet.replicas,
                model=model.name,
                weight_dtype=dtypes[0],
                kv_dtype=dtypes[1],
                batcher=scenario.batcher,
                perf=scenario.perf,
                perf_field="perf",
                gpu_usd_per_hour=None,
                price_source=None,
                dynamics=fleet,
            )
        ]
    sources = []
    for i, p in enumerate(fleet.pools):
        field = f"fleet.pools.{i}"
        sources.append(
            _PoolSource(
                field=field,
                name=p.name,
                gpu=p.gpu,
                tp=p.tp,
                replicas=p.replicas,
                model=p.model or (model.name if model is not None else ""),  # schema-checked
                weight_dtype=p.weight_dtype or dtypes[0],
                kv_dtype=p.kv_dtype or dtypes[1],
                batcher=p.batcher or scenario.batcher,
                perf=p.perf or scenario.perf,
                perf_field=f"{field}.perf" if p.perf is not None else "perf",
                gpu_usd_per_hour=p.gpu_usd_per_hour,
                price_source=p.price_source,
                role=p.role,
                dynamics=p,
            )
        )
    return sources


def _pool(scenario: Scenario, src: _PoolSource, index: int, first_replica: int) -> PoolSpec:
    """One resolved pool; UserError when its weights do not fit its GPUs."""
    accelerator = _accelerator(scenario, src.gpu)
    shape = _model_shape(scenario, src.model)
    _check_tensor_parallel(scenario, src, accelerator, shape)
    batcher = src.batcher
    usable = usable_bytes(accelerator, src.tp, batcher.gpu_memory_utilization)
    weights = weight_bytes(shape, src.weight_dtype)
    per_token = kv_bytes_per_token(shape, src.kv_dtype, src.tp)
    capacity = kv_capacity_blocks(usable - weights, batcher.block_size, per_token)
    if capacity < 1:
        raise UserError(
            f"{scenario.name}: {src.model_field} = '{src.model}' ({weights / 1e9:.1f} GB of "
            f"{src.weight_dtype} weights) does not fit on {src.field}.tp = {src.tp} x "
            f"{src.field}.gpu = '{src.gpu}' ({usable / 1e9:.1f} GB usable); raise "
            f"{src.field}.tp or use a smaller weight_dtype"
        )
    perf = _perf(scenario, src)
    prefill_s, decode_s = _token_costs(perf, shape, accelerator, src, capacity * batcher.block_size)
    return PoolSpec(
        name=src.name,
        index=index,
        gpu=src.gpu,
        accelerator=accelerator,
        tp=src.tp,
        replicas=src.replicas,
        first_replica=first_replica,
        model=src.model,
        model_shape=shape,
        weight_dtype=src.weight_dtype,
        kv_dtype=src.kv_dtype,
        batcher=batcher,
        perf=perf,
        kv_capacity_blocks=capacity,
        swap_s_per_block=swap_s_per_block(accelerator, src.tp, batcher.block_size, per_token),
        weight_bytes=weights,
        prefill_s_per_token=prefill_s,
        decode_s_per_token=decode_s,
        price=_price(scenario, src),
        role=src.role,
        lifecycle=_lifecycle(scenario, src, weights),
    )


def _token_costs(
    perf: RooflineSetup | ServiceTimeConfig | ReplayConfig,
    shape: ModelShape,
    accelerator: Accelerator,
    src: _PoolSource,
    kv_tokens: int,
) -> tuple[float, float]:
    """Predicted seconds per prompt token and per output token of one replica of a pool.

    Prefill: the reference prompt alone in one iteration. Decode: one iteration of the
    replica's full batch (its slots, as many as the KV cache holds at the reference context)
    per sequence in it. For service-time models the distribution's mean, for a replayed step
    log its mean step, is the time of either iteration.
    """
    slots = src.batcher.max_num_seqs if src.batcher.kind == "continuous" else src.batcher.max_batch
    batch = max(1, min(slots, kv_tokens // REFERENCE_CONTEXT_TOKENS))
    if isinstance(perf, ServiceTimeConfig):
        per_iteration = perf.mean_s * (batch if perf.scale_with_batch else 1)
        return perf.mean_s / REFERENCE_PROMPT_TOKENS, per_iteration / batch
    if isinstance(perf, ReplayConfig):
        step_s = float(replay_durations_s(perf.steps).mean())
        return step_s / REFERENCE_PROMPT_TOKENS, step_s / batch
    roofline = Roofline(
        shape,
        accelerator,
        src.tp,
        perf.params,
        src.weight_dtype,
        src.kv_dtype,
        decode_attention=perf.decode_attention,
    )
    prompt = StepWork()
    prompt.add_prefill(REFERENCE_PROMPT_TOKENS, 0, emits_logits=True)
    context = REFERENCE_CONTEXT_TOKENS
    decode_s = roofline.decode_stretch_s(batch, batch * context, 1, 0, context)[0]
    return roofline.step_s(prompt) / REFERENCE_PROMPT_TOKENS, float(decode_s) / batch


def _check_tensor_parallel(
    scenario: Scenario, src: _PoolSource, gpu: Accelerator, shape: ModelShape
) -> None:
    """A pool's tp must split its model's heads (vLLM's rule, ModelShape.
    tensor_parallel_problem) within one scale-up domain (the accelerator's gpus_per_node)."""
    node = gpu.gpus_per_node or src.tp  # the schema requires it of a scenario's own accelerator
    fits = [n for n in range(1, node + 1) if shape.tensor_parallel_problem(n) is None]
    allowed = f"allowed for {src.model} on {src.gpu}: {', '.join(map(str, fits))}"
    where = f"{scenario.name}: {src.field}.tp = {src.tp}"
    problem = shape.tensor_parallel_problem(src.tp)
    if problem is not None:
        raise UserError(f"{where}: {problem} of {src.model}; {allowed}")
    if src.tp > node:
        raise UserError(
            f"{where}: more GPUs than one {src.gpu} node has ({node} per NVLink domain, "
            f"gpus_per_node); tensor parallelism across nodes is not modelled; {allowed}"
        )


def _accelerator(scenario: Scenario, gpu: str) -> Accelerator:
    """A catalogue accelerator or the scenario's own ``[accelerators.NAME]`` (schema-checked)."""
    return {**builtin_accelerators(), **scenario.accelerators}[gpu]


def _model_shape(scenario: Scenario, name: str) -> ModelShape:
    """A catalogue model or the scenario's own ``[models.NAME]`` (schema-checked)."""
    return {**builtin_models(), **scenario.models}[name]


def _perf(scenario: Scenario, src: _PoolSource) -> RooflineSetup | ServiceTimeConfig | ReplayConfig:
    """The step-time model's parameters of a pool: a service-time distribution, a step log to
    replay (its path made absolute, the log checked), or the roofline's parameters from the
    [perf] section's efficiencies or from its calibration file, with its decode attention and
    noise. Errors name the section (``perf``, or ``fleet.pools.N.perf``)."""
    cfg, field = src.perf, src.perf_field
    if isinstance(cfg, ServiceTimeConfig):
        return cfg
    if isinstance(cfg, ReplayConfig):
        return _replay(scenario, src, cfg)
    if cfg.calibration is None:
        if cfg.noise:
            raise UserError(
                f"{scenario.name}: {field}.noise = true needs {field}.calibration (a calibration "
                f"fitted to a live step log, whose [noise] table it draws from)"
            )
        return RooflineSetup(PerfParams.from_config(cfg), cfg.decode_attention or "summed")
    where = f"{scenario.name}: {field}.calibration = '{cfg.calibration}'"
    try:
        path = resolve_calibration(cfg.calibration, scenario.base_dir)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if not path.is_file():
        raise UserError(f"{where}: no such file {path}")
    given = sorted(cfg.model_fields_set & set(HAND_SET_PERF))
    if given:
        raise UserError(
            f"{scenario.name}: {field}.{given[0]} cannot be combined with {field}.calibration "
            f"= '{cfg.calibration}' (the calibration sets every efficiency and overhead); "
            f"remove one of them"
        )
    try:
        cal = load_calibration(path)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return RooflineSetup(
        cal.params, _decode_attention(scenario, cfg, field, cal, path), _noise(cfg, cal, where)
    )


def _decode_attention(
    scenario: Scenario, cfg: RooflineConfig, field: str, cal: Calibration, path: Path
) -> str:
    """The section's decode attention, else its calibration's, else summed; UserError when
    the two disagree."""
    fitted = cal.decode_attention
    if cfg.decode_attention is not None and fitted not in (None, cfg.decode_attention):
        raise UserError(
            f"{scenario.name}: {field}.decode_attention = '{cfg.decode_attention}', but "
            f"{path.name} was fitted with decode_attention = '{fitted}'; remove "
            f"{field}.decode_attention or use a calibration fitted that way"
        )
    return cfg.decode_attention or fitted or "summed"


def _noise(cfg: RooflineConfig, cal: Calibration, where: str) -> StepNoise | None:
    """The calibration's step-time noise when ``perf.noise`` is on (None when off)."""
    if not cfg.noise:
        return None
    if cal.noise is None:
        raise UserError(
            f"{where}: perf.noise = true, but the calibration has no [noise] table (fit one "
            f"with `sim perf fit --steps STEPS.csv`)"
        )
    return cal.noise


def _replay(scenario: Scenario, src: _PoolSource, cfg: ReplayConfig) -> ReplayConfig:
    """The replay section with its step log's absolute path, after checking the log."""
    if src.replicas != 1:
        raise UserError(
            f"{scenario.name}: {src.perf_field}.kind = 'replay' replays one engine's steps; "
            f"{src.field}.replicas must be 1, not {src.replicas}"
        )
    path = scenario.resolve_path(cfg.steps).resolve()
    try:
        replay_durations_s(path)
    except UserError as exc:
        raise UserError(f"{scenario.name}: {src.perf_field}.steps = '{cfg.steps}': {exc}") from None
    return cfg.model_copy(update={"steps": str(path)})


def _pricing(scenario: Scenario, src: _PoolSource) -> str:
    """The pool's pricing mode: its own, else [economics]'s (on_demand without [economics])."""
    eco = scenario.economics
    return src.dynamics.pricing or (eco.pricing if eco is not None else "on_demand")


def _price(scenario: Scenario, src: _PoolSource) -> GpuPrice | None:
    """One GPU-hour of the pool's GPU: its own price, else the scenario's [economics] price (when
    the pool has [economics]'s pricing) or the defaults table's (None without [economics])."""
    eco = scenario.economics
    if eco is None:
        return None
    if src.gpu_usd_per_hour is not None:
        source = src.price_source or eco.price_source or f"scenario {src.field}"
        return GpuPrice(src.gpu_usd_per_hour, source)
    pricing = _pricing(scenario, src)
    price = gpu_price(src.gpu, eco, pricing)
    if price is None:
        where, give = "economics.gpu_usd_per_hour", "economics.gpu_usd_per_hour"
        if src.field != "fleet":
            give += f" or {src.field}.gpu_usd_per_hour"
        if pricing != eco.pricing:  # the pool's own pricing: only its own price will do
            where = f"{src.field}.pricing = '{pricing}'"
            give = "gpu_usd_per_hour" if src.field == "fleet" else f"{src.field}.gpu_usd_per_hour"
            give += " (economics.gpu_usd_per_hour is the price under its own pricing)"
        raise UserError(
            f"{scenario.name}: {where}: no default price for gpu '{src.gpu}' with pricing "
            f"'{pricing}' (defaults exist for {known_defaults()}); give {give}"
        )
    return price


def _lifecycle(scenario: Scenario, src: _PoolSource, weight_bytes: float) -> PoolLifecycle:
    """How the pool's replicas come and go: its pricing, spares, cold start (provisioning; then
    loading: the weights over the storage bandwidth, plus the engine's start), autoscaling,
    failures and spot reclaims."""
    dyn = src.dynamics
    cold = dyn.cold_start
    return PoolLifecycle(
        pricing=_pricing(scenario, src),
        spare=dyn.spare,
        provision_s=cold.provision_s,
        load_s=weight_bytes / (cold.storage_gb_per_s * 1e9) + cold.engine_start_s,
        autoscale=dyn.autoscale,
        failures=dyn.failures,
        reclaim=dyn.reclaim,
    )


def _interconnect(scenario: Scenario, pools: list[PoolSpec]) -> Interconnect | None:
    """The KV-cache link of a fleet with prefill and decode pools (None for other fleets): the
    scenario's bandwidth and latency where given, else the defaults of its kind of link.

    InfiniBand: the catalogue's port per GPU. NVLink: the scale-up link of the slowest GPU of
    the prefill and decode pools, one direction (half its bidirectional ``link_bw_gb_s``), and
    its ``link_latency_us``.
    """
    split = [p for p in pools if p.role != COLOCATED]
    if not split:
        return None
    cfg = scenario.fleet.interconnect or InterconnectConfig()
    if cfg.link == "nvlink":
        slowest = min(split, key=lambda p: p.accelerator.link_bw_gb_s)
        bandwidth = slowest.accelerator.link_bw_gb_s / 2
        latency = slowest.accelerator.link_latency_us / 1e6
        default = f"NVLink of {slowest.gpu}: link_bw_gb_s / 2 and link_latency_us, catalogue"
        if bandwidth == 0 and cfg.bandwidth_gb_s is None:
            raise UserError(
                f"{scenario.name}: fleet.interconnect.link = 'nvlink': gpu '{slowest.gpu}' has "
                f"no scale-up link (link_bw_gb_s = 0); give fleet.interconnect.bandwidth_gb_s"
            )
    else:
        ib = builtin_links()["infiniband"]
        bandwidth, latency = ib.bandwidth_gb_s, ib.latency_us / 1e6
        default = f"{ib.name}: {ib.source}"
    given = [f for f in ("bandwidth_gb_s", "latency_s") if getattr(cfg, f) is not None]
    source = default if not given else f"scenario fleet.interconnect.{', '.join(given)}"
    if len(given) == 1:
        source += f"; otherwise {default}"
    return Interconnect(
        cfg.link,
        bandwidth if cfg.bandwidth_gb_s is None else cfg.bandwidth_gb_s,
        latency if cfg.latency_s is None else cfg.latency_s,
        source,
    )


def _trace_files(scenario: Scenario) -> dict[str, str]:
    """The absolute file of every trace the scenario names, each read once to check it."""
    wl = scenario.workload
    named: dict[str, tuple[str, str | None]] = {}  # trace -> (field, format)
    if wl.arrival == TRACE_ARRIVAL:
        named[wl.trace or ""] = ("workload.trace", wl.trace_format)
    if wl.rate_curve is not None:
        path = scenario.resolve_path(wl.rate_curve).resolve()
        try:
            read_rate_curve(path)
        except UserError as exc:
            raise UserError(
                f"{scenario.name}: workload.rate_curve = '{wl.rate_curve}': {exc}"
            ) from None
    for i, cls in enumerate(wl.classes):
        for column in ("prompt_tokens", "output_tokens"):
            dist = getattr(cls, column)
            if isinstance(dist, EmpiricalLength):
                named.setdefault(dist.trace, (f"workload.classes.{i}.{column}.trace", None))
    files = {}
    for trace, (field, fmt) in named.items():
        try:
            path = resolve_trace(trace, Path(scenario.base_dir)).resolve()
            read_trace(path, fmt)
        except UserError as exc:
            raise UserError(f"{scenario.name}: {field} = '{trace}': {exc}") from None
        files[trace] = str(path)
    if wl.rate_curve is not None:
        files[wl.rate_curve] = str(scenario.resolve_path(wl.rate_curve).resolve())
    return files


def _check_prompts_fit(
    scenario: Scenario, pools: list[PoolSpec], trace_files: dict[str, str]
) -> None:
    """Refuse a class whose every prompt is longer than the whole KV cache of a replica of
    every pool that serves its model."""
    for cls in scenario.workload.classes:
        if cls.prompt_tokens is None:
            continue
        model = cls.model or pools[0].model
        serving = [p for p in pools if p.model == model]
        roomiest = max(serving, key=lambda p: p.kv_capacity_blocks * p.batcher.block_size)
        tokens = roomiest.kv_capacity_blocks * roomiest.batcher.block_size
        shortest, _ = length_bounds(cls.prompt_tokens, trace_files, "prompt")
        if shortest > tokens:
            where = "fleet" if not scenario.fleet.pools else f"fleet.pools.{roomiest.index}"
            raise UserError(
                f"{scenario.name}: workload.classes '{cls.name}': prompt_tokens of at least "
                f"{shortest} tokens never fit the KV cache of a replica ({tokens} tokens on "
                f"{where}.tp = {roomiest.tp} x '{roomiest.gpu}'); shorten the prompts or add "
                f"memory (tp, gpu, gpu_memory_utilization)"
            )
