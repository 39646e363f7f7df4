"""``--set section.field=value`` overrides of a scenario's raw data (before validation)."""

from __future__ import annotations

import tomllib
from typing import Any

from sim.errors import UserError


def apply_override(data: dict[str, Any], item: str, source: str = "<scenario>") -> str:
    """Apply one ``a.b.c=value`` override in place (value parsed as TOML); returns the path."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r}: expected section.field=value")
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), item)
    last = parts[-1]
    value = _parse_value(raw.strip())
    if isinstance(node, list):
        node[_index(node, last, item)] = value
    else:
        node[last] = value
    return key.strip()


def _child(node: Any, part: str, where: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise UserError(f"--set {item!r}: '{where}' is not a table")
    return node.setdefault(part, {})


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise UserError(f"--set {item!r}: '{part}' is not an index below {len(node)}")
    return int(part)


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def deep_copy(value: Any) -> Any:
    """A copy of nested dicts and lists (the overrides change it, not the caller's data)."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value
