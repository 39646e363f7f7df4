"""Calibration of the roofline against measured step profiles: fit, predict, validate.

A *profile* is a CSV of measured iteration latencies, one row per (shape, phase, batch, tokens,
context) point, with the columns of ``sim/data/h200_llama3-8b_bf16.csv`` (README of the shared
data): ``layers, layers_built, hidden, heads, kv_heads, head_dim, ffn, vocab, dtype, phase,
batch, tokens, context`` and, for fitting, ``ms_median``; optionally ``gpu``, ``tp``,
``experts`` and ``experts_per_token``. Phases:

* ``prefill``: `batch` sequences of `tokens` new tokens after `context` cached ones, causal
  attention, logits for each sequence's last token;
* ``decode``: `batch` sequences each adding one token to a KV cache of `context` tokens (so each
  attends ``context + 1`` positions), logits for all;
* ``dense``: `tokens` tokens through every layer's fused QKV projection and MLP, with neither
  attention nor the output projection, then the LM head for the last token only.

Fitting finds the :class:`~sim.perf.PerfParams` that minimise the squared log error of the
:class:`~sim.perf.Roofline` over the profile (``scipy.optimize.least_squares``, parameters in
log space, efficiencies bounded by 1). The fitted parameters are physical (efficiencies as
fractions of the datasheet peaks, per-layer and per-iteration overheads in seconds), so they
apply to any model shape, `tp` and, as a first guess, to another GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from sim.catalog import Accelerator, ModelShape, builtin_accelerators, canonical_id
from sim.errors import UserError
from sim.noise import MarkovLognormal, StepNoise
from sim.perf import DECODE_ATTENTION, PerfParams, Roofline
from sim.scenario import read_toml

SHAPE_COLUMNS = (
    "layers",
    "layers_built",
    "hidden",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "vocab",
)
WORK_COLUMNS = ("phase", "batch", "tokens", "context")
PHASES = ("prefill", "decode", "dense")
DTYPE_NAMES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "fp8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "int8": "int8",
    "int4": "int4",
}

# fitted parameters: (lower bound, upper bound, starting value); fitted as log(value)
FIT_BOUNDS: dict[str, tuple[float, float, float]] = {
    "gemm_efficiency": (0.05, 1.0, 0.8),
    "gemm_pad_tokens": (0.01, 4096.0, 64.0),
    "memory_efficiency": (0.05, 1.0, 0.6),
    "overlap": (1.0, 64.0, 4.0),
    "attention_efficiency": (0.05, 1.0, 0.5),
    "kv_efficiency": (0.05, 1.0, 0.6),
    "kv_pad_tokens": (0.01, 65536.0, 256.0),
    "decode_position_s": (1e-12, 1e-6, 1e-8),
    "gemm_overhead_s": (1e-8, 1e-3, 1e-6),
    "layer_overhead_s": (1e-8, 1e-3, 1e-5),
    "attention_overhead_s": (1e-8, 1e-3, 1e-5),
    "step_overhead_s": (1e-7, 0.1, 1e-4),
}
# fixed costs and paddings that `--fix NAME=0` may switch off (their lower bounds above are only
# the floor of the log-space fit)
ABSENT_ALLOWED = frozenset(n for n in FIT_BOUNDS if n.endswith(("_s", "_tokens")))
# What a profile of one shape cannot pin, held by default (docs/fidelity.md). The costs per
# iteration and per GEMM: in every row of a one-shape profile they are constants, like the cost
# per layer, and a fit over three shapes puts both at 0 (a step's fixed costs are its layers'
# small kernels). The weight-streaming bandwidth, where it was measured on the GPU: with one shape
# it trades against the per-layer cost (a free fit on the shipped profile lands at 0.68 and no
# per-layer cost, and misses the Llama-3-70B slice by 22% median instead of 7%). H200: a 1-row
# GEMM reading 8 GiB of bf16 weights ran at 3.97 of 4.8 TB/s (benchmarks/profiles/ceilings.txt).
HELD_AT_ZERO = ("step_overhead_s", "gemm_overhead_s")
MEASURED_STREAM_EFFICIENCY = {"h200": 0.827}
CALIBRATIONS_DIR = "data/calibrations"
NOISE_PHASES = ("prefill", "decode")  # the fields of StepNoise, in order


# ----------------------------------------------------------------------------- profiles


def read_profile(
    path: str | Path, gpu: str | None, tp: int = 1, timed: bool = True
) -> pd.DataFrame:
    """Read and check a profile (or a query file with `timed` False) into a DataFrame.

    Adds the columns `gpu` and `tp` where missing (from the arguments) and a normalised
    `wdtype`. Raises UserError naming the file, column and row of any bad value.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such profile file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV: {exc}") from None
    required = [*SHAPE_COLUMNS, "dtype", *WORK_COLUMNS] + (["ms_median"] if timed else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: missing columns {', '.join(missing)}; needs {', '.join(required)}"
        )
    if df.empty:
        raise UserError(f"{path}: no rows")
    df = df.copy()
    if "gpu" not in df.columns:
        if gpu is None:
            raise UserError(f"{path}: no gpu column; give --gpu (one of {_gpu_ids()})")
        df["gpu"] = gpu
    elif gpu is not None:
        df["gpu"] = df["gpu"].fillna(gpu)
    for column, default in (("tp", tp), ("experts", 1), ("experts_per_token", 1)):
        df[column] = df[column].fillna(default) if column in df.columns else default
    ids = builtin_accelerators()  # GPU names in any case: H200 is h200
    df["gpu"] = df["gpu"].map(lambda g: canonical_id(g, ids) if isinstance(g, str) else g)
    _check_values(df, path, timed)
    df["wdtype"] = df["dtype"].map(DTYPE_NAMES)
    return df


