"""Failure, repair and spot-reclaim times of replicas, from their own random streams.

Each replica draws from its own generators, keyed by its fleet-wide index under the run's
``failures`` and ``reclaims`` streams (``sim.engine.STREAMS``), so its times depend neither on
the order in which events happen nor on the other replicas: compressed and step-by-step runs
fail the same replicas at the same times, and a replica added to a pool shifts no other
replica's draws. Up times (to a failure) and repair times are exponential with the configured
means, or Weibull with the configured shape and the same means; the time to a reclaim is
exponential (a Poisson process per replica).
"""

from __future__ import annotations

import math

import numpy as np

from sim.fleet_config import FailureConfig, ReclaimConfig

SECONDS_PER_HOUR = 3600.0


def replica_rng(seed: np.random.SeedSequence, index: int) -> np.random.Generator:
    """The generator of replica `index` under the stream `seed` (its child with key `index`)."""
    child = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, index))
    return np.random.default_rng(child)


class Clocks:
    """When the replicas of a pool fail, are repaired and are reclaimed (seconds from now)."""

    def __init__(
        self,
        failures: FailureConfig | None,
        reclaim: ReclaimConfig | None,
        failure_seed: np.random.SeedSequence,
        reclaim_seed: np.random.SeedSequence,
    ) -> None:
        self.failures, self.reclaim = failures, reclaim
        self._seeds = {"failures": failure_seed, "reclaims": reclaim_seed}
        self._rngs: dict[tuple[str, int], np.random.Generator] = {}

    def _rng(self, stream: str, index: int) -> np.random.Generator:
        key = (stream, index)
        if key not in self._rngs:
            self._rngs[key] = replica_rng(self._seeds[stream], index)
        return self._rngs[key]

    def time_to_failure(self, index: int) -> float | None:
        """Up time of replica `index` until it fails (None: the pool does not fail)."""
        if self.failures is None:
            return None
        return self._draw(self._rng("failures", index), self.failures.mtbf_s)

    def time_to_repair(self, index: int) -> float:
        """Down time of replica `index` until it is repaired."""
        assert self.failures is not None
        return self._draw(self._rng("failures", index), self.failures.mttr_s)

    def _draw(self, rng: np.random.Generator, mean_s: float) -> float:
        """One exponential or Weibull time of mean `mean_s` (the failures' distribution)."""
        assert self.failures is not None
        shape = self.failures.shape
        if shape is None:
            return float(rng.exponential(mean_s))
        return float(mean_s / math.gamma(1.0 + 1.0 / shape) * rng.weibull(shape))

    def time_to_reclaim(self, index: int) -> float | None:
        """Up time of spot replica `index` until a reclaim notice (None: not reclaimed)."""
        if self.reclaim is None:
            return None
        rate_per_s = self.reclaim.rate_per_hour / SECONDS_PER_HOUR
        return float(self._rng("reclaims", index).exponential(1.0 / rate_per_s))
