"""The `[economics]` table of a scenario: GPU prices (USD per GPU-hour), token prices (USD per
million tokens), energy and SLO refunds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.section import Section


class EnergyConfig(Section):
    """Electricity of the GPUs: board power (fractions of TDP) x PUE x price per kWh.

    No price default: electricity prices differ several-fold between sites. PUE defaults to 1.58,
    the industry average of the Uptime Institute Global Data Center Survey 2023 (Uptime
    Intelligence Update 221, 2023-11-23). Busy power defaults to the whole TDP, the board's rated
    ceiling, so the default is an upper bound; idle power has no citable default and must be given.
    """

    usd_per_kwh: float = Field(ge=0, description="electricity price, USD per kWh")
    idle_power_fraction: float = Field(ge=0, le=1, description="idle board power / TDP")
    busy_power_fraction: float = Field(default=1.0, ge=0, le=1, description="busy power / TDP")
    pue: float = Field(default=1.58, ge=1, description="facility power / IT power")
    source: str = Field(default="", description="where the energy figures come from")


PricingMode = Literal["on_demand", "reserved", "spot", "owned"]


class EconomicsConfig(Section):
    """What the GPUs cost and what customers pay (USD).

    GPU time is billed for every provisioned GPU-hour, busy or not. Rented GPUs (`on_demand`,
    `reserved`, `spot`) cost `gpu_usd_per_hour`, or the default of the fleet's GPU and pricing
    mode from the defaults table (docs/economics.md); `owned` GPUs cost their purchase price
    spread over `amortization_years`. Token prices here are the defaults of request classes
    that set none; `slo_refund_fraction` of a request's price is refunded when it misses an SLO
    of its class.
    """

    pricing: PricingMode = "on_demand"
    gpu_usd_per_hour: float | None = Field(
        default=None, ge=0, description="price of one GPU for one hour (rented modes)"
    )
    purchase_usd_per_gpu: float | None = Field(default=None, ge=0, description="owned: price paid")
    amortization_years: float | None = Field(default=None, gt=0, description="owned: write-off")
    overhead_usd_per_gpu_hour: float = Field(
        default=0.0, ge=0, description="networking, storage, staff: per provisioned GPU-hour"
    )
    energy: EnergyConfig | None = None
    input_usd_per_million: float = Field(ge=0, description="price of 1e6 prompt tokens")
    output_usd_per_million: float = Field(ge=0, description="price of 1e6 output tokens")
    cached_input_usd_per_million: float | None = Field(
        default=None, ge=0, description="price of 1e6 cached-prefix prompt tokens (default: input)"
    )
    slo_refund_fraction: float = Field(
        default=0.0, ge=0, le=1, description="share of a request's price refunded on an SLO miss"
    )
    price_source: str = Field(default="", description="where the prices come from, with date")

    @model_validator(mode="after")
    def _pricing_fields(self) -> EconomicsConfig:
        owned = {"purchase_usd_per_gpu", "amortization_years"}
        if self.pricing == "owned":
            missing = [f for f in sorted(owned) if getattr(self, f) is None]
            if missing:
                raise ValueError(f"pricing = 'owned' needs {', '.join(missing)}")
            if self.gpu_usd_per_hour is not None:
                raise ValueError(
                    "pricing = 'owned' derives the hourly price from purchase_usd_per_gpu and "
                    "amortization_years; remove gpu_usd_per_hour"
                )
        else:
            given = [f for f in sorted(owned) if getattr(self, f) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to pricing = 'owned' only (pricing is "
                    f"'{self.pricing}'); remove them or set pricing = 'owned'"
                )
        return self