def _check_values(df: pd.DataFrame, path: Path, timed: bool) -> None:
    def bad(column: str, mask: pd.Series, allowed: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise UserError(
                f"{path}: row {i + 2}, column {column} = {df[column].iloc[i]!r}: {allowed}"
            )

    integer_columns = [*SHAPE_COLUMNS, "batch", "tokens", "context", "tp", "experts"]
    for column in [*integer_columns, "experts_per_token"]:
        values = pd.to_numeric(df[column], errors="coerce")
        bad(column, values.isna() | (values != values.round()), "must be a whole number")
        df[column] = values.astype(int)
    for column in integer_columns:
        floor = 0 if column == "context" else 1
        bad(column, df[column] < floor, f"must be >= {floor}")
    bad("layers_built", df["layers_built"] > df["layers"], "must not exceed layers")
    bad("phase", ~df["phase"].isin(PHASES), f"allowed: {', '.join(PHASES)}")
    bad("dtype", ~df["dtype"].isin(DTYPE_NAMES), f"allowed: {', '.join(DTYPE_NAMES)}")
    bad("gpu", ~df["gpu"].isin(builtin_accelerators()), f"allowed: {_gpu_ids()}")
    if timed:
        ms = pd.to_numeric(df["ms_median"], errors="coerce")
        bad("ms_median", ms.isna() | (ms <= 0), "must be a positive number of milliseconds")
        df["ms_median"] = ms


def _gpu_ids() -> str:
    return ", ".join(sorted(builtin_accelerators()))


# ----------------------------------------------------------------------------- prediction


def _group_key(row: pd.Series) -> tuple:
    return tuple(
        row[c] for c in (*SHAPE_COLUMNS, "experts", "experts_per_token", "wdtype", "gpu", "tp")
    )


def _roofline(key: tuple, params: PerfParams) -> Roofline:
    layers, built, hidden, heads, kv_heads, head_dim, ffn, vocab, experts, k, wdtype, gpu, tp = key
    shape = ModelShape(
        name="profile",
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        vocab=vocab,
        experts=experts,
        experts_per_token=k,
    )
    accelerator: Accelerator = builtin_accelerators()[gpu]
    return Roofline(shape, accelerator, int(tp), params, wdtype, "bf16", layers=built)


def phase_time_s(roof: Roofline, phase: np.ndarray, batch, tokens, context) -> np.ndarray:
    """Step seconds of profile rows (arrays of one shape group), by the phases' definitions."""
    L = roof.layers
    new_tokens = batch * tokens
    pairs = batch * (tokens * context + tokens * (tokens + 1) / 2.0)
    prefill = roof.fixed_s(new_tokens, batch) + L * roof.prefill_attention_s(
        new_tokens, pairs, batch * context
    )
    decode = roof.fixed_s(batch, batch) + L * roof.decode_attention_s(batch, batch * (context + 1))
    dense = roof.fixed_s(tokens, np.ones_like(tokens), attention=0.0)
    return np.select([phase == "prefill", phase == "decode"], [prefill, decode], dense)


@dataclass(frozen=True)
class _Groups:
    """Profile rows split by shape/GPU group, as arrays, for fast repeated evaluation."""

    keys: list[tuple]
    index: list[np.ndarray]
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    size: int

    @classmethod
    def of(cls, df: pd.DataFrame) -> _Groups:
        keys, index, arrays = [], [], []
        for key, rows in df.groupby(df.apply(_group_key, axis=1), sort=False):
            pos = df.index.get_indexer(rows.index)
            keys.append(key)
            index.append(pos)
            arrays.append(
                (
                    rows["phase"].to_numpy(),
                    rows["batch"].to_numpy(float),
                    rows["tokens"].to_numpy(float),
                    rows["context"].to_numpy(float),
                )
            )
        return cls(keys, index, arrays, len(df))

    def predict_s(self, params: PerfParams) -> np.ndarray:
        out = np.empty(self.size)
        for key, pos, arrays in zip(self.keys, self.index, self.arrays, strict=True):
            out[pos] = phase_time_s(_roofline(key, params), *arrays)
        return out


def predict_ms(df: pd.DataFrame, params: PerfParams) -> np.ndarray:
    """Predicted step milliseconds of each profile row."""
    return _Groups.of(df.reset_index(drop=True)).predict_s(params) * 1e3


# ----------------------------------------------------------------------------- fitting


def fit(
    df: pd.DataFrame, start: PerfParams | None = None, fixed: dict[str, float] | None = None
) -> PerfParams:
    """The parameters that minimise the squared log error over the profile rows of `df`.

    `fixed` holds parameters that are not fitted (e.g. a separately measured ceiling).
    """
    from scipy.optimize import least_squares  # imported here: `sim run` does not need scipy

    fixed = fixed or {}
    df = df.reset_index(drop=True)
    groups = _Groups.of(df)
    log_measured = np.log(df["ms_median"].to_numpy(float) * 1e-3)
    names = [n for n in FIT_BOUNDS if n not in fixed]
    lower = np.log([FIT_BOUNDS[n][0] for n in names])
    upper = np.log([FIT_BOUNDS[n][1] for n in names])
    first = start or PerfParams(**{n: FIT_BOUNDS[n][2] for n in names})
    x0 = np.clip(np.log([getattr(first, n) for n in names]), lower + 1e-9, upper - 1e-9)

    def params_of(x: np.ndarray) -> PerfParams:
        return PerfParams(**dict(zip(names, np.exp(x).tolist(), strict=True)), **fixed)

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(groups.predict_s(params_of(x))) - log_measured

    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=1.0, max_nfev=2000)
    return params_of(result.x)


