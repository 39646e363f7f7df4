"""``resolve(scenario) -> RunSpec``: every reference of a scenario looked up, every error raised.

The one place that reads the catalogue, calibration files, trace files and the GPU price table
for a run. Whatever a scenario can get wrong beyond its schema is found here, before anything is
simulated, as a :class:`~sim.errors.UserError` naming the scenario, the field and what is
allowed: an unknown calibration or one that cannot be read, a calibration given together with
hand-set efficiencies, trace files that are missing or malformed, weights that do not fit the
GPUs, prompts that can never fit a replica's KV cache, a GPU price that cannot be resolved.
"""

from __future__ import annotations

from pathlib import Path

from sim.calibration import Calibration, load_calibration, resolve_calibration
from sim.catalog import Accelerator, ModelShape, builtin_accelerators, builtin_models
from sim.errors import UserError
from sim.memory import (
    kv_bytes_per_token,
    kv_capacity_blocks,
    swap_s_per_block,
    usable_bytes,
    weight_bytes,
)
from sim.noise import StepNoise
from sim.perf import HOST_PARAMS, PerfParams, RooflineSetup
from sim.prices import GpuPrice, gpu_price, known_defaults
from sim.replay import replay_durations_s
from sim.runspec import PoolSpec, RunSpec
from sim.scenario import (
    EmpiricalLength,
    ReplayConfig,
    RooflineConfig,
    Scenario,
    ServiceTimeConfig,
)
from sim.traces import read_trace, resolve_trace
from sim.workload import TRACE_ARRIVAL, length_bounds

HAND_SET_PERF = ("compute_efficiency", "memory_efficiency", "overhead_s", *HOST_PARAMS)


def resolve(scenario: Scenario) -> RunSpec:
    """The run `scenario` describes, with everything looked up; UserError for any problem."""
    trace_files = _trace_files(scenario)
    pool = _fleet_pool(scenario)
    _check_prompts_fit(scenario, pool, trace_files)
    return RunSpec(scenario, (pool,), scenario.fleet.router, trace_files)


def _fleet_pool(scenario: Scenario) -> PoolSpec:
    """The single pool of the ``[fleet]`` section, named after its GPU."""
    fleet, model = scenario.fleet, scenario.model
    accelerator = _accelerator(scenario, fleet.gpu)
    shape = _model_shape(scenario, model.name)
    batcher = scenario.batcher
    usable = usable_bytes(accelerator, fleet.tp, batcher.gpu_memory_utilization)
    weights = weight_bytes(shape, model.weight_dtype)
    per_token = kv_bytes_per_token(shape, model.kv_dtype)
    capacity = kv_capacity_blocks(usable - weights, batcher.block_size, per_token)
    if capacity < 1:
        raise UserError(
            f"{scenario.name}: model.name = '{model.name}' ({weights / 1e9:.1f} GB of "
            f"{model.weight_dtype} weights) does not fit on fleet.tp = {fleet.tp} x fleet.gpu = "
            f"'{fleet.gpu}' ({usable / 1e9:.1f} GB usable); raise fleet.tp or use a smaller "
            f"weight_dtype"
        )
    return PoolSpec(
        name=fleet.gpu,
        index=0,
        gpu=fleet.gpu,
        accelerator=accelerator,
        tp=fleet.tp,
        replicas=fleet.replicas,
        first_replica=0,
        model=model.name,
        model_shape=shape,
        weight_dtype=model.weight_dtype,
        kv_dtype=model.kv_dtype,
        batcher=batcher,
        perf=_perf(scenario),
        kv_capacity_blocks=capacity,
        swap_s_per_block=swap_s_per_block(accelerator, fleet.tp, batcher.block_size, per_token),
        weight_bytes=weights,
        price=_price(scenario, fleet.gpu),
    )


def _accelerator(scenario: Scenario, gpu: str) -> Accelerator:
    """A catalogue accelerator or the scenario's own ``[accelerators.NAME]`` (schema-checked)."""
    return {**builtin_accelerators(), **scenario.accelerators}[gpu]


def _model_shape(scenario: Scenario, name: str) -> ModelShape:
    """A catalogue model or the scenario's own ``[models.NAME]`` (schema-checked)."""
    return {**builtin_models(), **scenario.models}[name]


