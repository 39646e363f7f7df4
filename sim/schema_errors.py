"""Validation errors of a file's tables as lines a user can act on: each names the dotted
field, the bad value, whether ``--set`` gave it, and what is allowed there."""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError


def format_errors(
    exc: ValidationError,
    root: type[BaseModel],
    data: dict,
    source: str,
    set_paths: list[str],
    what: str = "scenario",
) -> str:
    """One line per error of validating `data` (a file's tables, as `root`): the dotted field,
    the bad value, whether it came from ``--set``, and what is allowed there; the first line
    names the file `source` and `what` it holds."""
    lines = [f"{source}: invalid {what}"]
    for err in exc.errors():
        path, value, found = _data_path(err["loc"], data, root)
        dotted = ".".join(str(p) for p in path)
        origin = " (from --set)" if dotted in set_paths else ""
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(path[:-1], data, root)
            lines.append(f"  {dotted}{origin}: unknown field; allowed here: {allowed}")
        elif err["type"] == "union_tag_invalid":
            ctx = err["ctx"]
            field = f"{dotted}.{ctx['discriminator'].strip(chr(39))}"
            lines.append(f"  {field} = {ctx['tag']!r}: allowed: {ctx['expected_tags']}")
        elif err["type"] == "missing":
            lines.append(f"  {dotted}: required field is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            shown = f" = {value!r}" if found and not isinstance(value, dict) else ""
            lines.append(f"  {dotted}{shown}{origin}: {msg}" if dotted else f"  {msg}")
    return "\n".join(lines)


def _data_path(loc: tuple, data: Any, root: type[BaseModel]) -> tuple[list, Any, bool]:
    """Follow a pydantic error location through the input, dropping union tags."""
    path: list = []
    node, found = data, True
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and part in _union_tags(root):
            continue
        else:
            path.append(part)
            found = False
    return path, node, found


def _allowed_keys(path: list, data: Any, root: type[BaseModel]) -> str:
    """The field names allowed in the table at `path` of a file validated as `root`."""
    model: Any = root
    node = data
    members: list[type[BaseModel]] = []
    for part in path:
        node = node[part]
        if isinstance(part, int):  # an item of a list: its own tag picks its model
            model = _member_for(members, node)
            continue
        if model is None or part not in getattr(model, "model_fields", {}):
            return "(see docs)"
        members = _models_in(model.model_fields[part].annotation)
        model = _member_for(members, node)
    if model is None:
        return "(see docs)"
    return ", ".join(model.model_fields)


def _member_for(members: list[type[BaseModel]], node: Any) -> type[BaseModel] | None:
    """The model among a union's `members` whose ``kind``/``dist`` tag `node` carries (else the
    first)."""
    tag = node.get("kind", node.get("dist")) if isinstance(node, dict) else None
    tagged = [m for m in members if tag is not None and _tag_of(m) == tag]
    return (tagged or members or [None])[0]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (list[X], X | None, Annotated[Union[...]])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, dict, Union, types.UnionType, Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _tag_of(model: type[BaseModel]) -> str | None:
    """The literal value of a union member's ``kind`` or ``dist`` field."""
    for name in ("kind", "dist"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is Literal:
            return typing.get_args(field.annotation)[0]
    return None


@cache
def _union_tags(root: type[BaseModel]) -> frozenset[str]:
    """Every ``kind``/``dist`` value of the models inside `root`; pydantic puts them in error
    locations."""
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.add(model)
            todo += [m for f in model.model_fields.values() for m in _models_in(f.annotation)]
    return frozenset(t for m in seen if (t := _tag_of(m)) is not None)
