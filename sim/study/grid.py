"""Grids of ``--set`` overrides: parsing ``KEY=VALUES`` and naming the points of the product."""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sim.errors import UserError
from sim.overrides import apply_override

MAX_RANGE_VALUES = 10_000
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


@dataclass(frozen=True)
class Axis:
    """One grid dimension: a dotted scenario key and the raw TOML texts of its values."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    """One grid point: its ``key=value`` overrides (in axis order) and its directory name."""

    name: str
    overrides: tuple[str, ...]
    values: dict


def parse_axis(spec: str) -> Axis:
    """``key=v1,v2,...`` or ``key=start:stop:step`` (stop included when on the grid)."""
    key, sep, raw = spec.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise UserError(f"--grid {spec!r}: expected KEY=V1,V2,... or KEY=START:STOP:STEP")
    raw = raw.strip()
    values = _range_values(key, raw) if _is_range(raw) else _split_list(raw)
    if any(not v for v in values):
        raise UserError(f"--grid {key}: empty value in {raw!r}")
    if len(set(values)) != len(values):
        raise UserError(f"--grid {key}: repeated value in {raw!r}")
    return Axis(key, tuple(values))


def _is_range(raw: str) -> bool:
    parts = raw.split(":")
    return len(parts) == 3 and all(_decimal(p) is not None for p in parts)


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _range_values(key: str, raw: str) -> list[str]:
    """Values of ``start:stop:step`` in exact decimal arithmetic, so 0.1 steps do not drift."""
    start, stop, step = (_decimal(p) for p in raw.split(":"))
    if step <= 0 or stop < start:
        raise UserError(
            f"--grid {key}={raw}: a range needs START <= STOP and STEP > 0 (e.g. 10:100:10)"
        )
    count = int((stop - start) / step) + 1
    if count > MAX_RANGE_VALUES:
        raise UserError(f"--grid {key}={raw}: {count} values; at most {MAX_RANGE_VALUES}")
    return [_number_text(start + i * step) for i in range(count)]


def _number_text(value: Decimal) -> str:
    """A TOML number; integral values are written as integers (10, not 10.0)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text and value == value.to_integral() else text


def _split_list(raw: str) -> list[str]:
    """Split on commas outside brackets, braces and quotes (TOML arrays and tables stay whole)."""
    values, depth, quote, current = [], 0, "", []
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    return values


def grid_points(axes: list[Axis] | tuple[Axis, ...]) -> list[Point]:
    """The cartesian product of `axes`, first axis slowest; no axes gives one empty point."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise UserError(f"--grid: a key appears twice in {keys}")
    points, names = [], set()
    for combo in itertools.product(*(a.values for a in axes)):
        point = make_point(tuple(f"{k}={v}" for k, v in zip(keys, combo, strict=True)))
        if point.name in names:  # two values that only differ in unsafe characters
            name = f"{point.name[:80]}-{_digest(point.overrides)}"
            point = Point(name, point.overrides, point.values)
        names.add(point.name)
        points.append(point)
    return points


def make_point(overrides: tuple[str, ...]) -> Point:
    """The point of some ``key=value`` overrides, named after them."""
    return Point(point_name(overrides), overrides, _parsed_values(overrides))


def point_name(overrides: tuple[str, ...]) -> str:
    """A file-name-safe directory name for a point, e.g. ``workload.rate=10_fleet.gpu=h100``
    (quotes dropped, other unsafe characters as ``-``)."""
    if not overrides:
        return "base"
    name = "_".join(_UNSAFE.sub("-", o.replace('"', "").replace("'", "")) for o in overrides)
    return name if len(name) <= 120 else f"{name[:100]}-{_digest(overrides)}"


def _digest(overrides: tuple[str, ...]) -> str:
    return hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:10]


def _parsed_values(overrides: tuple[str, ...]) -> dict:
    """Each key's value for the results table: numbers, booleans and strings as the scenario
    reads them (TOML), anything else (arrays, tables) as its text."""
    values: dict = {}
    for item in overrides:
        scratch: dict = {}
        key = apply_override(scratch, item)
        node = scratch
        for part in key.split(".")[:-1]:
            node = node[part]
        value = node[key.split(".")[-1]]
        values[key] = value if isinstance(value, int | float | str) else item.partition("=")[2]
    return values