def _perf(scenario: Scenario) -> RooflineSetup | ServiceTimeConfig | ReplayConfig:
    """The step-time model's parameters: a service-time distribution, a step log to replay (its
    path made absolute, the log checked), or the roofline's parameters from the ``[perf]``
    efficiencies or from its calibration file, with its decode attention and noise."""
    cfg = scenario.perf
    if isinstance(cfg, ServiceTimeConfig):
        return cfg
    if isinstance(cfg, ReplayConfig):
        return _replay(scenario, cfg)
    if cfg.calibration is None:
        if cfg.noise:
            raise UserError(
                f"{scenario.name}: perf.noise = true needs perf.calibration (a calibration "
                f"fitted to a live step log, whose [noise] table it draws from)"
            )
        return RooflineSetup(PerfParams.from_config(cfg), cfg.decode_attention or "summed")
    where = f"{scenario.name}: perf.calibration = '{cfg.calibration}'"
    try:
        path = resolve_calibration(cfg.calibration, scenario.base_dir)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if not path.is_file():
        raise UserError(f"{where}: no such file {path}")
    given = sorted(cfg.model_fields_set & set(HAND_SET_PERF))
    if given:
        raise UserError(
            f"{scenario.name}: perf.{given[0]} cannot be combined with perf.calibration "
            f"= '{cfg.calibration}' (the calibration sets every efficiency and overhead); "
            f"remove one of them"
        )
    try:
        cal = load_calibration(path)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return RooflineSetup(
        cal.params, _decode_attention(scenario, cfg, cal, path), _noise(cfg, cal, where)
    )


def _decode_attention(scenario: Scenario, cfg: RooflineConfig, cal: Calibration, path: Path) -> str:
    """The scenario's decode attention, else its calibration's, else summed; UserError when
    the two disagree."""
    fitted = cal.decode_attention
    if cfg.decode_attention is not None and fitted not in (None, cfg.decode_attention):
        raise UserError(
            f"{scenario.name}: perf.decode_attention = '{cfg.decode_attention}', but "
            f"{path.name} was fitted with decode_attention = '{fitted}'; remove "
            f"perf.decode_attention or use a calibration fitted that way"
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


def _replay(scenario: Scenario, cfg: ReplayConfig) -> ReplayConfig:
    """The replay section with its step log's absolute path, after checking the log."""
    if scenario.fleet.replicas != 1:
        raise UserError(
            f"{scenario.name}: perf.kind = 'replay' replays one engine's steps; fleet.replicas "
            f"must be 1, not {scenario.fleet.replicas}"
        )
    path = scenario.resolve_path(cfg.steps).resolve()
    try:
        replay_durations_s(path)
    except UserError as exc:
        raise UserError(f"{scenario.name}: perf.steps = '{cfg.steps}': {exc}") from None
    return cfg.model_copy(update={"steps": str(path)})


def _price(scenario: Scenario, gpu: str) -> GpuPrice | None:
    """One GPU-hour of `gpu` under the scenario's [economics] (None without one)."""
    eco = scenario.economics
    if eco is None:
        return None
    price = gpu_price(gpu, eco)
    if price is None:
        raise UserError(
            f"{scenario.name}: economics.gpu_usd_per_hour: no default price for gpu '{gpu}' "
            f"with pricing '{eco.pricing}' (defaults exist for {known_defaults()}); give "
            f"economics.gpu_usd_per_hour"
        )
    return price


def _trace_files(scenario: Scenario) -> dict[str, str]:
    """The absolute file of every trace the scenario names, each read once to check it."""
    wl = scenario.workload
    named: dict[str, tuple[str, str | None]] = {}  # trace -> (field, format)
    if wl.arrival == TRACE_ARRIVAL:
        named[wl.trace or ""] = ("workload.trace", wl.trace_format)
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
    return files


def _check_prompts_fit(scenario: Scenario, pool: PoolSpec, trace_files: dict[str, str]) -> None:
    """Refuse a class whose every prompt is longer than a replica's whole KV cache."""
    tokens = pool.kv_capacity_blocks * pool.batcher.block_size
    for cls in scenario.workload.classes:
        if cls.prompt_tokens is None:
            continue
        shortest, _ = length_bounds(cls.prompt_tokens, trace_files, "prompt")
        if shortest > tokens:
            raise UserError(
                f"{scenario.name}: workload.classes '{cls.name}': prompt_tokens of at least "
                f"{shortest} tokens never fit the KV cache of a replica ({tokens} tokens on "
                f"fleet.tp = {pool.tp} x '{pool.gpu}'); shorten the prompts or add memory "
                f"(tp, gpu, gpu_memory_utilization)"
            )
