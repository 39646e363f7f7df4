"""Readers for request traces: plain CSV, the Azure LLM inference trace 2023 (CSV) and Mooncake
(JSONL).

Each gives arrival times in seconds and prompt/output token counts; a bad line is a
:class:`UserError` naming the file and the line: a time that is not finite, a token count that is
not a whole number >= 1, or (Azure) a time-zone offset on some timestamps but not on others. A
*plain* CSV has a header with the columns ``arrival_s,prompt_tokens,output_tokens`` (seconds from
the start of the run, kept as they are; other columns, such as a measured requests file's
``first_token_s``, are not read). Azure and Mooncake times are shifted so that the first request
arrives at 0; Azure timestamps without an offset are read as UTC, with one as that time. A trace
whose arrivals span an implausibly long time for its size (one gap of over an hour taking most of
the span: a shifted or mistyped timestamp) is read with a SimWarning, since every simulated
second of the span is billed.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from sim.errors import SimWarning, UserError

# a single gap between consecutive arrivals of at least this long (seconds), that is also most
# of the trace's span, is warned about
IMPLAUSIBLE_GAP_S = 3600.0

AZURE_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
PLAIN_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Trace:
    """Requests of a trace, sorted by arrival (seconds since the first one)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: tuple[tuple[int, ...], ...] | None = None


def builtin_trace_path(name: str) -> Path:
    """Path of a trace shipped with the package (builtin:azure2023_conv, ...)."""
    folder = resources.files("sim").joinpath("data/traces")
    for suffix in (".csv", ".jsonl"):
        candidate = Path(str(folder.joinpath(name + suffix)))
        if candidate.exists():
            return candidate
    shipped = sorted(p.stem for p in Path(str(folder)).iterdir() if p.suffix in (".csv", ".jsonl"))
    raise UserError(f"unknown builtin trace '{name}'; shipped: {', '.join(shipped)}")


def resolve_trace(spec: str, base_dir: Path) -> Path:
    """A trace spec (``builtin:NAME`` or a path relative to the scenario) as a file path."""
    if spec.startswith(BUILTIN_PREFIX):
        return builtin_trace_path(spec.removeprefix(BUILTIN_PREFIX))
    path = Path(spec)
    return path if path.is_absolute() else base_dir / path


def read_trace(path: Path, fmt: str | None = None) -> Trace:
    """Read a trace, choosing the format from `fmt` or from the file suffix."""
    return _read_cached(Path(path).resolve(), fmt or _format_of(path))


def _format_of(path: Path) -> str:
    suffix = Path(path).suffix
    if suffix == ".csv":
        return "plain" if set(PLAIN_COLUMNS) <= set(_csv_header(path)) else "azure"
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    raise UserError(f"{path}: cannot tell the trace format from '{suffix}'; set trace_format")


def _csv_header(path: Path) -> list[str]:
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except FileNotFoundError:
        raise UserError(f"{path}: no such trace file") from None


@cache
def _read_cached(path: Path, fmt: str) -> Trace:
    if not path.exists():
        raise UserError(f"{path}: no such trace file")
    rows = READERS[fmt](path)
    if not rows:
        raise UserError(f"{path}: the trace holds no requests")
    times = np.array([r[0] for r in rows], dtype=np.float64)
    order = np.argsort(times, kind="stable")
    times = times[order] - (0.0 if fmt == "plain" else times[order[0]])
    _warn_if_span_implausible(path, times)
    prompts = np.array([r[1] for r in rows], dtype=np.int64)[order]
    outputs = np.array([r[2] for r in rows], dtype=np.int64)[order]
    hashes = None
    if fmt == "mooncake":
        hashes = tuple(tuple(rows[i][3]) for i in order)
    return Trace(times, prompts, outputs, hashes)


def _warn_if_span_implausible(path: Path, times: np.ndarray) -> None:
    """Warn when one gap between consecutive arrivals (sorted `times`, seconds) is over
    `IMPLAUSIBLE_GAP_S` and more than half of the whole span."""
    if len(times) < 2:
        return
    gaps = np.diff(times)
    i = int(np.argmax(gaps))
    span = float(times[-1] - times[0])
    if gaps[i] >= IMPLAUSIBLE_GAP_S and gaps[i] > span / 2:
        warnings.warn(
            f"{path}: its {len(times)} requests span {span / 3600:.4g} hours, "
            f"{gaps[i] / 3600:.4g} of them one gap between two consecutive arrivals (at "
            f"{times[i]:.6g} s and {times[i + 1]:.6g} s); check the timestamps (a time-zone "
            "offset, a date far in the past): every second of the span is simulated and its "
            "GPU-hours billed",
            SimWarning,
            stacklevel=2,
        )


