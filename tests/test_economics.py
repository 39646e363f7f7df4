"""Cost, revenue and margin: recomputed by hand on tiny traces, the measurement window, the split
of cost between input and output tokens, break-even prices, and their directions."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest

from analysis.economics import economics
from analysis.rundata import RunData
from analysis.summary import summarize
from sim.engine import run
from sim.errors import UserError
from sim.perf import Roofline
from sim.prices import GPU_PRICE_DEFAULTS
from sim.resolve import resolve
from sim.scenario import RooflineConfig, load_scenario, scenario_from_dict
from tests.conftest import BASE, SCENARIOS, scenario, simulate

STEP_COLUMNS = (  # the columns of steps.parquet but prefill_seqs, which hand_run derives
    "replica",
    "start_s",
    "end_s",
    "iterations",
    "prefill_tokens",
    "decode_seqs",
    "decode_context",
    "kv_blocks_used",
)


def hand_run(
    requests: list[dict], steps: list[tuple], simulated_s: float, *overrides: str
) -> RunData:
    """A RunData built from literal trace rows and the base test scenario with overrides (by
    default without warm-up and with arrivals for the whole run: one window of `simulated_s`)."""
    spec = resolve(scenario("sim.warmup_s=0", f"sim.duration_s={simulated_s}", *overrides))
    pool = dataclasses.replace(spec.pools[0], kv_capacity_blocks=1000)
    req = pd.DataFrame(requests)
    req.insert(0, "request_id", range(len(req)))
    step_table = pd.DataFrame(steps, columns=list(STEP_COLUMNS))
    step_table.insert(4, "prefill_seqs", (step_table["prefill_tokens"] > 0).astype(int))
    return RunData(
        requests=req,
        steps=step_table,
        spec=dataclasses.replace(spec, pools=(pool,)),
        run={"seed": 0, "simulated_s": simulated_s, "wall_s": 0.0, "events": 0},
    )


def request(arrival, scheduled, first_token, finish, prompt, output, replica=0, **extra) -> dict:
    """One completed request of class 'chat'."""
    return {
        "class": "chat",
        "arrival_s": arrival,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "replica": replica,
        "first_scheduled_s": scheduled,
        "first_token_s": first_token,
        "finish_s": finish,
        "preemptions": 0,
        "cached_prompt_tokens": 0,
        "status": "completed",
        **extra,
    }


# Two requests on one H100 replica over two hours: busy 0-3600 s and 4500-6300 s.
TWO_REQUESTS = [
    request(0.0, 0.0, 0.25, 3600.0, prompt=2_000_000, output=1_000_000),
    request(4400.0, 4500.0, 4500.5, 6300.0, prompt=5_000_000, output=3_000_000),  # TTFT 100.5 s
]
TWO_INTERVALS = [(0, 0.0, 3600.0, 1, 100, 2, 500, 40), (0, 4500.0, 6300.0, 1, 100, 1, 900, 60)]
PRICED = (
    "fleet.replicas=1",
    "economics.gpu_usd_per_hour=4.0",
    "economics.overhead_usd_per_gpu_hour=0.5",
    "economics.input_usd_per_million=0.2",
    "economics.output_usd_per_million=6.0",
    "economics.slo_refund_fraction=0.5",
    "economics.energy={usd_per_kwh = 0.10, idle_power_fraction = 0.1, "
    "busy_power_fraction = 0.8, pue = 1.5}",
    "workload.classes.0.slo_ttft_s=0.3",
)


def test_cost_and_revenue_of_two_requests_match_a_hand_calculation_to_the_cent():
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, *PRICED)
    eco = summarize(data)["economics"]
    # 1 replica x 1 GPU x 2 h; GPU 2 x $4.00, overhead 2 x $0.50
    # energy: 700 W x (0.8 x 5400 s busy + 0.1 x 1800 s idle) x PUE 1.5 = 4.725e6 J = 1.3125 kWh
    cost = 8.00 + 1.00 + 1.3125 * 0.10
    # request 0 meets its SLO: 2e6 x $0.2/M + 1e6 x $6/M = $6.40
    # request 1 misses TTFT 0.3 s: (5e6 x $0.2/M + 3e6 x $6/M) = $19.00, half refunded
    revenue = 6.40 + 19.00 * 0.5
    cents = pytest.approx
    assert eco["gpu_hours"] == 2.0
    assert eco["energy_kwh"] == cents(1.3125)
    assert eco["cost_usd"] == cents(cost, abs=0.005)
    assert eco["revenue_usd"] == cents(revenue, abs=0.005)
    assert eco["gross_revenue_usd"] == cents(25.40, abs=0.005)
    assert eco["slo_refund_usd"] == cents(9.50, abs=0.005)
    assert eco["slo_missed_requests"] == 1
    assert eco["margin"] == cents((revenue - cost) / revenue)
    assert eco["profit_usd_per_hour"] == cents((revenue - cost) / 2.0, abs=0.005)
    assert eco["revenue_per_gpu_hour_usd"] == cents(revenue / 2.0, abs=0.005)
    # every token price x (cost / revenue) makes revenue equal the cost
    assert eco["break_even_price_multiplier"] == cents(cost / revenue)
    # 11e6 tokens at list prices earn $25.40: break-even at cost / revenue of that, per million
    assert eco["break_even_usd_per_million_tokens"] == cents(cost / revenue * 25.40 / 11.0)
    assert eco["price_cut_headroom"] == cents(1.0 - cost / revenue)
    # the window is the whole run here: the totals agree
    assert eco["totals"]["cost_usd"] == cents(eco["cost_usd"])
    assert eco["totals"]["revenue_usd"] == cents(eco["revenue_usd"])


def test_cost_splits_between_input_and_output_by_the_step_time_models_prefill_and_decode_parts():
    # 0-3600 s: 100 prompt tokens beside 2 decodes; 4500-6300 s: 100 prompt tokens beside 1
    data = hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, *PRICED)
    eco = economics(data)
    pool = data.spec.pools[0]
    model = Roofline(pool.model_shape, pool.accelerator, 1, RooflineConfig())
    shares = []
    for decodes, context in ((2, 500), (1, 900)):
        prefill = model.layers * model.prefill_attention_s(100, 100 * 101 / 2, 0)
        decode = model.layers * model.decode_attention_s(decodes, context)
        shared = model.fixed_s(100 + decodes, 1 + decodes)
        prefill += shared * 100 / (100 + decodes)
        decode += shared * decodes / (100 + decodes)
        shares.append(prefill / (prefill + decode))
    prefill_s = 3600.0 * shares[0] + 1800.0 * shares[1]
    assert eco["input_cost_usd"] == pytest.approx(eco["cost_usd"] * prefill_s / 5400.0)
    assert eco["input_gpu_hours"] == pytest.approx(2.0 * prefill_s / 5400.0)


def test_input_and_output_cost_add_up_to_the_cost(base_run):
    priced = repriced(
        base_run,
        "economics.overhead_usd_per_gpu_hour=0.7",
        "economics.energy={usd_per_kwh = 0.1, idle_power_fraction = 0.1}",
    )
    eco = economics(priced)
    assert eco["input_cost_usd"] + eco["output_cost_usd"] == pytest.approx(eco["cost_usd"], 1e-12)
    assert eco["input_gpu_hours"] + eco["output_gpu_hours"] == pytest.approx(eco["gpu_hours"])
    chat = eco["classes"]["chat"]
    assert chat["cost_usd"] == pytest.approx(eco["cost_usd"], rel=1e-12)
    per_million = eco["cost_per_million_input_tokens_usd"] * eco["input_tokens"] / 1e6
    assert per_million == pytest.approx(eco["input_cost_usd"])
    requests = eco["cost_per_request_usd"]["mean"] * eco["requests_billed"]
    assert requests == pytest.approx(eco["cost_usd"])


def test_a_prefill_only_workload_puts_nearly_all_cost_on_input_tokens():
    eco = economics(simulate('workload.classes.0.output_tokens={dist = "fixed", value = 1}'))
    assert eco["output_tokens"] == eco["requests_billed"]  # the one token a prefill emits
    assert eco["input_cost_usd"] > 0.99 * eco["cost_usd"]


def test_every_token_price_times_the_break_even_multiplier_gives_zero_margin(base_run):
    prices = {
        "economics.input_usd_per_million": 0.2,
        "economics.output_usd_per_million": 0.6,
        "economics.cached_input_usd_per_million": 0.05,
        "economics.slo_refund_fraction": 0.5,
        "workload.classes.0.slo_ttft_s": 0.2,
        "workload.classes.0.output_usd_per_million": 0.9,
    }
    items = [f"{k}={v}" for k, v in prices.items()]
    multiplier = economics(repriced(base_run, *items))["break_even_price_multiplier"]
    scaled = [
        f"{k}={v * multiplier}" if "usd_per_million" in k else f"{k}={v}" for k, v in prices.items()
    ]
    assert economics(repriced(base_run, *scaled))["margin"] == pytest.approx(0.0, abs=1e-9)


def test_cutting_prices_by_the_headroom_keeps_the_target_margin(base_run):
    eco = economics(base_run, target_margin=0.3)
    cut = 1.0 - eco["price_cut_headroom"]
    again = repriced(
        base_run,
        f"economics.input_usd_per_million={0.2 * cut}",
        f"economics.output_usd_per_million={0.6 * cut}",
    )
    assert economics(again)["margin"] == pytest.approx(0.3, abs=1e-9)


def test_class_prices_override_the_defaults_and_cached_prefix_tokens_have_their_own_price():
    rows = [
        request(0.0, 0.0, 0.1, 10.0, prompt=3_000_000, output=1_000_000, cached_prompt_tokens=0),
        request(0.0, 0.0, 0.1, 10.0, prompt=3_000_000, output=1_000_000, cached_prompt_tokens=2e6),
    ]
    data = hand_run(
        rows,
        [(0, 0.0, 10.0, 1, 10, 2, 10, 1)],
        3600.0,
        "fleet.replicas=1",
        "workload.classes.0.input_usd_per_million=1.0",
        "workload.classes.0.output_usd_per_million=2.0",
        "economics.cached_input_usd_per_million=0.25",
    )
    eco = economics(data)
    # 3e6 x $1 + 1e6 x $2 = $5; then 1e6 x $1 + 2e6 x $0.25 + 1e6 x $2 = $3.5
    assert eco["revenue_usd"] == pytest.approx(8.5)
    assert eco["cached_input_tokens"] == 2_000_000
    assert eco["classes"]["chat"]["completed"] == 2


def test_requests_that_are_not_completed_earn_nothing():
    rows = [*TWO_REQUESTS, {**TWO_REQUESTS[0], "status": "rejected"}]
    full = economics(hand_run(rows, TWO_INTERVALS, 7200.0, *PRICED))
    base = economics(hand_run(TWO_REQUESTS, TWO_INTERVALS, 7200.0, *PRICED))
    assert full["revenue_usd"] == base["revenue_usd"]


# ----------------------------------------------------------------------------- directions


@pytest.fixture(scope="module")
def base_run() -> RunData:
    return simulate()


def repriced(data: RunData, *overrides: str) -> RunData:
    """The same traces under a scenario with other prices (economics needs no re-simulation)."""
    return dataclasses.replace(data, spec=resolve(scenario(*overrides)))


def test_a_higher_token_price_raises_the_margin(base_run):
    cheap = economics(repriced(base_run, "economics.output_usd_per_million=0.6"))
    dear = economics(repriced(base_run, "economics.output_usd_per_million=1.2"))
    assert dear["margin"] > cheap["margin"]
    assert dear["cost_usd"] == cheap["cost_usd"]


def test_more_idle_replicas_lower_the_margin():
    few = summarize(simulate("fleet.replicas=2", "workload.rate=2.0"))
    many = summarize(simulate("fleet.replicas=4", "workload.rate=2.0"))
    assert many["requests"]["completed"] == few["requests"]["completed"]
    low, high = many["utilization"], few["utilization"]
    assert low["capacity_utilization"] == pytest.approx(high["capacity_utilization"] / 2, 0.01)
    assert many["economics"]["margin"] < few["economics"]["margin"]


def _without_gpu_price(*overrides: str):
    base = copy.deepcopy(BASE)
    del base["economics"]["gpu_usd_per_hour"]
    return scenario_from_dict(base, "test", list(overrides))


def test_on_demand_pricing_takes_the_default_price_of_its_gpu(base_run):
    on_demand = dataclasses.replace(base_run, spec=resolve(_without_gpu_price()))
    a = economics(on_demand)
    assert a["gpu_usd_per_hour"] == GPU_PRICE_DEFAULTS[("h100", "on_demand")].usd_per_gpu_hour


def test_reserved_pricing_has_no_default_price_and_asks_for_one():
    """No current 1- or 3-year commitment price with a citable rate was found (the expired
    EC2 Capacity Blocks rate is gone from the defaults), so reserved GPUs need a given price."""
    assert not [key for key in GPU_PRICE_DEFAULTS if key[1] == "reserved"]
    with pytest.raises(UserError, match="pricing 'reserved'.*give economics.gpu_usd_per_hour"):
        resolve(_without_gpu_price("economics.pricing=reserved"))


def test_energy_and_overhead_add_to_the_cost(base_run):
    plain = economics(base_run)
    loaded = economics(
        repriced(
            base_run,
            "economics.overhead_usd_per_gpu_hour=1.0",
            "economics.energy={usd_per_kwh = 0.1, idle_power_fraction = 0.1}",
        )
    )
    assert loaded["cost_usd"] > plain["cost_usd"] + plain["gpu_hours"] * 1.0
    assert loaded["margin"] < plain["margin"]


# ----------------------------------------------------------------------------- the window


def test_warmup_and_drain_are_excluded_from_the_steady_state_and_included_in_totals():
    # arrivals for 100 s after a 10 s warm-up; the run drains until 150 s
    rows = [
        request(0.0, 0.0, 1.0, 8.0, prompt=1000, output=100),  # served in the warm-up
        request(20.0, 20.0, 21.0, 30.0, prompt=1000, output=100),  # inside the window
        request(90.0, 90.0, 91.0, 150.0, prompt=1000, output=100),  # finishes in the drain
    ]
    steps = [(0, 0.0, 8.0, 1, 1000, 0, 0, 10), (0, 20.0, 30.0, 1, 1000, 0, 0, 10)]
    steps += [(0, 90.0, 150.0, 1, 1000, 0, 0, 10)]
    priced = ("fleet.replicas=1", "sim.warmup_s=10", "sim.duration_s=100")
    summary = summarize(hand_run(rows, steps, 150.0, *priced))
    eco = summary["economics"]
    assert summary["window"] == {
        "start_s": 10.0,
        "end_s": 100.0,
        "duration_s": 90.0,
        "warmup_s": 10.0,
        "drain_s": 50.0,
    }
    assert eco["gpu_hours"] == pytest.approx(90.0 / 3600)  # one GPU at $4/h
    assert eco["cost_usd"] == pytest.approx(4.0 * 90.0 / 3600)
    assert eco["requests_billed"] == 1  # only the request completed in the window
    assert eco["revenue_usd"] == pytest.approx((1000 * 0.2 + 100 * 0.6) / 1e6)
    totals = eco["totals"]
    assert totals["gpu_hours"] == pytest.approx(150.0 / 3600)
    assert totals["revenue_usd"] == pytest.approx(3 * (1000 * 0.2 + 100 * 0.6) / 1e6)
    assert totals["warmup_cost_usd"] == pytest.approx(4.0 * 10.0 / 3600)
    assert totals["drain_cost_usd"] == pytest.approx(4.0 * 50.0 / 3600)
    assert summary["throughput"]["requests_per_s"] == pytest.approx(1 / 90.0)


@pytest.fixture(scope="module")
def margin_runs() -> dict[str, dict]:
    """The margin scenario at 30 req/s for its full 300 s, and shortened to 3000 requests."""
    path = next(p for p in SCENARIOS if p.stem == "chat_llama3-8b_margin")
    runs = {"full": [], "short": ["sim.num_requests=3000"]}
    return {
        name: summarize(RunData.from_result(run(load_scenario(path, items))))
        for name, items in runs.items()
    }


def test_a_run_shortened_with_num_requests_bills_the_same_gpu_hours_per_request(margin_runs):
    full, short = margin_runs["full"], margin_runs["short"]
    assert short["window"]["end_s"] < 0.4 * full["window"]["end_s"]  # arrivals stop at ~100 s
    per_request = {
        name: s["economics"]["gpu_hours"] / s["economics"]["requests_billed"]
        for name, s in margin_runs.items()
    }
    assert per_request["short"] == pytest.approx(per_request["full"], rel=0.05)
    assert short["economics"]["margin"] == pytest.approx(full["economics"]["margin"], abs=0.03)
    assert short["simulated_s"] < 0.5 * full["simulated_s"]  # nobody pays for 300 s


# ----------------------------------------------------------------------------- pricing modes


def test_owned_gpus_cost_their_purchase_price_spread_over_the_amortisation_years():
    s = _without_gpu_price(
        "economics.pricing=owned",
        "economics.purchase_usd_per_gpu=35040",
        "economics.amortization_years=4",
    )
    assert resolve(s).pools[0].price.usd_per_gpu_hour == pytest.approx(35040 / (4 * 8760))


def test_every_default_price_names_its_row_in_the_price_catalogue():
    for (gpu, mode), price in GPU_PRICE_DEFAULTS.items():
        assert price.usd_per_gpu_hour > 0, (gpu, mode)
        assert "sim/data/catalog/prices.csv" in price.source, (gpu, mode)


def test_spot_is_cheaper_than_on_demand_in_the_defaults():
    for gpu in ("a100", "h100", "h200", "b200"):
        spot = GPU_PRICE_DEFAULTS[(gpu, "spot")].usd_per_gpu_hour
        assert spot < GPU_PRICE_DEFAULTS[(gpu, "on_demand")].usd_per_gpu_hour


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("economics.pricing=owned",), "pricing = 'owned' needs amortization_years"),
        (("economics.amortization_years=3",), "apply to pricing = 'owned' only"),
        (("economics.energy={usd_per_kwh = 0.1}",), "economics.energy.idle_power_fraction"),
        (("economics.slo_refund_fraction=1.5",), "economics.slo_refund_fraction = 1.5"),
    ],
)
def test_bad_economics_sections_are_named_errors(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        scenario(*overrides)


def test_a_gpu_without_a_default_price_asks_for_one():
    s = _without_gpu_price("fleet.gpu=mi300x", "economics.pricing=reserved")
    with pytest.raises(UserError, match="give economics.gpu_usd_per_hour"):
        resolve(s)


def test_classes_share_the_cost_by_their_own_prefill_and_decode_work():
    long_answers = (
        'workload.classes=[{name = "short", prompt_tokens = {dist = "fixed", value = 500}, '
        'output_tokens = {dist = "fixed", value = 20}}, {name = "long", prompt_tokens = '
        '{dist = "fixed", value = 500}, output_tokens = {dist = "fixed", value = 400}}]'
    )
    eco = economics(simulate(long_answers))
    short, long = eco["classes"]["short"], eco["classes"]["long"]
    assert short["cost_usd"] + long["cost_usd"] == pytest.approx(eco["cost_usd"])
    # the same prompts cost the same per token; twenty times the output costs far more
    assert short["cost_per_million_input_tokens_usd"] == pytest.approx(
        long["cost_per_million_input_tokens_usd"], rel=0.1
    )
    assert long["cost_usd"] / long["completed"] > 5 * short["cost_usd"] / short["completed"]
