"""The README's two commands pass in a fresh virtual environment with only the test extra."""

from __future__ import annotations

import runpy
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

# what a fresh clone holds: no virtual environment, runs, caches or build output
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".venv", ".git", "runs", "out", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)
COMMAND_LIMIT_S = 1800  # a hung install fails the test instead of CI's whole time


def readme_commands() -> list[str]:
    helper = runpy.run_path(str(ROOT / ".ci" / "readme_commands.py"))
    return helper["readme_commands"](ROOT / "README.md")


def test_readme_marks_exactly_the_install_run_and_install_test_commands():
    run, test = readme_commands()
    assert "pip install -q ." in run and "-m sim run scenarios/" in run
    assert "pip install -q '.[test]'" in test and test.endswith("-m pytest -q")


@pytest.mark.slow
def test_readme_commands_pass_in_a_fresh_venv_with_only_the_test_extra(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=NOT_IN_A_CLONE)
    run, test = readme_commands()
    shown = subprocess.run(
        ["bash", "-c", run], cwd=clone, capture_output=True, text=True, timeout=COMMAND_LIMIT_S
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "traces and summary in runs/chat/" in shown.stdout
    tested = subprocess.run(
        ["bash", "-c", test], cwd=clone, capture_output=True, text=True, timeout=COMMAND_LIMIT_S
    )
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert " passed" in tested.stdout
    # [test] alone: the Dask tests are skipped with the reason, not failed
    assert "needs the [dask] extra" in tested.stdout
