"""Input that used to crash after simulating or be accepted silently: refused at load time.

Each test asserts the exact error class and that the message names the field (or the file and
line) and what is allowed; the command-line tests also that it is one line, exit status 2.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest

from sim.catalog import builtin_models
from sim.cli import main
from sim.errors import SimWarning, UserError
from sim.memory import kv_bytes_per_token
from sim.resolve import resolve
from sim.scenario import scenario_from_dict
from sim.traces import read_trace
from tests.conftest import BASE, ROOT, scenario

CHAT = ROOT / "scenarios" / "chat_llama3-8b_h100.toml"


def cli_error(capsys, *argv: str) -> str:
    """The one line a refused command prints (exit status 2, no traceback)."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    return err


# ----------------------------------------------------------------------------- numbers


def test_infinite_rate_is_refused_naming_the_field(tmp_path, capsys):
    err = cli_error(capsys, "run", str(CHAT), "--set", "workload.rate=inf", "--out", str(tmp_path))
    assert "workload.rate = inf (from --set): Input should be a finite number" in err


def test_nan_in_a_catalogue_field_of_ones_own_accelerator_is_refused():
    data = copy.deepcopy(BASE)
    data["accelerators"] = {"chip": {**_chip(), "mem_bw_gb_s": float("nan")}}
    data["fleet"] = {"gpu": "chip"}
    with pytest.raises(UserError, match="accelerators.chip.mem_bw_gb_s = nan"):
        scenario_from_dict(data)


def test_negative_seed_is_refused_before_simulating(tmp_path, capsys):
    err = cli_error(capsys, "run", str(CHAT), "--seed", "-1", "--out", str(tmp_path / "o"))
    assert "seed -1 (sim.seed or --seed): must be >= 0" in err
    assert not (tmp_path / "o").exists()


def test_warmup_as_long_as_the_arrival_window_is_refused():
    with pytest.raises(UserError, match=r"sim: warmup_s = 60 must be below duration_s = 60"):
        scenario("sim.warmup_s=60")


def test_warmup_after_the_last_of_num_requests_arrivals_is_warned_about():
    from sim.engine import run

    data = copy.deepcopy(BASE)
    data["sim"] = {"seed": 1, "num_requests": 20, "warmup_s": 500.0}
    with pytest.warns(SimWarning, match=r"sim.warmup_s = 500: all 20 requests arrive before it"):
        run(scenario_from_dict(data))


# ----------------------------------------------------------------------------- tensor parallel


@pytest.mark.parametrize("tp", [3, 5])
def test_tp_that_does_not_divide_the_attention_heads_is_refused(tp):
    with pytest.raises(UserError) as err:
        resolve(scenario(f"fleet.tp={tp}"))
    message = str(err.value)
    assert f"fleet.tp = {tp}: tp = {tp} does not divide the 32 attention heads" in message
    assert "allowed for llama-3.1-8b on h100: 1, 2, 4, 8" in message


def test_tp_of_a_pool_is_checked_and_named_by_its_pool():
    data = copy.deepcopy(BASE)
    data["fleet"] = {"pools": [{"name": "a", "gpu": "h100"}, {"name": "b", "gpu": "H200", "tp": 6}]}
    with pytest.raises(UserError, match=r"fleet.pools.1.tp = 6: tp = 6 does not divide the 32"):
        resolve(scenario_from_dict(data))


def test_tp_that_neither_divides_nor_replicates_the_kv_heads_is_refused():
    data = copy.deepcopy(BASE)
    data["models"] = {"gqa6": {**_shape(), "heads": 48, "kv_heads": 6}}
    data["model"] = {"name": "gqa6"}
    with pytest.raises(UserError, match="fleet.tp = 4: tp = 4 neither divides the 6 KV heads"):
        resolve(scenario_from_dict(data, overrides=["fleet.tp=4"]))


