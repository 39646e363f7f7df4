"""Step-time noise: Markov-modulated lognormal multipliers, fitted to a live step log.

Live serving steps are not a function of their batch alone: on the shared H200 run
(docs/fidelity.md) decode steps of the same batch took 15, 60, 85 or 110 ms, in phases of tens
of steps, while its prefill steps varied as much but independently of the decode phases and of
each other. The model, per phase (iterations with prompt work, and pure decode iterations): a
hidden Markov chain with K states moves once per iteration of that phase on a replica; in state
k an iteration's predicted time is multiplied by ``exp(N(mu_k, sigma_k^2))``. The chain's
persistence gives the autocorrelation from step to step (a chain whose states do not persist is
a mixture of independent draws), its states the modes of the distribution. The means are scaled
so that the stationary mean multiplier is 1: the deterministic model (fitted to mean step times)
keeps its throughput.

:func:`fit_noise` estimates a chain (Baum-Welch) from the log residuals ``log(measured /
predicted)`` of one phase's iterations in order, adding states (up to :data:`MAX_STATES`) while
one more lowers the BIC. :class:`NoiseStream` draws a phase's multipliers on a replica from its
own child of the replica's ``perf`` random stream, in fixed blocks, so the sequence is the same
whether a replica asks for one iteration at a time or for a compressed stretch and hands back
what it did not run: step compression stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.perf import StepTimeModel, StepWork

MAX_STATES = 4  # more states than this split the ~1000 steps of a log into unreliable pieces
STEPS_PER_PARAMETER = 10  # a chain of K states (K (K + 1) parameters) needs this many steps each
MIN_SIGMA = 0.01  # floor of a state's log spread: keeps EM off zero-width states
EM_ITERATIONS = 300
EM_TOLERANCE = 1e-5  # stop when the log-likelihood per step improves by less
BLOCK = 256  # multipliers drawn per block of a NoiseStream


@dataclass(frozen=True)
class MarkovLognormal:
    """A K-state Markov-modulated lognormal multiplier (see the module docstring).

    log_means, log_sigmas: mean and standard deviation of the log multiplier in each state;
    transitions[i][j]: probability that the next iteration is in state j after one in state i.
    """

    log_means: tuple[float, ...]
    log_sigmas: tuple[float, ...]
    transitions: tuple[tuple[float, ...], ...]

    def problems(self) -> list[str]:
        """What makes these parameters invalid (empty when valid)."""
        k = len(self.log_means)
        out = []
        if k == 0 or len(self.log_sigmas) != k or len(self.transitions) != k:
            out.append(f"log_means, log_sigmas and transitions need one entry per state ({k})")
        elif any(len(row) != k for row in self.transitions):
            out.append(f"transitions must be a {k} x {k} table")
        elif any(p < 0 for row in self.transitions for p in row) or any(
            abs(sum(row) - 1.0) > 1e-6 for row in self.transitions
        ):
            out.append("each row of transitions must be probabilities summing to 1")
        if any(s < 0 or not math.isfinite(s) for s in self.log_sigmas):
            out.append("log_sigmas must be finite and >= 0")
        if any(not math.isfinite(m) for m in self.log_means):
            out.append("log_means must be finite")
        return out

    def stationary(self) -> np.ndarray:
        """The chain's long-run share of iterations in each state."""
        p = np.asarray(self.transitions, dtype=np.float64)
        values, vectors = np.linalg.eig(p.T)
        v = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
        return v / v.sum()

    def state_means(self) -> np.ndarray:
        """Mean multiplier in each state."""
        return np.exp(np.asarray(self.log_means) + np.asarray(self.log_sigmas) ** 2 / 2.0)

    def mean(self) -> float:
        """Long-run mean multiplier."""
        return float(self.stationary() @ self.state_means())

    def lag1_autocorrelation(self) -> float:
        """Correlation of the log multipliers of consecutive iterations (0 for no noise)."""
        share, mu = self.stationary(), np.asarray(self.log_means)
        sigma, trans = np.asarray(self.log_sigmas), np.asarray(self.transitions)
        mean = share @ mu
        variance = share @ (sigma**2 + mu**2) - mean**2
        covariance = (share * mu) @ trans @ mu - mean**2
        return float(covariance / variance) if variance > 0 else 0.0

    def dwell_iterations(self) -> np.ndarray:
        """Mean run length of each state, in iterations."""
        stay = np.diag(np.asarray(self.transitions))
        return 1.0 / np.maximum(1.0 - stay, 1e-12)