def held_parameters(gpus: set[str], fixes: list[str], frees: list[str] = ()) -> dict[str, float]:
    """The parameters a profile fit holds: the defaults for `gpus` less `frees`, then `fixes`.

    `fixes` are ``NAME=VALUE`` strings; `frees` names of default holds to fit instead.
    """
    held = dict.fromkeys(HELD_AT_ZERO, 0.0)
    if len(gpus) == 1 and (gpu := next(iter(gpus))) in MEASURED_STREAM_EFFICIENCY:
        held["memory_efficiency"] = MEASURED_STREAM_EFFICIENCY[gpu]
    for name in frees:
        if name not in held:
            raise UserError(f"--free {name}: not held by default; held: {', '.join(held)}")
        del held[name]
    return held | parse_fixed(fixes)


def parse_fixed(items: list[str]) -> dict[str, float]:
    """``NAME=VALUE`` strings into fixed parameters; UserError for unknown names or values."""
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in FIT_BOUNDS:
            raise UserError(
                f"--fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(FIT_BOUNDS)}"
            )
        try:
            fixed[name] = float(value)
        except ValueError:
            raise UserError(f"--fix {item!r}: {value!r} is not a number") from None
        low, high, _ = FIT_BOUNDS[name]
        low = 0.0 if name in ABSENT_ALLOWED else low
        if not low <= fixed[name] <= high:
            raise UserError(f"--fix {item!r}: must lie in [{low:g}, {high:g}]")
    return fixed


