"""Import rules: each module imports only what docs/architecture.md allows it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("sim", "analysis")
ANYTHING = "anything"


def rules() -> dict[str, set[str] | None]:
    """Module path or package folder -> allowed project modules (None: anything)."""
    out: dict[str, set[str] | None] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`(sim|analysis)/[\w/.]*`", cells[0]):
            continue
        allowed = cells[2]
        out[cells[0].strip("`")] = (
            None if allowed == ANYTHING else set(re.findall(r"`([\w.]+)`", allowed))
        )
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Project modules `path` imports at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def rule_for(path: Path, table: dict[str, set[str] | None]) -> tuple[str, set[str] | None]:
    rel = path.relative_to(ROOT).as_posix()
    if rel in table:
        return rel, table[rel]
    folders = [key for key in table if key.endswith("/") and rel.startswith(key)]
    assert folders, f"{rel} has no row in docs/architecture.md"
    return max(folders, key=len), table[max(folders, key=len)]


def allowed_import(imported: str, allowed: set[str], own_package: str | None) -> bool:
    """An import is allowed when it is (inside) an allowed module or the module's own package."""
    names = allowed | ({own_package} if own_package else set())
    return any(imported == a or imported.startswith(a + ".") for a in names)


def test_every_module_imports_only_what_the_architecture_allows():
    table = rules()
    assert len(table) >= 25
    broken = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            key, allowed = rule_for(path, table)
            if allowed is None:
                continue
            own = key.rstrip("/").replace("/", ".") if key.endswith("/") else None
            for imported in project_imports(path):
                if not allowed_import(imported, allowed, own):
                    broken.append(f"{module_name(path)} imports {imported}")
    assert not broken, "\n".join(broken)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\nimport sim.engine\n"
        "if TYPE_CHECKING:\n    from analysis.summary import summarize\n"
        "def f():\n    from analysis.economics import economics\n"
    )
    assert project_imports(bad) == {"sim.engine", "analysis.economics"}
    assert not allowed_import("analysis.economics", {"sim.scenario"}, None)
    assert allowed_import("sim.batching.continuous", set(), "sim.batching")
