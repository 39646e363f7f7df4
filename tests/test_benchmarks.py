"""Smoke runs of every benchmark script at a tiny size: they run and end with their JSON line.

Timings are not checked here (benchmarks, not unit tests, hold the performance targets).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

REQUIRED = {"wall_s", "requests", "requests_per_s", "events_per_request", "peak_rss_mb"}

SMOKE = {
    "fleet_1m": ["--requests", "300", "--replicas", "2"],
    "scaling": ["--requests", "200", "--replicas", "1,2", "--per-replica", "100"],
    "compression": ["--requests", "300", "--replicas", "2", "--capacity-per-s", "29.4"],
    "profile_fleet": ["--requests", "300", "--replicas", "2"],
}


@pytest.mark.parametrize("name", SMOKE)
def test_benchmark_script_runs_and_ends_with_its_json_line(name):
    script = ROOT / "benchmarks" / f"{name}.py"
    out = subprocess.run(
        [sys.executable, str(script), *SMOKE[name]],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert REQUIRED <= set(result)
    assert result["benchmark"] == name
    assert result["requests"] > 0 and result["events_per_request"] > 0
    if name == "compression":
        assert result["traces"]["identical"] is True
        assert result["step_by_step"]["events"] > result["events"]
    if name == "scaling":
        assert [p["requests"] for p in result["points"]] == [200, 100, 200]
