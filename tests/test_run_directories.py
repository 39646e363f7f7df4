"""Run directories: never two runs mixed in one, never a half-written one, damage named."""

from __future__ import annotations

import pytest

import sim.engine
from sim.cli import main
from sim.errors import UserError
from sim.rundir import writing_run
from tests.conftest import ROOT

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"
SHORT = ("--set", "sim.duration_s=40", "--set", "sim.warmup_s=5")


def run_cli(*argv: str) -> int:
    return main(["run", str(CHAT), *SHORT, *argv])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def forbid_simulation(monkeypatch) -> None:
    """Fail the test if a command simulates from now on (the error must come before)."""

    def refuse(*args, **kwargs):
        raise AssertionError("simulated although the input was bad")

    monkeypatch.setattr(sim.engine, "run", refuse)


@pytest.fixture
def no_simulation(monkeypatch):
    forbid_simulation(monkeypatch)


def test_out_at_an_existing_file_is_refused_before_simulating(tmp_path, capsys, no_simulation):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert run_cli("--out", str(target)) == 2
    assert f"--out {target}: is a file, not a folder" in error_line(capsys)
    assert target.read_text() == "mine"


def test_out_holding_another_run_is_refused_before_simulating(tmp_path, capsys, monkeypatch):
    assert run_cli("--out", str(tmp_path / "r")) == 0
    capsys.readouterr()
    forbid_simulation(monkeypatch)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    assert run_cli("--out", str(tmp_path / "r"), "--seed", "2") == 2
    assert "already holds a run; use --force to replace it whole" in error_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()} == before


def test_force_replaces_a_run_whole(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli("--out", str(out)) == 0
    (out / "rejections.parquet").write_bytes(b"from the old run")  # a file the new run lacks
    assert run_cli("--out", str(out), "--seed", "2", "--force") == 0
    assert "traces and summary in" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "fleet.parquet",
        "requests.parquet",
        "run.json",
        "scenario.json",
        "steps.parquet",
        "summary.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folder left


def test_out_holding_a_sweep_is_refused_and_force_replaces_it(tmp_path, capsys):
    (tmp_path / "s" / "points").mkdir(parents=True)
    (tmp_path / "s" / "sweep.json").write_text("{}")
    assert run_cli("--out", str(tmp_path / "s")) == 2
    assert "already holds a sweep or plan" in error_line(capsys)
    assert run_cli("--out", str(tmp_path / "s"), "--force") == 0
    assert not (tmp_path / "s" / "points").exists()


def test_force_never_deletes_a_folder_that_holds_no_run(tmp_path, capsys, no_simulation):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert run_cli("--out", str(tmp_path), "--force") == 2
    assert "the folder is not empty and holds no run" in error_line(capsys)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_run_that_fails_while_being_written_leaves_no_folder(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError), writing_run(out) as tmp:
        (tmp / "requests.parquet").write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_python_api_save_refuses_to_mix_runs_unless_forced(tmp_path):
    from sim.study.api import run

    first = run(CHAT, overrides=["sim.duration_s=40", "sim.warmup_s=5"])
    first.save(tmp_path / "r")
    with pytest.raises(UserError, match="already holds a run"):
        first.save(tmp_path / "r")
    assert first.save(tmp_path / "r", force=True) == tmp_path / "r"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert run_cli("--out", str(out)) == 0
    return out


@pytest.mark.parametrize("damage", ["empty", "truncated"])
@pytest.mark.parametrize("command", ["check", "report"])
def test_damaged_requests_parquet_is_one_clear_error(tmp_path, capsys, saved_run, damage, command):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(saved_run, run_dir)
    requests = run_dir / "requests.parquet"
    data = requests.read_bytes()
    requests.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    capsys.readouterr()
    argv = [command, str(run_dir)] + (
        ["--out", str(tmp_path / "rep")] if command == "report" else []
    )
    assert main(argv) == 2
    err = error_line(capsys)
    assert f"{requests}: cannot be read: the file is empty, truncated or damaged" in err


def test_run_saved_before_node_sizes_and_reasons_existed_is_still_analysed(tmp_path, saved_run):
    import json
    import shutil

    from analysis.rundata import load_run
    from analysis.summary import summarize

    old = tmp_path / "old"
    shutil.copytree(saved_run, old)
    stored = json.loads((old / "scenario.json").read_text())
    for pool in stored["pools"]:  # as main wrote scenario.json before these fields
        del pool["accelerator"]["gpus_per_node"]
        del pool["model_shape"]["max_context"]
    (old / "scenario.json").write_text(json.dumps(stored))
    summary = summarize(load_run(old))
    assert summary["utilization"]["nonidle_fraction"] > 0
    assert summary["requests"]["rejected_by_reason"]["max_context"] == 0
