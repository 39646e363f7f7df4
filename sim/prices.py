"""GPU prices per hour: the sourced defaults table and the scenario's own price (USD).

A price is resolved once, at load time (``sim.resolve``), and stored with the run; analysis and
capacity planning read it from the resolved run, never from this table again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.scenario import EconomicsConfig

HOURS_PER_YEAR = 8760.0  # 365-day years, for amortising owned GPUs


@dataclass(frozen=True)
class GpuPrice:
    """The price of one GPU-hour (USD) and where it comes from."""

    usd_per_gpu_hour: float
    source: str


_CW = "sim/data/catalog/prices.csv: CoreWeave, "
_AWS_CB = "sim/data/catalog/prices.csv: AWS, p5.48xlarge (EC2 Capacity Blocks), valid to 2025-01-01"

# (catalogue gpu id, pricing mode) -> default price. Instance prices are divided by the GPUs of
# the instance; spot prices are those quoted in the notes of the same row.
GPU_PRICE_DEFAULTS: dict[tuple[str, str], GpuPrice] = {
    ("a100", "on_demand"): GpuPrice(2.70, _CW + "NVIDIA A100 (8x 80GB), on-demand, 2026-09-20"),
    ("a100", "spot"): GpuPrice(9.65 / 8, _CW + "NVIDIA A100 (8x 80GB), notes: spot $9.65/h / 8"),
    ("h100", "on_demand"): GpuPrice(6.155, _CW + "NVIDIA HGX H100, on-demand, 2026-09-20"),
    ("h100", "reserved"): GpuPrice(4.916, _AWS_CB + " (8x H100 $39.33/h)"),
    ("h100", "spot"): GpuPrice(19.71 / 8, _CW + "NVIDIA HGX H100, notes: spot $19.71/h / 8"),
    ("h200", "on_demand"): GpuPrice(6.305, _CW + "NVIDIA HGX H200, on-demand, 2026-09-20"),
    ("h200", "reserved"): GpuPrice(43.26 / 8, _AWS_CB + ", notes: p5e.48xlarge 8x H200 $43.26/h"),
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


def gpu_price(gpu: str, eco: EconomicsConfig) -> GpuPrice | None:
    """One GPU-hour of `gpu` under `eco`: owned (purchase amortised), given, or the default.

    None when a rented pricing mode gives no price and the defaults table has none.
    """
    source = eco.price_source or "scenario [economics]"
    if eco.pricing == "owned":
        assert eco.purchase_usd_per_gpu is not None and eco.amortization_years is not None
        hourly = eco.purchase_usd_per_gpu / (eco.amortization_years * HOURS_PER_YEAR)
        return GpuPrice(hourly, f"{source}: purchase amortised over {eco.amortization_years} y")
    if eco.gpu_usd_per_hour is not None:
        return GpuPrice(eco.gpu_usd_per_hour, source)
    return default_gpu_price(gpu, eco.pricing)