def test_tp_a_multiple_of_the_kv_heads_replicates_them_and_stores_each_copy():
    """vLLM's rule: tp = 8 over 4 KV heads puts one KV head on each GPU, two copies of each."""
    data = copy.deepcopy(BASE)
    data["models"] = {"gqa4": {**_shape(), "kv_heads": 4}}
    data["model"] = {"name": "gqa4"}
    replicated = resolve(scenario_from_dict(data, overrides=["fleet.tp=8"])).pools[0]
    split = resolve(scenario_from_dict(data, overrides=["fleet.tp=4"])).pools[0]
    shape = replicated.model_shape
    assert kv_bytes_per_token(shape, "bf16", 8) == 2 * kv_bytes_per_token(shape, "bf16", 4)
    # twice the GPUs, each holding the same KV bytes per token: the same tokens per GPU
    assert replicated.kv_capacity_blocks < 2 * split.kv_capacity_blocks


def test_tp_beyond_one_nvlink_node_is_refused_naming_the_node_size():
    with pytest.raises(UserError) as err:
        resolve(scenario("fleet.tp=16"))
    message = str(err.value)
    assert "fleet.tp = 16: more GPUs than one h100 node has (8 per NVLink domain" in message
    assert "gpus_per_node" in message


def test_every_catalogue_accelerator_states_its_node_size_and_source():
    from sim.catalog import builtin_accelerators

    assert {g.gpus_per_node for g in builtin_accelerators().values()} == {8}
    catalog = (ROOT / "sim" / "data" / "catalog.toml").read_text()
    assert "gpus_per_node: GPUs of one scale-up domain" in catalog


# ----------------------------------------------------------------------------- own entries


def test_own_model_without_a_context_length_is_refused():
    data = copy.deepcopy(BASE)
    data["models"] = {"mine": {k: v for k, v in _shape().items() if k != "max_context"}}
    data["model"] = {"name": "mine"}
    with pytest.raises(UserError, match=r'models."mine".max_context: required of your own'):
        scenario_from_dict(data)


def test_own_accelerator_without_a_node_size_is_refused():
    data = copy.deepcopy(BASE)
    data["accelerators"] = {"chip": {k: v for k, v in _chip().items() if k != "gpus_per_node"}}
    data["fleet"] = {"gpu": "chip"}
    with pytest.raises(UserError, match='accelerators."chip".gpus_per_node: required of your'):
        scenario_from_dict(data)


def test_catalogue_models_carry_their_context_length():
    models = builtin_models()
    assert models["llama-3-8b"].max_context == 8192
    assert models["llama-3.1-8b"].max_context == 131072
    for name in ("llama-3.1-8b", "llama-3.1-70b"):  # same shapes as Llama 3
        plain = name.replace("3.1", "3")
        keep = {"name", "max_context", "source"}
        assert models[name].model_dump(exclude=keep) == models[plain].model_dump(exclude=keep)


@pytest.mark.parametrize("spelling", ["H100", "h100"])
def test_gpu_names_are_case_insensitive_and_recorded_as_the_catalogue_id(spelling):
    assert scenario(f'fleet.gpu="{spelling}"').fleet.gpu == "h100"


def _shape() -> dict:
    shape = builtin_models()["llama-3.1-8b"].model_dump()
    return {**shape, "name": "test model", "source": "test"}


def _chip() -> dict:
    from sim.catalog import builtin_accelerators

    return {**builtin_accelerators()["h100"].model_dump(), "name": "chip", "source": "test"}


# ----------------------------------------------------------------------------- traces


def _mooncake(tmp_path, *rows: str):
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(row + "\n" for row in rows))
    return path


GOOD = '{"timestamp": 0, "input_length": 100, "output_length": 10}'


@pytest.mark.parametrize("stamp", ["NaN", "Infinity", "-Infinity"])
def test_mooncake_trace_with_a_non_finite_timestamp_names_its_line(tmp_path, stamp):
    path = _mooncake(
        tmp_path, GOOD, f'{{"timestamp": {stamp}, "input_length": 5, "output_length": 5}}'
    )
    with pytest.raises(UserError, match=rf"{path}:2: malformed line.*is not a finite number"):
        read_trace(path)


def test_non_finite_timestamp_fails_the_run_command_before_writing_anything(tmp_path, capsys):
    trace = _mooncake(tmp_path, GOOD, '{"timestamp": NaN, "input_length": 5, "output_length": 5}')
    replay = tmp_path / "replay.toml"
    replay.write_text(
        (ROOT / "scenarios" / "mooncake_prefix_caching.toml")
        .read_text()
        .replace('"builtin:mooncake_conversation"', f'"{trace}"')
    )
    err = cli_error(capsys, "run", str(replay), "--out", str(tmp_path / "o"))
    assert f"{trace}:2: malformed line" in err
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o.tmp-*"))