class NoiseStream:
    """A replica's multipliers in iteration order, drawn from `rng` in blocks of `BLOCK`.

    The first state is drawn from the stationary distribution. :meth:`take` hands out the next
    values; :meth:`give_back` returns the last ones taken, which the next :meth:`take` hands out
    again.
    """

    def __init__(self, params: MarkovLognormal, rng: np.random.Generator) -> None:
        self.rng = rng
        self.means = np.asarray(params.log_means, dtype=np.float64)
        self.sigmas = np.asarray(params.log_sigmas, dtype=np.float64)
        self.cumulative = [np.cumsum(row) for row in np.asarray(params.transitions)]
        self.state = int(np.searchsorted(np.cumsum(params.stationary()), rng.random()))
        self.state = min(self.state, len(self.means) - 1)
        self._values = np.empty(0)
        self._pos = 0

    def take(self, count: int) -> np.ndarray:
        """The next `count` multipliers."""
        while len(self._values) - self._pos < count:
            self._values = np.concatenate((self._values[self._pos :], self._block()))
            self._pos = 0
        out = self._values[self._pos : self._pos + count]
        self._pos += count
        return out

    def give_back(self, count: int) -> None:
        """The last `count` multipliers taken were not used: hand them out again."""
        self._pos -= count

    def _block(self) -> np.ndarray:
        u, z = self.rng.random(BLOCK), self.rng.standard_normal(BLOCK)
        states = np.empty(BLOCK, dtype=np.int64)
        state, last = self.state, len(self.means) - 1
        for i, ui in enumerate(u.tolist()):
            state = min(int(np.searchsorted(self.cumulative[state], ui, side="right")), last)
            states[i] = state
        self.state = state
        return np.exp(self.means[states] + self.sigmas[states] * z)


@dataclass(frozen=True)
class StepNoise:
    """The noise of iterations with prompt work (`prefill`) and of pure decode iterations."""

    prefill: MarkovLognormal
    decode: MarkovLognormal


NO_NOISE = MarkovLognormal((0.0,), (0.0,), ((1.0,),))  # a phase a log has too few steps of


class NoisyStepTime:
    """A step-time model whose every iteration is multiplied by the next noise of its phase."""

    def __init__(self, model: StepTimeModel, noise: StepNoise, rng: np.random.Generator) -> None:
        prefill_rng, decode_rng = rng.spawn(2)
        self.model = model
        self.prefill = NoiseStream(noise.prefill, prefill_rng)
        self.stream = NoiseStream(noise.decode, decode_rng)

    def step_s(self, work: StepWork) -> float:
        stream = self.prefill if work.prefill_seqs else self.stream
        return self.model.step_s(work) * float(stream.take(1)[0])

    def decode_stretch_s(
        self,
        num_seqs: int,
        context_sum: int,
        iterations: int,
        padded_seqs: int = 0,
        max_context: int = 0,
    ) -> Sequence[float]:
        durations = self.model.decode_stretch_s(
            num_seqs, context_sum, iterations, padded_seqs, max_context
        )
        factors = self.stream.take(iterations)
        if isinstance(durations, np.ndarray):
            return durations * factors
        return [d * f for d, f in zip(durations, factors.tolist(), strict=True)]

    def unuse(self, count: int) -> None:
        """The last `count` iterations of the last decode stretch did not run."""
        self.stream.give_back(count)
        self.model.unuse(count)


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class NoiseFit:
    """A fitted noise model and the evidence for its number of states."""

    params: MarkovLognormal
    log_likelihood: dict[int, float]  # by number of states
    bic: dict[int, float]
    measured_lag1: float  # lag-1 autocorrelation of the residuals fitted (nan: too few)


