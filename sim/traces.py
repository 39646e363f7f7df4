"""Readers for request traces: plain CSV, the Azure LLM inference trace 2023 (CSV) and Mooncake
(JSONL).

Each gives arrival times in seconds and prompt/output token counts; a bad line is a
:class:`UserError` naming the file and the line. A *plain* CSV has a header with the columns
``arrival_s,prompt_tokens,output_tokens`` (seconds from the start of the run, kept as they are;
other columns, such as a measured requests file's ``first_token_s``, are not read). Azure and
Mooncake times are shifted so that the first request arrives at 0.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from sim.errors import UserError

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
    prompts = np.array([r[1] for r in rows], dtype=np.int64)[order]
    outputs = np.array([r[2] for r in rows], dtype=np.int64)[order]
    hashes = None
    if fmt == "mooncake":
        hashes = tuple(tuple(rows[i][3]) for i in order)
    return Trace(times, prompts, outputs, hashes)


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
        return arrival_s, _positive(row["prompt_tokens"]), _positive(row["output_tokens"])
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{path}:{lineno}: malformed line: expected arrival_s (seconds >= 0), "
            f"prompt_tokens >= 1 and output_tokens >= 1 ({exc})"
        ) from None


def _read_azure(path: Path) -> list[tuple]:
    rows: list[tuple] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != AZURE_HEADER:
            raise UserError(
                f"{path}:1: expected header {','.join(AZURE_HEADER)} (Azure) or one with the "
                f"columns {','.join(PLAIN_COLUMNS)} (plain), got {header}"
            )
        for lineno, row in enumerate(reader, start=2):
            rows.append(_azure_row(path, lineno, row))
    return rows


def _azure_row(path: Path, lineno: int, row: list[str]) -> tuple:
    try:
        stamp, prompt, output = row
        t = datetime.fromisoformat(stamp).timestamp()
        return t, _positive(prompt), _positive(output)
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
        return t, _positive(obj["input_length"]), _positive(obj["output_length"]), hashes
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path}:{lineno}: malformed line: expected a JSON object with timestamp (ms), "
            f"input_length >= 1, output_length >= 1 and optional hash_ids ({exc!r})"
        ) from None


def _positive(text: object) -> int:
    value = int(text)  # type: ignore[call-overload]
    if value < 1:
        raise ValueError(f"token count {value} < 1")
    return value


READERS = {"plain": _read_plain, "azure": _read_azure, "mooncake": _read_mooncake}