@pytest.mark.parametrize(("tokens", "read_as"), [("12.5", "12.5"), ("1e-3", "0.001")])
def test_fractional_token_count_is_an_error_not_truncated(tmp_path, tokens, read_as):
    path = _mooncake(tmp_path, f'{{"timestamp": 0, "input_length": {tokens}, "output_length": 5}}')
    with pytest.raises(UserError, match=rf"{path}:1: .*token count {read_as} is not a whole"):
        read_trace(path)


def test_fractional_token_count_in_an_azure_trace_names_its_line(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,100.5,10\n")
    with pytest.raises(UserError, match=rf"{path}:2: .*token count '100.5' is not a whole"):
        read_trace(path)


def test_whole_token_count_written_as_a_float_is_read(tmp_path):
    path = _mooncake(tmp_path, '{"timestamp": 0, "input_length": 12.0, "output_length": 5}')
    assert read_trace(path).prompt_tokens.tolist() == [12]


def _azure(tmp_path, *stamps: str):
    path = tmp_path / "trace.csv"
    rows = [f"{s},100,10" for s in stamps]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return path


def test_time_zone_offsets_are_converted_to_one_clock(tmp_path):
    path = _azure(tmp_path, "2023-11-16 18:00:00+01:00", "2023-11-16 17:00:30+00:00")
    assert read_trace(path).arrival_s.tolist() == [0.0, 30.0]


def test_offset_on_some_timestamps_but_not_others_is_refused_naming_the_line(tmp_path):
    path = _azure(tmp_path, "2023-11-16 18:00:00", "2023-11-16 18:00:01+02:00")
    with pytest.raises(UserError, match=rf"{path}:3: timestamp '2023-11-16 18:00:01\+02:00' has a"):
        read_trace(path)


def test_arrival_span_dominated_by_one_huge_gap_is_warned_about(tmp_path):
    stamps = [f"2023-11-16 18:00:{s:02d}" for s in range(10)] + ["2019-01-01 00:00:00"]
    path = _azure(tmp_path, *stamps)
    with pytest.warns(SimWarning, match=r"its 11 requests span 4.2\d+e\+04 hours"):
        read_trace(path)


def test_shipped_traces_are_read_without_a_warning():
    from sim.traces import builtin_trace_path

    with warnings.catch_warnings():
        warnings.simplefilter("error", SimWarning)
        for name in ("azure2023_conv", "azure2023_code", "mooncake_conversation"):
            read_trace(builtin_trace_path(name))


def test_cli_prints_a_trace_warning_as_one_line(tmp_path, capsys):
    stamps = [f"2023-11-16 18:00:{s:02d}" for s in range(10)] + ["2019-01-01 00:00:00"]
    trace = _azure(tmp_path, *stamps)
    replay = tmp_path / "replay.toml"
    replay.write_text(
        (ROOT / "scenarios" / "azure_conv_replay.toml")
        .read_text()
        .replace('"builtin:azure2023_conv"', f'"{trace}"')
        .replace("warmup_s = 60", "warmup_s = 0")
    )
    main(["run", str(replay), "--out", str(tmp_path / "o"), "--set", "sim.num_requests=10"])
    err = capsys.readouterr().err
    assert f"warning: {trace}: its 11 requests span" in err
    assert "SimWarning" not in err


def test_sweep_into_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    err = cli_error(capsys, "sweep", str(CHAT), "--grid", "workload.rate=1,2", "--out", str(target))
    assert f"--out {target}: is a file, not a folder" in err


def test_json_dump_of_the_resolved_scenario_keeps_the_catalogue_id():
    assert json.loads(scenario('fleet.gpu="H200"').model_dump_json())["fleet"]["gpu"] == "h200"


def test_gpu_of_a_measured_profile_is_case_insensitive():
    from sim.calibration import read_profile

    profile = read_profile(ROOT / "sim" / "data" / "h200_llama3-8b_bf16.csv", "H200")
    assert profile["gpu"].unique().tolist() == ["h200"]
