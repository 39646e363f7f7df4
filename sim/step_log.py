"""Step logs: the iterations a serving engine ran, with their durations, read into arrays.

Two formats, told apart by their columns:

* a *live log* (CSV), one row per engine step as it ran, the columns of the shared H200 run
  (``steps_3.0rps.csv``): ``start_s, end_s, kind, batch, tokens, max_context, sum_context``
  (``kind`` prefill or decode; ``tokens``: prompt tokens of a prefill, one per sequence of a
  decode; ``max_context`` and ``sum_context``: the longest and the summed context in tokens,
  for a decode the tokens already cached, for a prefill the prompts);
* the simulator's own ``steps.parquet`` (or the same columns as CSV): ``start_s, end_s,
  iterations, prefill_seqs, prefill_tokens, decode_seqs, decode_context`` and optionally
  ``replica`` and ``decode_max_context``; an engine that mixes prefill and decode in one step
  (vLLM v1, SGLang) writes its log this way.

What each row becomes (:class:`StepLog`): the sequences and tokens of its iterations, as the
step-time model sees them (:class:`~sim.perf.StepWork`), and the time it occupied the engine.
For a live log that is from its start to the next step's start while sequences were still running
(the engine's bookkeeping between two steps, such as freeing a finished request's KV slot, is
host time the next step waits for), and its own ``end_s - start_s`` where the engine had nothing
left to run after it (the gap is then idle time). Sequences still running after a step are the
next decode's batch less the prompts prefilled in between (a request whose only output token came
from its prefill is counted as running: the rule assumes outputs of two tokens or more). For a
simulator log, ``end_s - start_s``.

Approximations where a log does not say: the prompts of a prefill of several sequences are the
longest (``max_context``) and equal shares of the rest (a simulator log: equal shares of
``prefill_tokens``, with no cached context); every prompt emits logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import UserError
from sim.perf import StepWork

LIVE_COLUMNS = ("start_s", "end_s", "kind", "batch", "tokens", "max_context", "sum_context")
SIM_COLUMNS = (
    "start_s",
    "end_s",
    "iterations",
    "prefill_seqs",
    "prefill_tokens",
    "decode_seqs",
    "decode_context",
)
KINDS = ("prefill", "decode")


@dataclass(frozen=True)
class StepLog:
    """The rows of a step log as arrays (counts in tokens, times in seconds).

    Per row: `iterations` identical iterations (1 in a live log) lasting `duration_s` in all;
    `prefill_seqs` prompts of `prefill_tokens` tokens with `prefill_attn_pairs` causal
    (query, key) pairs; `decode_seqs` sequences attending `decode_context` positions in the
    first iteration (KV + the new token), the longest `decode_max_context` (0 where unknown).
    `replica` groups the rows of one engine, in time order.
    """

    path: Path
    live: bool
    duration_s: np.ndarray
    iterations: np.ndarray
    prefill_seqs: np.ndarray
    prefill_tokens: np.ndarray
    prefill_attn_pairs: np.ndarray
    decode_seqs: np.ndarray
    decode_context: np.ndarray
    decode_max_context: np.ndarray
    replica: np.ndarray

    def __len__(self) -> int:
        return len(self.duration_s)

    def work(self, i: int) -> StepWork:
        """The first iteration of row `i`."""
        prompts = int(self.prefill_seqs[i])
        return StepWork(
            prefill_tokens=int(self.prefill_tokens[i]),
            prefill_attn_pairs=int(self.prefill_attn_pairs[i]),
            logit_tokens=prompts,
            prefill_seqs=prompts,
            decode_seqs=int(self.decode_seqs[i]),
            decode_context=int(self.decode_context[i]),
            decode_max_context=int(self.decode_max_context[i]),
        )

    def phase(self) -> np.ndarray:
        """'prefill' for rows with prompt work (alone or mixed), else 'decode'."""
        return np.where(self.prefill_seqs > 0, "prefill", "decode")


def read_step_log(path: str | Path) -> StepLog:
    """Read a live log or a simulator steps file; UserError naming the file, row and column."""
    path = Path(path)
    df = _read_table(path)
    if df.empty:
        raise UserError(f"{path}: no rows")
    if set(LIVE_COLUMNS) <= set(df.columns):
        return _live_log(path, df)
    if set(SIM_COLUMNS) <= set(df.columns):
        return _sim_log(path, df)
    raise UserError(
        f"{path}: not a step log; needs the columns {','.join(LIVE_COLUMNS)} (a live log) or "
        f"{','.join(SIM_COLUMNS)} (a simulator steps file)"
    )


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: no such step log")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV: {exc}") from None
    except OSError as exc:
        raise UserError(f"{path}: not a readable Parquet file: {exc}") from None


def _check(path: Path, df: pd.DataFrame, column: str, bad: np.ndarray, allowed: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: row {i + 2}, column {column} = {df[column].iloc[i]!r}: {allowed}")


def _numbers(path: Path, df: pd.DataFrame, columns, whole: bool) -> dict[str, np.ndarray]:
    out = {}
    for column in columns:
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if whole:
            bad |= values != np.round(values)
        what = "a whole number" if whole else "a time in seconds"
        _check(path, df, column, bad, f"must be {what} >= 0")
        out[column] = values.astype(np.int64) if whole else values
    return out


def _times(path: Path, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    t = _numbers(path, df, ("start_s", "end_s"), whole=False)
    _check(path, df, "end_s", t["end_s"] < t["start_s"], "must not be before start_s")
    return t["start_s"], t["end_s"]


def _live_log(path: Path, df: pd.DataFrame) -> StepLog:
    start, end = _times(path, df)
    _check(path, df, "start_s", np.diff(start, prepend=start[0]) < 0, "steps must be in order")
    kind = df["kind"].astype(str).to_numpy()
    _check(path, df, "kind", ~np.isin(kind, KINDS), f"allowed: {', '.join(KINDS)}")
    n = _numbers(path, df, ("batch", "tokens", "max_context", "sum_context"), whole=True)
    batch, tokens, longest = n["batch"], n["tokens"], n["max_context"]
    _check(path, df, "batch", batch < 1, "must be >= 1")
    prefill = kind == "prefill"
    _check(path, df, "max_context", prefill & (longest > tokens), "must not exceed tokens")
    zeros = np.zeros(len(df), dtype=np.int64)
    return StepLog(
        path=path,
        live=True,
        duration_s=_live_durations(start, end, prefill, batch),
        iterations=np.ones(len(df), dtype=np.int64),
        prefill_seqs=np.where(prefill, batch, 0),
        prefill_tokens=np.where(prefill, tokens, 0),
        prefill_attn_pairs=np.where(prefill, _pairs(tokens, batch, longest), 0),
        decode_seqs=np.where(prefill, 0, batch),
        decode_context=np.where(prefill, 0, n["sum_context"] + batch),
        decode_max_context=np.where(prefill, 0, longest + 1),
        replica=zeros,
    )


def _live_durations(
    start: np.ndarray, end: np.ndarray, prefill: np.ndarray, batch: np.ndarray
) -> np.ndarray:
    """Start to next start while sequences keep running after a step, else its own span."""
    running_after = np.zeros(len(start), dtype=np.int64)
    next_decode = prefilled = 0
    for i in range(len(start) - 1, -1, -1):
        running_after[i] = max(next_decode - prefilled, 0)
        if prefill[i]:
            prefilled += int(batch[i])
        else:
            next_decode, prefilled = int(batch[i]), 0
    next_start = np.append(start[1:], np.inf)
    return np.where(running_after > 0, next_start - start, end - start)


def _pairs(tokens: np.ndarray, batch: np.ndarray, longest: np.ndarray) -> np.ndarray:
    """Causal (query, key) pairs of prompts: the longest, and the rest in equal shares."""
    rest = (tokens - longest) / np.maximum(batch - 1, 1)
    return np.rint(longest * (longest + 1) / 2.0 + (batch - 1) * rest * (rest + 1) / 2.0).astype(
        np.int64
    )


def _sim_log(path: Path, df: pd.DataFrame) -> StepLog:
    if "replica" in df.columns:
        df = df.sort_values(["replica", "start_s"], kind="stable").reset_index(drop=True)
    start, end = _times(path, df)
    counts = [c for c in SIM_COLUMNS if c not in ("start_s", "end_s")]
    if "decode_max_context" in df.columns:
        counts.append("decode_max_context")
    n = _numbers(path, df, counts, whole=True)
    _check(path, df, "iterations", n["iterations"] < 1, "must be >= 1")
    seqs, tokens = n["prefill_seqs"], n["prefill_tokens"]
    _check(path, df, "prefill_seqs", (seqs > 0) != (tokens > 0), "prompts need prompt tokens")
    share = tokens / np.maximum(seqs, 1)
    zeros = np.zeros(len(df), dtype=np.int64)
    return StepLog(
        path=path,
        live=False,
        duration_s=end - start,
        iterations=n["iterations"],
        prefill_seqs=seqs,
        prefill_tokens=tokens,
        prefill_attn_pairs=np.rint(seqs * share * (share + 1) / 2.0).astype(np.int64),
        decode_seqs=n["decode_seqs"],
        decode_context=n["decode_context"],
        decode_max_context=n.get("decode_max_context", zeros),
        replica=df["replica"].to_numpy(np.int64) if "replica" in df.columns else zeros,
    )
