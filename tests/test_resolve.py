"""The resolve stage: every scenario error is raised there, and each registry matches its schema."""

from __future__ import annotations

import copy
import typing

import pytest

from sim.batching import BATCHERS
from sim.errors import UserError
from sim.perf import STEP_TIME_MODELS
from sim.resolve import resolve
from sim.router import ROUTERS
from sim.scenario import BatcherConfig, FleetConfig, PerfConfig
from sim.workload import ARRIVAL_PROCESSES, TRACE_ARRIVAL
from sim.workload_config import WorkloadConfig
from tests.conftest import BASE, scenario


def _literal(annotation) -> set[str]:
    """The values of a Literal[...] annotation."""
    return set(typing.get_args(annotation))


def _kinds(annotated) -> set[str]:
    """The ``kind`` tags of an Annotated[Union[...], discriminator] scenario section."""
    members = typing.get_args(typing.get_args(annotated)[0])
    return {tag for m in members for tag in _literal(m.model_fields["kind"].annotation)}


def test_every_registry_holds_exactly_the_names_the_schema_allows():
    assert set(ROUTERS) == _literal(FleetConfig.model_fields["router"].annotation)
    assert set(BATCHERS) == _kinds(BatcherConfig) == {"continuous", "static", "dynamic"}
    assert set(STEP_TIME_MODELS) == _kinds(PerfConfig) == {"roofline", "service_time", "replay"}
    arrivals = _literal(WorkloadConfig.model_fields["arrival"].annotation)
    assert set(ARRIVAL_PROCESSES) | {TRACE_ARRIVAL} == arrivals
    assert TRACE_ARRIVAL not in ARRIVAL_PROCESSES


def _unpriced(*overrides: str):
    """The base test scenario without a GPU price of its own."""
    base = copy.deepcopy(BASE)
    del base["economics"]["gpu_usd_per_hour"]
    return scenario(*overrides, base=base)


@pytest.mark.parametrize(
    ("made", "message"),
    [
        (
            lambda: scenario("perf.calibration=calibrations/h200.toml"),
            r"test: perf.calibration = 'calibrations/h200.toml': no such file",
        ),
        (
            lambda: scenario("perf.calibration=builtin:h200_llama-3-8"),
            r"perf.calibration = 'builtin:h200_llama-3-8': .* no shipped calibration",
        ),
        (
            lambda: scenario(
                'workload.classes.0.prompt_tokens={dist="empirical", trace="missing.csv"}'
            ),
            r"test: workload.classes.0.prompt_tokens.trace = 'missing.csv': .* no such trace",
        ),
        (
            lambda: scenario("model.name=llama-3-70b"),
            r"does not fit on fleet.tp = 1 x fleet.gpu = 'h100'",
        ),
        (
            lambda: scenario('workload.classes.0.prompt_tokens={dist="fixed", value=900000}'),
            r"prompt_tokens of at least 900000 tokens never fit the KV cache",
        ),
        (
            lambda: _unpriced("fleet.gpu=mi300x"),
            r"economics.gpu_usd_per_hour: no default price for gpu 'mi300x' with pricing",
        ),
    ],
    ids=["calibration file", "calibration name", "trace file", "weights", "prompts", "price"],
)
def test_scenario_errors_are_raised_when_resolving(made, message):
    s = made()  # a valid scenario: only resolving finds the problem
    with pytest.raises(UserError, match=message):
        resolve(s)


def test_a_scenario_resolves_to_one_pool_named_after_its_gpu():
    spec = resolve(scenario("fleet.replicas=3", "fleet.gpu=h200"))
    (pool,) = spec.pools
    assert (pool.name, pool.index, pool.first_replica) == ("h200", 0, 0)
    assert list(pool.replica_indices) == [0, 1, 2] and spec.num_replicas == 3
    assert pool.price.usd_per_gpu_hour == 4.0 and spec.router == "least_outstanding"
    assert pool.kv_capacity_blocks > 0 and pool.weight_bytes == 2 * pool.model_shape.total_params
