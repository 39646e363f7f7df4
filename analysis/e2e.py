"""End-to-end check: predicted against measured request latencies, on the same requests.

A *measured requests* file is a CSV with the columns of the shared H200 run's
``requests_3.0rps.csv``: ``request_id, arrival_s, prompt_tokens, output_tokens, first_token_s,
finish_s`` (seconds from the start of the run; a request the engine did not complete has an empty
or NaN ``finish_s``). ``sim validate-e2e`` replays its arrivals and lengths through a scenario;
this module compares the two on the requests the measurement completed: TTFT, TPOT and E2E
(the definitions of ``analysis.metrics.completed_latencies``), each mean, p50, p90 and p99, and the
relative error (predicted - measured) / measured. Simulated request i is the i-th measured request
in arrival order (the order the plain trace reader gives them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.metrics import completed_latencies, distribution
from sim.errors import UserError

MEASURED_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "first_token_s", "finish_s")
METRICS = ("ttft", "tpot", "e2e")
STATS = ("mean", "p50", "p90", "p99")


def read_measured(path: str | Path) -> pd.DataFrame:
    """A measured requests CSV in arrival order, with a `status` column; UserError if malformed."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such measured requests file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV: {exc}") from None
    missing = [c for c in MEASURED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}; needs "
                        f"{', '.join(MEASURED_COLUMNS)}")  # fmt: skip
    if df.empty:
        raise UserError(f"{path}: no rows")
    for column in MEASURED_COLUMNS:
        values = pd.to_numeric(df[column], errors="coerce")
        must = column in ("arrival_s", "prompt_tokens", "output_tokens")
        bad = (values.isna() & must) | (values < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{path}: row {i + 2}, column {column} = {df[column].iloc[i]!r}: "
                            "must be a number >= 0")  # fmt: skip
        df[column] = values
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    done = df["finish_s"].notna() & df["first_token_s"].notna()
    df["status"] = np.where(done, "completed", "in_flight")
    return df


def compare(measured: pd.DataFrame, predicted: pd.DataFrame) -> dict:
    """Errors of `predicted` (a requests trace of the replay) against `measured`."""
    if len(predicted) != len(measured):
        raise ValueError(f"{len(predicted)} simulated requests for {len(measured)} measured")
    predicted = predicted.sort_values("request_id").reset_index(drop=True)
    completed = (measured["status"] == "completed").to_numpy()
    both = completed & (predicted["status"] == "completed").to_numpy()
    want = completed_latencies(measured[both])
    got = completed_latencies(predicted[both])
    metrics = {}
    for name in METRICS:
        m, p = distribution(want[name]), distribution(got[name])
        metrics[name] = {
            stat: {"measured_s": m[stat], "predicted_s": p[stat], "error": _error(p[stat], m[stat])}
            for stat in STATS
        }
    return {
        "requests": {
            "measured": int(len(measured)),
            "completed_measured": int(completed.sum()),
            "completed_both": int(both.sum()),
        },
        "metrics": metrics,
    }


def _error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured


def format_comparison(result: dict) -> str:
    """The comparison as a Markdown table (milliseconds, errors in percent)."""
    r = result["requests"]
    lines = [
        f"{r['completed_both']} requests compared ({r['completed_measured']} of "
        f"{r['measured']} completed in the measurement, {r['completed_both']} of them in the "
        f"simulation too)",
        "",
        "| metric | stat | measured ms | predicted ms | error % |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in METRICS:
        for stat in STATS:
            e = result["metrics"][name][stat]
            error = "-" if e["error"] is None else f"{e['error'] * 100:+.1f}"
            predicted = _ms(e["predicted_s"])
            if "predicted_min_s" in e:  # the mean over seeds, and their range
                predicted += f" ({_ms(e['predicted_min_s'])} to {_ms(e['predicted_max_s'])})"
            lines.append(f"| {name} | {stat} | {_ms(e['measured_s'])} | {predicted} | {error} |")
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"