def fit_noise(log_ratios: np.ndarray) -> NoiseFit:
    """The Markov-modulated lognormal of lowest BIC for log(measured / predicted), in order.

    K = 1, 2, ... states are tried while one more state lowers the BIC and the log has
    :data:`STEPS_PER_PARAMETER` steps per parameter; with too few steps for even one state: no
    noise (:data:`NO_NOISE`).
    """
    x = np.asarray(log_ratios, dtype=np.float64)
    lag1 = float(np.corrcoef(x[:-1], x[1:])[0, 1]) if len(x) > 2 else math.nan
    fits, lls, bics = {}, {}, {}
    for k in range(1, MAX_STATES + 1):
        if len(x) < STEPS_PER_PARAMETER * k * (k + 1):
            break
        fits[k], lls[k] = _baum_welch(x, k)
        bics[k] = -2.0 * lls[k] + k * (k + 1) * math.log(len(x))
        if k > 1 and bics[k] >= bics[k - 1]:  # one more state no longer pays for itself
            break
    if not bics:
        return NoiseFit(NO_NOISE, {}, {}, lag1)
    best = min(bics, key=bics.__getitem__)
    return NoiseFit(_unit_mean(fits[best]), lls, bics, lag1)


def _unit_mean(p: MarkovLognormal) -> MarkovLognormal:
    shift = math.log(p.mean())
    return MarkovLognormal(tuple(m - shift for m in p.log_means), p.log_sigmas, p.transitions)


def _baum_welch(x: np.ndarray, k: int) -> tuple[MarkovLognormal, float]:
    """EM for a Gaussian hidden Markov model of `k` states; returns it and its log-likelihood."""
    mu = np.quantile(x, (np.arange(k) + 0.5) / k)
    sigma = np.full(k, max(x.std() / k, MIN_SIGMA))
    trans = np.full((k, k), 0.1 / max(k - 1, 1))
    np.fill_diagonal(trans, 0.9 if k > 1 else 1.0)
    start = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        like = _gauss(x, mu, sigma)
        alpha, scale = _forward(like, trans, start)
        beta = _backward(like, trans, scale)
        ll = float(np.log(scale).sum())
        gamma = alpha * beta
        gamma /= gamma.sum(axis=1, keepdims=True)
        ahead = like[1:] * beta[1:] / scale[1:, None]
        xi = (alpha[:-1, :, None] * trans[None] * ahead[:, None, :]).sum(axis=0)
        trans = xi / xi.sum(axis=1, keepdims=True)
        start = gamma[0]
        weight = gamma.sum(axis=0)
        mu = (gamma * x[:, None]).sum(axis=0) / weight
        sigma = np.sqrt((gamma * (x[:, None] - mu) ** 2).sum(axis=0) / weight)
        sigma = np.maximum(sigma, MIN_SIGMA)
        if ll - previous < EM_TOLERANCE * len(x):
            break
        previous = ll
    order = np.argsort(mu)
    params = MarkovLognormal(
        tuple(mu[order].tolist()),
        tuple(sigma[order].tolist()),
        tuple(tuple(row) for row in trans[np.ix_(order, order)].tolist()),
    )
    return params, ll


def _gauss(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = (x[:, None] - mu) / sigma
    return np.exp(-0.5 * z * z) / (sigma * math.sqrt(2.0 * math.pi)) + 1e-300


def _forward(like: np.ndarray, trans: np.ndarray, start: np.ndarray):
    n, k = like.shape
    alpha, scale = np.empty((n, k)), np.empty(n)
    a = start * like[0]
    for t in range(n):
        if t:
            a = (a @ trans) * like[t]
        scale[t] = a.sum()
        a = a / scale[t]
        alpha[t] = a
    return alpha, scale


def _backward(like: np.ndarray, trans: np.ndarray, scale: np.ndarray) -> np.ndarray:
    n, k = like.shape
    beta = np.ones((n, k))
    for t in range(n - 2, -1, -1):
        beta[t] = trans @ (like[t + 1] * beta[t + 1]) / scale[t + 1]
    return beta
