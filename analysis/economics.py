"""Cost, revenue and margin of a run, from its traces and the scenario's prices (USD)."""

from __future__ import annotations

from analysis.rundata import RunData

SECONDS_PER_HOUR = 3600.0


def gpu_hours(data: RunData) -> float:
    """Provisioned GPU time: every GPU of every replica for the whole run, busy or not."""
    fleet = data.scenario.fleet
    return fleet.replicas * fleet.tp * data.simulated_s / SECONDS_PER_HOUR


def economics(data: RunData) -> dict[str, float | None]:
    """gpu_hours, cost_usd, revenue_usd, margin and cost per million output tokens.

    Billing covers the whole run: the cost of every provisioned GPU-hour and the revenue of
    every completed request (warm-up included), at the scenario's per-token prices.
    margin = (revenue - cost) / revenue; None where a number is undefined.
    """
    hours = gpu_hours(data)
    prices = data.scenario.economics
    if prices is None:
        return {
            "gpu_hours": hours,
            "cost_usd": None,
            "revenue_usd": None,
            "margin": None,
            "cost_per_million_output_tokens_usd": None,
        }
    done = data.requests[data.requests["status"] == "completed"]
    output_tokens = float(done["output_tokens"].sum())
    cost = hours * prices.gpu_usd_per_hour
    revenue = (
        float(done["prompt_tokens"].sum()) * prices.input_usd_per_million
        + output_tokens * prices.output_usd_per_million
    ) / 1e6
    return {
        "gpu_hours": hours,
        "cost_usd": cost,
        "revenue_usd": revenue,
        "margin": (revenue - cost) / revenue if revenue > 0 else None,
        "cost_per_million_output_tokens_usd": cost / output_tokens * 1e6 if output_tokens else None,
    }
