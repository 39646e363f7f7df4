"""docs/economics.md's worked example, recomputed by hand from the traces, runs as documented."""

from __future__ import annotations

import contextlib
import io
import re

from sim.cli import main
from tests.conftest import ROOT

DOC = ROOT / "docs" / "economics.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_the_worked_example_by_hand_prints_what_the_doc_shows(tmp_path, monkeypatch):
    section = _section(DOC.read_text(encoding="utf-8"), "Worked example by hand")
    command = re.search(r"\$ python -m sim (run .*)\n", section).group(1).split()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    command[1] = str(ROOT / command[1])  # the scenario file, from the repository
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(command) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {})
    assert printed.getvalue() == shown
