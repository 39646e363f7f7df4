"""Calibrate host time and step-time noise from a live step log (``sim perf fit --steps``).

A live step is the GPU's work plus the engine's host time. The GPU part comes from a profile
calibration (the efficiencies of the GPU, which carry over to other shapes); what the live log
adds is the host time per step, per sequence and per prompt, by phase
(:class:`~sim.perf.PerfParams`), and the noise around it (:mod:`sim.noise`).

The host terms enter linearly, so they are fitted by non-negative least squares of the step
durations in seconds: the squared error of the durations themselves, not of their logarithm and
not of medians. Least squares predicts conditional *means*, and a mean step time is what sets
an engine's throughput and queues; live steps are bimodal (slow phases clustered in time), where
a median or a log-space fit lands on the common mode and runs the simulated engine faster than
the real one whenever the slow mode is the minority, and slower when it is the majority. The
spread around the mean is the noise model's job. The residuals ``log(measured / predicted)`` of
the log's iterations, in order, one series per phase (iterations with prompt work, and pure
decode iterations), are what :func:`sim.noise.fit_noise` fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.calibration import Calibration
from sim.catalog import Accelerator, ModelShape
from sim.errors import UserError
from sim.noise import NoiseFit, StepNoise, fit_noise
from sim.perf import HOST_PARAMS, PerfParams, Roofline
from sim.step_log import StepLog


@dataclass(frozen=True)
class LiveFit:
    """A calibration fitted to a step log, with its per-row GPU and predicted seconds."""

    calibration: Calibration
    gpu_s: np.ndarray
    predicted_s: np.ndarray
    noise: dict[str, NoiseFit] | None  # by phase
    unfitted: tuple[str, ...]  # host terms the log has no steps for (left at 0)


def gpu_seconds(log: StepLog, roof: Roofline) -> np.ndarray:
    """Seconds of each row's iterations by `roof` (give it no host terms for the GPU part)."""
    out = np.empty(len(log))
    for i in range(len(log)):
        work, k = log.work(i), int(log.iterations[i])
        if k == 1:
            out[i] = roof.step_s(work)
        else:  # a compressed stretch of decode iterations
            stretch = roof.decode_stretch_s(
                work.decode_seqs, work.decode_context, k, 0, work.decode_max_context
            )
            out[i] = float(np.sum(stretch))
    return out


def host_features(log: StepLog) -> np.ndarray:
    """Per row, what each host term of HOST_PARAMS is multiplied by."""
    k = log.iterations.astype(np.float64)
    prefill = log.prefill_seqs > 0
    seqs = log.prefill_seqs + log.decode_seqs
    return np.column_stack([k * prefill, k * ~prefill, k * seqs, k * log.prefill_seqs])


def fit_live(
    log: StepLog,
    base: Calibration,
    model: ModelShape,
    gpu: Accelerator,
    tp: int,
    decode_attention: str,
) -> LiveFit:
    """Host terms (least squares on durations) and noise over `base`'s GPU parameters.

    The noise is fitted to the rows in order; the rows of several replicas (a simulator log)
    are taken one replica after another, as one series.
    """
    from scipy.optimize import lsq_linear  # imported here: `sim run` does not need scipy

    decoding = log.decode_seqs > 0
    if decode_attention == "padded" and (log.decode_max_context[decoding] == 0).any():
        raise UserError(
            f"{log.path}: padded decode attention needs each decode's longest context; this "
            f"log has none (a simulator log has it where its run padded: decode_max_context)"
        )

    gpu_params = replace(base.params, **dict.fromkeys(HOST_PARAMS, 0.0))
    roof = Roofline(model, gpu, tp, gpu_params, decode_attention=decode_attention)
    gpu_s = gpu_seconds(log, roof)
    x = host_features(log)
    present = np.abs(x).sum(axis=0) > 0
    scale = np.linalg.norm(x[:, present], axis=0)
    fitted = lsq_linear(
        x[:, present] / scale, log.duration_s - gpu_s, bounds=(0.0, np.inf), method="bvls"
    )
    host = np.zeros(len(HOST_PARAMS))
    host[present] = fitted.x / scale
    params: PerfParams = replace(gpu_params, **dict(zip(HOST_PARAMS, host.tolist(), strict=True)))
    predicted = gpu_s + x @ host
    noise = None
    if (log.iterations == 1).all():  # per-iteration residuals, in order
        residuals = np.log(np.maximum(log.duration_s, 1e-9) / predicted)
        phases = log.phase()
        noise = {name: fit_noise(residuals[phases == name]) for name in ("prefill", "decode")}
    calibration = Calibration(
        params,
        base.gpu,
        base.profile,
        base.rows,
        steps=log.path.name,
        decode_attention=decode_attention,
        noise=StepNoise(noise["prefill"].params, noise["decode"].params) if noise else None,
    )
    unfitted = tuple(n for n, p in zip(HOST_PARAMS, present, strict=True) if not p)
    return LiveFit(calibration, gpu_s, predicted, noise, unfitted)