def ape(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Absolute percentage errors."""
    return np.abs(predicted - measured) / measured * 100.0


def cross_validated_ms(
    df: pd.DataFrame, folds: int | None, start: PerfParams, fixed: dict[str, float] | None = None
) -> np.ndarray:
    """Each row's prediction from a fit without it: leave-one-out (`folds` None) or k-fold.

    k-fold folds are a fixed permutation of the rows (seed 0), so the result is repeatable.
    """
    df = df.reset_index(drop=True)
    n = len(df)
    if folds is None or folds >= n:
        fold_of = np.arange(n)
    else:
        fold_of = np.random.default_rng(0).permutation(n) % folds
    out = np.empty(n)
    for f in np.unique(fold_of):
        test = fold_of == f
        params = fit(df[~test], start=start, fixed=fixed)
        out[test] = predict_ms(df[test], params)
    return out


# ----------------------------------------------------------------------------- error tables


def error_table(
    df: pd.DataFrame, predicted_ms: np.ndarray
) -> list[tuple[str, int, float, float, float]]:
    """(phase, rows, median APE, p90 APE, max APE) per phase present, then 'all'."""
    errors = ape(np.asarray(predicted_ms), df["ms_median"].to_numpy(float))
    phases = df["phase"].to_numpy()
    rows = []
    for name in [p for p in PHASES if (phases == p).any()] + ["all"]:
        e = errors if name == "all" else errors[phases == name]
        rows.append(
            (name, len(e), float(np.median(e)), float(np.percentile(e, 90)), float(e.max()))
        )
    return rows


def format_table(title: str, rows: list[tuple[str, int, float, float, float]]) -> str:
    """An error table as aligned text."""
    lines = [title, f"  {'phase':<8} {'rows':>4} {'median %':>9} {'p90 %':>7} {'max %':>7}"]
    for phase, n, med, p90, worst in rows:
        lines.append(f"  {phase:<8} {n:>4} {med:>9.1f} {p90:>7.1f} {worst:>7.1f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- calibration files


@dataclass(frozen=True)
class Calibration:
    """Fitted parameters and where they came from.

    profile: the profile the GPU parameters were fitted to; rows: its rows; steps: the live step
    log the host terms and the noise were fitted to ("" for none); decode_attention: how the
    engine of that log computes decode attention (None: not said); noise: the fitted step-time
    noise, if any.
    """

    params: PerfParams
    gpu: str
    profile: str
    rows: int
    steps: str = ""
    decode_attention: str | None = None
    noise: StepNoise | None = None


def write_calibration(path: str | Path, cal: Calibration, note: str = "") -> None:
    """Write a calibration TOML: a [calibration] provenance table, [params] and maybe [noise]."""
    lines = ["# Step-time calibration written by `python -m sim perf fit`."]
    lines += [f"# {line}" for line in note.splitlines()]
    lines += ["", "[calibration]", f'gpu = "{cal.gpu}"', f'profile = "{cal.profile}"']
    lines += [f"rows = {cal.rows}"]
    if cal.steps:
        lines.append(f'steps = "{cal.steps}"')
    if cal.decode_attention is not None:
        lines.append(f'decode_attention = "{cal.decode_attention}"')
    lines += ["", "[params]"]
    lines += [f"{name} = {_toml_float(value)}" for name, value in asdict(cal.params).items()]
    if cal.noise is not None:
        for phase in NOISE_PHASES:
            noise = getattr(cal.noise, phase)
            lines += ["", f"[noise.{phase}]", 'kind = "markov_lognormal"']
            lines.append(f"log_means = {_toml_floats(noise.log_means)}")
            lines.append(f"log_sigmas = {_toml_floats(noise.log_sigmas)}")
            rows = ", ".join(_toml_floats(row) for row in noise.transitions)
            lines.append(f"transitions = [{rows}]")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_floats(values) -> str:
    return "[" + ", ".join(_toml_float(v) for v in values) + "]"


def _toml_float(value: float) -> str:
    return "inf" if math.isinf(value) else repr(float(value))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration TOML; UserError for a missing file or a bad or unknown field."""
    path = Path(path)
    data = read_toml(path, "calibration")
    meta, values = data.get("calibration", {}), data.get("params")
    if not isinstance(values, dict):
        raise UserError(f"{path}: missing the [params] table")
    unknown = set(values) - set(PerfParams.names())
    if unknown:
        raise UserError(
            f"{path}: params.{sorted(unknown)[0]}: unknown parameter; allowed: "
            f"{', '.join(PerfParams.names())}"
        )
    for name, value in values.items():
        if (
            not isinstance(value, int | float)
            or value < 0
            or ("efficiency" in name and not 0 < value <= 1)
        ):
            raise UserError(
                f"{path}: params.{name} = {value!r}: must be a number >= 0 (efficiencies in (0, 1])"
            )
    if values.get("overlap", 1.0) < 1.0:
        raise UserError(f"{path}: params.overlap = {values['overlap']!r}: must be >= 1")
    params = replace(PerfParams(), **{k: float(v) for k, v in values.items()})
    attention = meta.get("decode_attention")
    if attention is not None and attention not in DECODE_ATTENTION:
        raise UserError(
            f"{path}: calibration.decode_attention = {attention!r}: allowed: "
            f"{', '.join(DECODE_ATTENTION)}"
        )
    return Calibration(
        params,
        str(meta.get("gpu", "")),
        str(meta.get("profile", "")),
        int(meta.get("rows", 0)),
        str(meta.get("steps", "")),
        attention,
        _noise_of(path, data.get("noise")),
    )


def _noise_of(path: Path, table: object) -> StepNoise | None:
    """The [noise.prefill] and [noise.decode] tables of a calibration file, checked."""
    if table is None:
        return None
    if not isinstance(table, dict) or set(table) != set(NOISE_PHASES):
        raise UserError(f"{path}: [noise] needs exactly the tables [noise.prefill] and "
                        "[noise.decode]")  # fmt: skip
    return StepNoise(*(_chain_of(path, phase, table[phase]) for phase in NOISE_PHASES))


def _chain_of(path: Path, phase: str, table: object) -> MarkovLognormal:
    where = f"{path}: noise.{phase}"
    allowed = {"kind", "log_means", "log_sigmas", "transitions"}
    if not isinstance(table, dict) or table.get("kind") != "markov_lognormal":
        raise UserError(f"{where}.kind: allowed: markov_lognormal")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}.{unknown[0]}: unknown field; allowed: {sorted(allowed)}")
    try:
        noise = MarkovLognormal(
            tuple(float(v) for v in table["log_means"]),
            tuple(float(v) for v in table["log_sigmas"]),
            tuple(tuple(float(v) for v in row) for row in table["transitions"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{where}: needs log_means, log_sigmas (lists of numbers) and transitions (a list "
            f"of lists): {exc!r}"
        ) from None
    problems = noise.problems()
    if problems:
        raise UserError(f"{where}: {problems[0]}")
    return noise


def builtin_calibrations() -> list[str]:
    """Names of the shipped calibrations (``builtin:NAME``)."""
    folder = resources.files("sim").joinpath(CALIBRATIONS_DIR)
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def resolve_calibration(spec: str, base_dir: str | Path = ".") -> Path:
    """The file of ``builtin:NAME`` or of a path relative to `base_dir`."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in builtin_calibrations():
            raise UserError(
                f"calibration '{spec}': no shipped calibration '{name}'; allowed: "
                f"{', '.join('builtin:' + n for n in builtin_calibrations())}"
            )
        return Path(str(resources.files("sim").joinpath(f"{CALIBRATIONS_DIR}/{name}.toml")))
    path = Path(spec)
    return path if path.is_absolute() else Path(base_dir) / path