def _read_plain(path: Path) -> list[tuple]:
    rows: list[tuple] = []
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.DictReader(f), start=2):
            rows.append(_plain_row(path, lineno, row))
    return rows


def _plain_row(path: Path, lineno: int, row: dict[str, str]) -> tuple:
    try:
        arrival_s = float(row["arrival_s"])
        if not 0.0 <= arrival_s < float("inf"):
            raise ValueError(f"arrival_s {arrival_s} is not a time >= 0")
        return arrival_s, _token_count(row["prompt_tokens"]), _token_count(row["output_tokens"])
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{path}:{lineno}: malformed line: expected arrival_s (seconds >= 0), "
            f"prompt_tokens >= 1 and output_tokens >= 1 ({exc})"
        ) from None


def _read_azure(path: Path) -> list[tuple]:
    rows: list[tuple] = []
    first_has_offset = None
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != AZURE_HEADER:
            raise UserError(
                f"{path}:1: expected header {','.join(AZURE_HEADER)} (Azure) or one with the "
                f"columns {','.join(PLAIN_COLUMNS)} (plain), got {header}"
            )
        for lineno, row in enumerate(reader, start=2):
            t, prompt, output, has_offset = _azure_row(path, lineno, row)
            if first_has_offset is None:
                first_has_offset = has_offset
            elif has_offset != first_has_offset:
                raise UserError(
                    f"{path}:{lineno}: timestamp {row[0]!r} has {'a' if has_offset else 'no'} "
                    f"time-zone offset, unlike line 2; give every timestamp an offset, or none "
                    "(then all are read as UTC)"
                )
            rows.append((t, prompt, output))
    return rows


def _azure_row(path: Path, lineno: int, row: list[str]) -> tuple[float, int, int, bool]:
    """Seconds since the epoch, prompt and output tokens, and whether the time had an offset."""
    try:
        stamp, prompt, output = row
        when = datetime.fromisoformat(stamp)
        has_offset = when.tzinfo is not None
        t = (when if has_offset else when.replace(tzinfo=UTC)).timestamp()
        return t, _token_count(prompt), _token_count(output), has_offset
    except ValueError as exc:
        raise UserError(
            f"{path}:{lineno}: malformed line {','.join(row)!r}: expected "
            f"'YYYY-MM-DD HH:MM:SS.fffffff,<prompt tokens >= 1>,<output tokens >= 1>' ({exc})"
        ) from None


def _read_mooncake(path: Path) -> list[tuple]:
    rows: list[tuple] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                rows.append(_mooncake_row(path, lineno, line))
    return rows


def _mooncake_row(path: Path, lineno: int, line: str) -> tuple:
    try:
        obj = json.loads(line)
        hashes = [int(h) for h in obj.get("hash_ids", [])]
        t = float(obj["timestamp"]) / 1000.0
        if not math.isfinite(t):
            raise ValueError(f"timestamp {obj['timestamp']!r} is not a finite number")
        return t, _token_count(obj["input_length"]), _token_count(obj["output_length"]), hashes
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path}:{lineno}: malformed line: expected a JSON object with timestamp (ms), "
            f"input_length >= 1, output_length >= 1 and optional hash_ids ({exc!r})"
        ) from None


def _token_count(value: object) -> int:
    """A token count >= 1 written as a whole number (12, "12" or 12.0); a fraction is an error,
    never truncated."""
    if isinstance(value, bool):
        raise ValueError(f"token count {value!r} is not a number")
    number = float(value)  # type: ignore[arg-type]
    if not number.is_integer():
        raise ValueError(f"token count {value!r} is not a whole number")
    if number < 1:
        raise ValueError(f"token count {value!r} < 1")
    return int(number)


READERS = {"plain": _read_plain, "azure": _read_azure, "mooncake": _read_mooncake}