def format_live_fit(log: StepLog, fit: LiveFit) -> str:
    """The fitted host terms, mean step times by phase and the noise model, as text."""
    p = fit.calibration.params
    lines = ["fitted host time (seconds)"]
    for name in HOST_PARAMS:
        note = "  (no such steps in the log: not fitted)" if name in fit.unfitted else ""
        lines.append(f"  {name:<22} {getattr(p, name):.4g}{note}")
    lines += ["mean step time by phase (least squares matches means)"]
    lines.append(f"  {'phase':<8} {'steps':>6} {'measured ms':>12} {'predicted ms':>13} "
                 f"{'GPU ms':>7} {'error %':>8}")  # fmt: skip
    phases = log.phase()
    for name in ("prefill", "decode", "all"):
        rows = phases == name if name != "all" else np.ones(len(log), dtype=bool)
        if not rows.any():
            continue
        iterations = log.iterations[rows].sum()
        measured = log.duration_s[rows].sum() / iterations * 1e3
        predicted = fit.predicted_s[rows].sum() / iterations * 1e3
        gpu = fit.gpu_s[rows].sum() / iterations * 1e3
        error = (predicted / measured - 1.0) * 100.0
        lines.append(
            f"  {name:<8} {iterations:>6} {measured:>12.2f} {predicted:>13.2f} {gpu:>7.2f} "
            f"{error:>8.1f}"
        )
    lines.append(_format_noise(fit.noise))
    return "\n".join(lines)


def _format_noise(noise: dict[str, NoiseFit] | None) -> str:
    if noise is None:
        return "noise: not fitted (the log has compressed rows; log one iteration per row)"
    lines = []
    for phase, fit in noise.items():
        lines.append(f"{phase} noise: Markov-modulated lognormal multiplier, states by BIC")
        if not fit.bic:
            lines.append("  too few steps: none")
            continue
        lines.append(f"  {'states':>6} {'log-likelihood':>15} {'BIC':>10}")
        for k in fit.bic:
            lines.append(f"  {k:>6} {fit.log_likelihood[k]:>15.1f} {fit.bic[k]:>10.1f}")
        q = fit.params
        share, means, dwell = q.stationary(), q.state_means(), q.dwell_iterations()
        lines.append(
            f"  lag-1 autocorrelation of the log residuals: measured {fit.measured_lag1:.2f}, "
            f"fitted chain {q.lag1_autocorrelation():.2f}"
        )
        lines.append(f"  {'state':>6} {'mean x':>7} {'log sd':>7} {'share':>6} {'dwell steps':>12}")
        for i in range(len(q.log_means)):
            lines.append(
                f"  {i:>6} {means[i]:>7.3f} {q.log_sigmas[i]:>7.3f} {share[i]:>6.2f} "
                f"{dwell[i]:>12.1f}"
            )
    return "\n".join(lines)
