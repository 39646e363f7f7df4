"""Processes: a killed sweep leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_sweep import write_small_scenario

PROC = Path("/proc")
GRACE_S = 5.0  # a worker polls its parent every 0.5 s (sim/processes.py)


def _alive_children() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process, from /proc."""
    parents = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        state, ppid = text.rpartition(")")[2].split()[:2]
        if state != "Z":
            parents[int(stat.parent.name)] = int(ppid)
    return parents


def _descendants(root: int) -> set[int]:
    parents = _alive_children()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _wait_for(predicate, timeout_s: float, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return predicate()


@pytest.mark.skipif(not PROC.is_dir(), reason="reads the process table from /proc (Linux)")
def test_sigkill_of_a_sweep_leaves_no_worker_or_resource_tracker_alive(tmp_path):
    scenario = write_small_scenario(tmp_path / "small.toml")
    argv = [sys.executable, "-m", "sim", "sweep", str(scenario), "--seeds", "4", "--workers", "2"]
    argv += ["--grid", "workload.rate=2:40:2", "--set", "sim.duration_s=600"]
    sweep = subprocess.Popen(
        [*argv, "--out", str(tmp_path / "s")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # two workers and the resource tracker, and a run in progress (a temporary run folder)
        started = _wait_for(
            lambda: (
                len(_descendants(sweep.pid)) >= 3
                and any((tmp_path / "s" / "points").glob("*/.seed-*.tmp-*"))
            ),
            timeout_s=120,
        )
        assert started, "the sweep never started its workers"
        children = _descendants(sweep.pid)
    finally:
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
    survivors = _wait_for(lambda: not (children & set(_alive_children())), GRACE_S)
    left = children & set(_alive_children())
    for pid in left:  # do not leave them behind for the next test either
        os.kill(pid, signal.SIGKILL)
    assert survivors, f"processes {sorted(left)} outlived the killed sweep by {GRACE_S} s"
