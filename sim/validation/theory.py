"""Closed forms of the queues the validation cases build. Times in seconds, rates per second.

Every function takes the arrival rate `lam` (requests/s) and service parameters and returns a
mean waiting time (arrival to start of service), a waiting probability or a mean sojourn.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq


def pk_wait_s(lam: float, mean_s: float, scv: float) -> float:
    """Pollaczek-Khinchine mean wait of M/G/1 FCFS; `scv` = squared CV of the service time."""
    rho = lam * mean_s
    _check_stable(rho)
    second_moment = mean_s**2 * (1.0 + scv)
    return lam * second_moment / (2.0 * (1.0 - rho))


def erlang_c(c: int, lam: float, mean_s: float) -> float:
    """Erlang C: probability that an arrival to M/M/c (one central FCFS queue) must wait."""
    a = lam * mean_s
    _check_stable(a / c)
    term, total = 1.0, 1.0  # a^k / k!, summed for k < c
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c / (1.0 - a / c)  # a^c / c! / (1 - rho)
    return last / (total + last)


def mmc_wait_s(c: int, lam: float, mean_s: float) -> float:
    """Mean wait in M/M/c with a central FCFS queue: C(c, a) / (c mu - lam)."""
    return erlang_c(c, lam, mean_s) / (c / mean_s - lam)


def erlang_arrivals_sigma(k: int, lam: float, mean_s: float) -> float:
    """Root sigma in (0, 1) of E_k/M/1: sigma = (lam / (lam + mu (1 - sigma)))^k.

    E_k/M/1 is one server of `k` fed round-robin from a Poisson stream of rate `lam`: its
    inter-arrival times are Erlang(k, lam). sigma is the probability that an arrival waits.
    """
    mu = 1.0 / mean_s
    _check_stable(lam / k * mean_s)

    def gap(s: float) -> float:
        return (lam / (lam + mu * (1.0 - s))) ** k - s

    return brentq(gap, 1e-12, 1.0 - 1e-12, xtol=1e-15)


def erlang_arrivals_wait_s(k: int, lam: float, mean_s: float) -> float:
    """Mean wait at one exponential server fed every k-th arrival of a Poisson(lam) stream."""
    sigma = erlang_arrivals_sigma(k, lam, mean_s)
    return sigma * mean_s / (1.0 - sigma)


def ps_sojourn_s(lam: float, mean_s: float) -> float:
    """Mean sojourn of M/G/1 processor sharing, E[S] / (1 - rho), whatever the service law."""
    rho = lam * mean_s
    _check_stable(rho)
    return mean_s / (1.0 - rho)


def batched_infinite_server_wait_s(lam: float, iteration_s: float, tokens: int) -> float:
    """Mean wait in the continuous batcher as an M/D/inf queue: iterations of `iteration_s`.

    Every request needs exactly `tokens` iterations and no batch limit applies. A request that
    finds the replica idle starts at once; one that arrives during an iteration joins at its
    end. A busy period ends before the first iteration preceded by `tokens` iterations without
    arrivals, so its length in iterations is the number of Bernoulli trials (success: no arrival
    in an iteration, probability r = exp(-lam d)) up to the first run of `tokens` successes,
    with mean (1 - r^N) / ((1 - r) r^N). Arrivals in an iteration are uniform in it (their count
    alone decides whether the busy period goes on), so each waits d/2 on average; by renewal
    reward the mean wait is (lam E[B] d) (d / 2) / (1 + lam E[B] d).
    """
    d, n = iteration_s, tokens
    r = math.exp(-lam * d)
    busy_iterations = (1.0 - r**n) / ((1.0 - r) * r**n)
    arrivals_in_busy = lam * busy_iterations * d
    return arrivals_in_busy * (d / 2.0) / (1.0 + arrivals_in_busy)


def _check_stable(rho: float) -> None:
    if not 0.0 < rho < 1.0:
        raise ValueError(f"load per server must be in (0, 1), got {rho}")
