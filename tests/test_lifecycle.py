"""The fleet over time: failures and spot reclaims lose no request, and change nothing when off;
the number of replicas up follows the machine-repair distribution; compressed runs equal
step-by-step runs with failures on."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from analysis.fleet import state_intervals
from analysis.invariants import check_run, failures
from analysis.rundata import RunData
from sim.engine import run
from tests.conftest import scenario
from tests.test_golden_traces import assert_tables_identical
from tests.test_step_compression import TIME_COLUMNS

FAILURES = (
    "fleet.failures={mtbf_s=30, mttr_s=10}",
    "fleet.cold_start={provision_s=5, engine_start_s=3}",
)
RECLAIMS = (
    "fleet.pricing=spot",
    "economics.gpu_usd_per_hour=2.0",
    "fleet.reclaim={rate_per_hour=120, notice_s=4}",
)


def _checked(*overrides: str) -> RunData:
    data = RunData.from_result(run(scenario(*overrides)))
    assert not failures(check_run(data)), failures(check_run(data))
    return data


@pytest.mark.parametrize(
    "overrides",
    [
        FAILURES,
        RECLAIMS,
        (*FAILURES, *RECLAIMS),
        (*FAILURES, "fleet.spare=1"),
        (*FAILURES, "fleet.router=central_queue"),
        (*FAILURES, 'batcher={kind="static", max_batch=8}'),
        (*FAILURES, "batcher.preemption=swap", "batcher.gpu_memory_utilization=0.21"),
    ],
    ids=["failures", "reclaims", "both", "spare", "central_queue", "static", "swap"],
)
def test_failures_and_reclaims_lose_no_request_and_count_none_twice(overrides):
    data = _checked("fleet.replicas=3", "workload.rate=12", *overrides)
    req = data.requests
    assert req["request_id"].is_unique and len(req) == req["request_id"].max() + 1
    assert (req["status"] == "completed").all()  # a drained run: every request done, once
    assert req["retries"].sum() > 0  # replicas did fail or go, and requests started over
    causes = set(data.fleet["cause"])
    assert causes & {"failure", "reclaimed", "reclaim_notice"}


def test_a_restarted_request_keeps_the_times_of_the_attempt_that_completed():
    data = _checked("fleet.replicas=3", "workload.rate=12", *FAILURES)
    req = data.requests
    again = req[req["retries"] > 0]
    failed_at = data.fleet.loc[data.fleet["cause"] == "failure", "time_s"].to_numpy()
    # each restarted request was scheduled for its last attempt after some failure
    assert (again["first_scheduled_s"].to_numpy()[:, None] >= failed_at[None, :]).any(axis=1).all()


def test_a_run_with_failures_that_never_come_equals_the_fixed_fleet():
    fixed = run(scenario("fleet.replicas=3", "workload.rate=12"))
    never = run(
        scenario("fleet.replicas=3", "workload.rate=12", "fleet.failures={mtbf_s=1e15, mttr_s=10}")
    )
    assert_tables_identical(never.steps, fixed.steps, "steps")
    assert never.requests["retries"].to_numpy().sum() == 0
    assert_tables_identical(never.requests.drop_columns(["retries"]), fixed.requests, "requests")
    assert_tables_identical(never.fleet, fixed.fleet, "fleet")


def test_a_fixed_fleet_writes_one_fleet_row_per_replica_and_no_retries_column():
    result = run(scenario("fleet.replicas=3"))
    fleet = result.fleet.to_pandas()
    assert list(fleet.columns) == ["time_s", "pool", "replica", "from", "to", "cause"]
    assert fleet[["replica", "from", "to", "cause"]].to_dict("list") == {
        "replica": [0, 1, 2],
        "from": ["none"] * 3,
        "to": ["serving"] * 3,
        "cause": ["initial"] * 3,
    }
    assert (fleet["time_s"] == 0).all()
    assert "retries" not in result.requests.schema.names


@pytest.mark.parametrize("extra", [(), RECLAIMS, ('batcher={kind="dynamic", max_batch=8}',)])
def test_compressed_run_equals_step_by_step_run_with_failures_on(extra):
    overrides = ("fleet.replicas=3", "workload.rate=12", *FAILURES, *extra)
    fast = run(scenario(*overrides))
    slow = run(scenario(*overrides, "sim.step_compression=false"))
    a, b = fast.requests.to_pandas(), slow.requests.to_pandas()
    for column in ("status", "replica", "preemptions", "retries"):
        assert (a[column] == b[column]).all(), column
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(a[column], b[column], rtol=1e-9, atol=1e-9)
    assert_tables_identical(fast.fleet, slow.fleet, "fleet")
    fast_steps, slow_steps = fast.steps.to_pandas(), slow.steps.to_pandas()
    assert fast_steps["iterations"].sum() == slow_steps["iterations"].sum()
    assert fast.events < slow.events


def _up_fractions(seed: int, c: int, mtbf_s: float, mttr_s: float, horizon_s: float):
    """Fractions of [0, horizon) with k = 0..c replicas up (serving) in an M/M/c fleet."""
    result = run(
        scenario(
            "workload.rate=0.5",
            'workload.classes.0.prompt_tokens={dist="fixed", value=1}',
            'workload.classes.0.output_tokens={dist="fixed", value=1}',
            'perf={kind="service_time", distribution="exponential", mean_s=1.0}',
            "batcher.max_num_seqs=1",
            "fleet.router=central_queue",
            f"fleet.replicas={c}",
            f"fleet.failures={{mtbf_s={mtbf_s}, mttr_s={mttr_s}}}",
            "fleet.cold_start={provision_s=0, engine_start_s=0, storage_gb_per_s=1e12}",
            f"sim.duration_s={horizon_s}",
            "sim.warmup_s=0",
            "sim.drain=false",
        ),
        seed=seed,
    )
    data = RunData.from_result(result)
    iv = state_intervals(data)
    up = iv[iv["state"] == "serving"]
    times = np.concatenate([up["start_s"], up["end_s"]])
    steps = np.concatenate([np.ones(len(up)), -np.ones(len(up))])
    order = np.lexsort((steps, times))
    times, level = times[order], np.cumsum(steps[order])
    spans = np.diff(np.append(times, horizon_s))
    return np.array([spans[level == k].sum() for k in range(c + 1)]) / horizon_s


def test_replicas_up_follow_the_machine_repair_distribution():
    """c replicas fail and are repaired independently (exponential up and down times, repair
    in place, loading 0): the number up is binomial(c, MTBF / (MTBF + MTTR)). Each seed's
    time fractions are one observation; the mean over seeds must lie within 3.5 standard
    errors of the theory for every k."""
    c, mtbf_s, mttr_s, horizon_s = 3, 60.0, 30.0, 6000.0
    fractions = np.array([_up_fractions(seed, c, mtbf_s, mttr_s, horizon_s) for seed in range(12)])
    theory = stats.binom.pmf(range(c + 1), c, mtbf_s / (mtbf_s + mttr_s))
    mean = fractions.mean(axis=0)
    se = fractions.std(axis=0, ddof=1) / math.sqrt(len(fractions))
    assert (np.abs(mean - theory) <= 3.5 * se + 1e-3).all(), (mean, theory, se)
    assert (se < 0.02).all()  # the test has the power to see a wrong distribution


def test_fleet_trace_types_are_stable():
    fleet = run(scenario(*FAILURES)).fleet
    assert fleet.schema.field("time_s").type == pa.float64()
    assert fleet.schema.field("replica").type == pa.int32()
    for name in ("pool", "from", "to", "cause"):
        assert fleet.schema.field(name).type == pa.string()
