"""Which GPU time went to prompt work (input tokens) and which to decoding (output tokens).

Each interval of ``steps.parquet`` is split by the run's own step-time model. Roofline: an
interval without prompt tokens is all decode and one without decoding sequences all prefill; a
mixed iteration of ``p`` prompt tokens in ``s`` prompts and ``d`` decoding sequences gives
prefill its prefill attention plus ``p / (p + d)`` of the kernels every token passes through
(GEMMs, element-wise kernels, LM head, all-reduces, overheads) and decode its attention plus the
other ``d / (p + d)``; the recorded duration (host overhead and swaps included) is split in that
ratio. The trace does not record the prompts' own lengths or cached context, so the prefill
attention of an interval is that of ``s`` equal prompts with no cached prefix. Step-time noise
multiplies a whole iteration, so it leaves the split alone. ``service_time`` and ``replay``: an
iteration's duration is the same whatever it holds, so each sequence gets an equal share.

Per request, the prefill time of an interval goes to its prompts by their computed tokens and
the decode time to its decoding sequences equally: a request's decode seconds are the integral,
over its decode span on its replica, of each interval's decode seconds per decoding sequence per
second; its prefill seconds are its computed prompt tokens times the mean prefill seconds per
prompt token of the intervals in its prefill span.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.disaggregation import first_replica
from analysis.rundata import RunData
from sim.noise import NoisyStepTime
from sim.perf import Roofline, make_step_time_model


def prefill_fraction(data: RunData) -> np.ndarray:
    """Per row of the steps trace: the share of its duration spent on prompt work (0..1), by
    the step-time model of its replica's pool."""
    s = data.steps
    p = s["prefill_tokens"].to_numpy(np.float64)
    seqs = s["prefill_seqs"].to_numpy(np.float64)
    d = s["decode_seqs"].to_numpy(np.float64)
    share = np.where(p > 0, 1.0, 0.0)
    replica = s["replica"].to_numpy()
    for pool in data.spec.pools:
        mixed = (p > 0) & (d > 0) & np.isin(replica, data.pool_replicas(pool))
        if not mixed.any():
            continue
        model = make_step_time_model(pool, np.random.default_rng(0))
        model = model.model if isinstance(model, NoisyStepTime) else model  # noise: mean 1
        if not isinstance(model, Roofline):  # service_time, replay: alike for every sequence
            share[mixed] = seqs[mixed] / (seqs[mixed] + d[mixed])
            continue
        context = s["decode_context"].to_numpy(np.float64)
        if model.padded_attention:  # attention over the batch padded to its longest sequence
            context = d * s["decode_max_context"].to_numpy(np.float64)
        share[mixed] = _roofline_share(model, p[mixed], seqs[mixed], d[mixed], context[mixed])
    return share


def _roofline_share(
    model: Roofline, p: np.ndarray, seqs: np.ndarray, d: np.ndarray, context: np.ndarray
) -> np.ndarray:
    """Prefill's share of mixed iterations, from the roofline's own parts (arrays)."""
    per_prompt = p / seqs
    pairs = seqs * per_prompt * (per_prompt + 1.0) / 2.0
    tokens = p + d
    shared = model.fixed_s(tokens, seqs + d)
    prefill = model.layers * model.prefill_attention_s(p, pairs, 0.0) + shared * p / tokens
    decode = model.layers * model.decode_attention_s(d, context) + shared * d / tokens
    return prefill / (prefill + decode)


def step_split(data: RunData) -> pd.DataFrame:
    """The steps trace with `prefill_s` and `decode_s`: its duration split (seconds)."""
    s = data.steps
    duration = (s["end_s"] - s["start_s"]).to_numpy()
    prefill = duration * prefill_fraction(data)
    return s.assign(prefill_s=prefill, decode_s=duration - prefill)


def request_gpu_s(data: RunData, split: pd.DataFrame) -> pd.DataFrame:
    """Per request (index of the requests trace): `prefill_s` and `decode_s` attributed to it
    (replica-seconds; see the module docstring). Sums over all requests match the intervals'
    totals up to preemption and chunking; callers scale them to the totals they bill.

    A disaggregated request prefills on its prefill replica and decodes on `replica` from the
    first iteration after its KV transfer ended (its prefill replica holds it meanwhile without
    decoding it)."""
    req = data.requests
    end = data.simulated_s
    out = pd.DataFrame({"prefill_s": 0.0, "decode_s": 0.0}, index=req.index)
    routed = req[req["first_scheduled_s"].notna() & (req["replica"] >= 0)]
    prefilled_on = first_replica(routed)
    first_token = routed["first_token_s"].fillna(end)
    transferred = routed.get("kv_transfer_end_s", pd.Series(np.nan, index=routed.index))
    computed = routed["prompt_tokens"] - routed["cached_prompt_tokens"]
    for replica, mine in split.groupby("replica", sort=True):
        mine = mine.sort_values("start_s", kind="stable")
        start, stop = mine["start_s"].to_numpy(), mine["end_s"].to_numpy()
        length = stop - start
        p = mine["prefill_tokens"].to_numpy(np.float64)
        d = mine["decode_seqs"].to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_token = np.where(p > 0, mine["prefill_s"].to_numpy() / (p * length), 0.0)
            per_seq = np.where(d > 0, mine["decode_s"].to_numpy() / (d * length), 0.0)
            counted = np.where(p > 0, 1.0 / length, 0.0)
        pre = (prefilled_on == replica).to_numpy()
        if pre.any():
            scheduled = routed["first_scheduled_s"].to_numpy()[pre]
            token_s = first_token.to_numpy()[pre]
            prefill_rate = _integral(start, stop, per_token, scheduled, token_s)
            intervals = np.maximum(_integral(start, stop, counted, scheduled, token_s), 1.0)
            tokens = computed.to_numpy(np.float64)[pre]
            out.loc[routed.index[pre], "prefill_s"] = tokens * prefill_rate / intervals
        dec = (routed["replica"] == replica).to_numpy()
        if dec.any():
            finish = routed["finish_s"].fillna(end).to_numpy()[dec]
            begin = _decoding_from(start, first_token.to_numpy()[dec], transferred.to_numpy()[dec])
            begin = np.minimum(begin, finish)
            out.loc[routed.index[dec], "decode_s"] = _integral(start, stop, per_seq, begin, finish)
    return out


def _decoding_from(start: np.ndarray, first_token: np.ndarray, transferred: np.ndarray):
    """When each request starts decoding on a replica whose intervals start at `start`: at its
    first token, or, when its KV cache came by transfer (`transferred`: the end, NaN if none),
    at the first interval that starts after it arrived (infinity if none)."""
    after = np.searchsorted(start, transferred, side="left")
    starts = np.append(start, np.inf)[np.where(np.isnan(transferred), len(start), after)]
    return np.where(np.isnan(transferred), first_token, starts)


def _integral(
    start: np.ndarray, stop: np.ndarray, rate: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Integral from a to b of a rate that is `rate[j]` on the disjoint, ordered intervals
    [start[j], stop[j]) and 0 between them."""
    points = np.column_stack([start, stop]).ravel()
    area = np.cumsum(np.column_stack([np.zeros_like(rate), rate * (stop - start)]).ravel())
    return np.interp(b, points, area) - np.interp(a, points, area)
