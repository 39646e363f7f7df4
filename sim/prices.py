"""GPU prices per hour: the sourced defaults table and the scenario's own price (USD).

A price is resolved once, at load time (``sim.resolve``), and stored with the run; analysis and
capacity planning read it from the resolved run, never from this table again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.economics_config import EconomicsConfig

HOURS_PER_YEAR = 8760.0  # 365-day years, for amortising owned GPUs


@dataclass(frozen=True)
class GpuPrice:
    """The price of one GPU-hour (USD) and where it comes from."""

    usd_per_gpu_hour: float
    source: str


_CW = "sim/data/catalog/prices.csv: CoreWeave, "

# (catalogue gpu id, pricing mode) -> default price. Instance prices are divided by the GPUs of
# the instance; spot prices are those quoted in the notes of the same row. No reserved price:
# none found for a current 1- or 3-year commitment with a citable rate (the AWS EC2 Capacity
# Blocks rate once used here expired on 2025-01-01 and is a short block, not a commitment), so
# `reserved` needs a given price (docs/economics.md).
GPU_PRICE_DEFAULTS: dict[tuple[str, str], GpuPrice] = {
    ("a100", "on_demand"): GpuPrice(2.70, _CW + "NVIDIA A100 (8x 80GB), on-demand, 2026-09-20"),
    ("a100", "spot"): GpuPrice(9.65 / 8, _CW + "NVIDIA A100 (8x 80GB), notes: spot $9.65/h / 8"),
    ("h100", "on_demand"): GpuPrice(6.155, _CW + "NVIDIA HGX H100, on-demand, 2026-09-20"),
    ("h100", "spot"): GpuPrice(19.71 / 8, _CW + "NVIDIA HGX H100, notes: spot $19.71/h / 8"),
    ("h200", "on_demand"): GpuPrice(6.305, _CW + "NVIDIA HGX H200, on-demand, 2026-09-20"),
    ("h200", "spot"): GpuPrice(20.93 / 8, _CW + "NVIDIA HGX H200, notes: spot $20.93/h / 8"),
    ("b200", "on_demand"): GpuPrice(8.60, _CW + "NVIDIA HGX B200, on-demand, 2026-09-20"),
    ("b200", "spot"): GpuPrice(34.11 / 8, _CW + "NVIDIA HGX B200, notes: spot $34.11/h / 8"),
}


def default_gpu_price(gpu: str, pricing: str) -> GpuPrice | None:
    """The defaults table's price of `gpu` under `pricing`, or None where it has none."""
    return GPU_PRICE_DEFAULTS.get((gpu, pricing))


def known_defaults() -> str:
    """The (gpu, pricing) pairs of the defaults table, as text for error messages."""
    return ", ".join(f"{g}/{m}" for g, m in GPU_PRICE_DEFAULTS)


def gpu_price(gpu: str, eco: EconomicsConfig, pricing: str | None = None) -> GpuPrice | None:
    """One GPU-hour of `gpu` under `pricing` (default: ``eco.pricing``): owned (purchase
    amortised), ``eco``'s given price (for ``eco``'s own pricing), or the default.

    None when a rented pricing mode gives no price and the defaults table has none.
    """
    pricing = pricing or eco.pricing
    source = eco.price_source or "scenario [economics]"
    if pricing == "owned":
        assert eco.purchase_usd_per_gpu is not None and eco.amortization_years is not None
        hourly = eco.purchase_usd_per_gpu / (eco.amortization_years * HOURS_PER_YEAR)
        return GpuPrice(hourly, f"{source}: purchase amortised over {eco.amortization_years} y")
    if eco.gpu_usd_per_hour is not None and pricing == eco.pricing:
        return GpuPrice(eco.gpu_usd_per_hour, source)
    return default_gpu_price(gpu, pricing)
