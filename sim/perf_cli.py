"""``sim perf``: fit the step-time model to a measured profile, predict steps, report its error.

* ``sim perf fit PROFILE.csv --gpu h200 --out CALIB.toml``
* ``sim perf fit --steps STEPS.csv --gpu h200 --model llama-3-8b --out CALIB.toml`` (host time
  and noise from a live step log, over a GPU calibration)
* ``sim perf predict --gpu h200 [--calibration CALIB.toml | PROFILE.csv] --queries Q.csv
  --out P.csv``
* ``sim perf validate PROFILE.csv --gpu h200 [--folds K] [--holdout EXPR] [--calibration C]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sim.calibration import (
    Calibration,
    builtin_calibrations,
    cross_validated_ms,
    error_table,
    fit,
    format_table,
    held_parameters,
    load_calibration,
    predict_ms,
    read_profile,
    resolve_calibration,
    write_calibration,
)
from sim.catalog import builtin_accelerators, builtin_models
from sim.errors import UserError
from sim.perf import DECODE_ATTENTION, PerfParams


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``perf`` and its subcommands."""
    perf = sub.add_parser("perf", help="calibrate, run and check the step-time model")
    verbs = perf.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser(
        "fit",
        help="fit the roofline's parameters to a measured profile, or host time and "
        "noise to a live step log",
    )
    p.add_argument(
        "profile", nargs="?", help="profile CSV (columns of sim/data/h200_llama3-8b_bf16.csv)"
    )
    p.add_argument(
        "--steps",
        help="instead of a profile: a live step log (CSV with start_s,end_s,kind,batch,tokens,"
        "max_context,sum_context) or a simulator steps.parquet; fits host time and noise",
    )
    _add_gpu_tp(p)
    _add_fix(p)
    p.add_argument("--model", help="with --steps: the catalogue model the engine served")
    p.add_argument(
        "--calibration",
        help="with --steps: the GPU calibration to add host time to, TOML or builtin:NAME "
        "(default: the shipped calibration of --gpu, else the uncalibrated roofline)",
    )
    p.add_argument(
        "--decode-attention",
        choices=DECODE_ATTENTION,
        default="summed",
        help="with --steps: how the engine computes decode attention (padded: over the batch "
        "padded to its longest context)",
    )
    p.add_argument("--out", required=True, help="calibration TOML to write")
    p.set_defaults(func=_cmd_fit)

    p = verbs.add_parser("predict", help="predict step times of query rows")
    _add_gpu_tp(p)
    p.add_argument(
        "--calibration",
        help="calibration TOML, builtin:NAME, or a profile CSV to fit first "
        "(default: the uncalibrated roofline)",
    )
    _add_fix(p)
    p.add_argument("--queries", required=True, help="CSV of profile rows without timings")
    p.add_argument("--out", required=True, help="CSV to write: the queries plus ms_predicted")
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("validate", help="print the error tables of the model on a profile")
    p.add_argument("profile", help="profile CSV with measured ms_median")
    _add_gpu_tp(p)
    _add_fix(p)
    p.add_argument("--folds", type=int, help="k-fold cross-validation (default: leave-one-out)")
    p.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="EXPR",
        help="also fit on the rows where the pandas expression is false and test on the rest, "
        "e.g. \"phase == 'dense'\" (repeatable)",
    )
    p.add_argument(
        "--calibration",
        help="also show the error of this calibration (TOML or builtin:NAME) without refitting",
    )
    p.set_defaults(func=_cmd_validate)


def _add_gpu_tp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", help="catalogue GPU id for rows without a gpu column (h200, ...)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallelism for rows without tp")


def _add_fix(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a parameter at a separately measured value instead of fitting it, e.g. "
        "memory_efficiency=0.827 (repeatable)",
    )
    p.add_argument(
        "--free",
        action="append",
        default=[],
        metavar="NAME",
        help="fit a parameter held by default (step_overhead_s, gemm_overhead_s, "
        "memory_efficiency where measured; docs/fidelity.md) (repeatable)",
    )


def _held(args: argparse.Namespace, profile: pd.DataFrame) -> dict[str, float]:
    held = held_parameters(set(profile["gpu"]), args.fix, args.free)
    print("held: " + (", ".join(f"{k}={v:g}" for k, v in held.items()) or "nothing"))
    return held


def _cmd_fit(args: argparse.Namespace) -> int:
    if (args.profile is None) == (args.steps is None):
        raise UserError("perf fit: give a profile CSV or --steps STEPS (one of them)")
    if args.steps is not None:
        return _fit_steps(args)
    for flag in ("model", "calibration"):
        if getattr(args, flag) is not None:
            raise UserError(f"perf fit: --{flag} goes with --steps")
    profile = read_profile(args.profile, args.gpu, args.tp)
    held = _held(args, profile)
    params = fit(profile, fixed=held)
    predicted = predict_ms(profile, params)
    gpus = ",".join(sorted(profile["gpu"].unique()))
    flags = "".join(f" --fix {item}" for item in args.fix)
    flags += "".join(f" --free {name}" for name in args.free)
    note = f"python -m sim perf fit {args.profile} --gpu {gpus}{flags} --out {args.out}\n"
    note += "held: " + ", ".join(f"{k} = {v:g}" for k, v in held.items())
    write_calibration(
        args.out, Calibration(params, gpus, Path(args.profile).name, len(profile)), note
    )
    print(_format_params(params))
    print(format_table("in-sample error of the fit", error_table(profile, predicted)))
    print(f"calibration written to {args.out}")
    return 0


def _fit_steps(args: argparse.Namespace) -> int:
    from sim.live_fit import fit_live, format_live_fit
    from sim.step_log import read_step_log

    if args.fix or args.free:
        raise UserError("perf fit --steps: --fix and --free apply to profile fits only")
    gpus, models = builtin_accelerators(), builtin_models()
    if args.gpu not in gpus:
        raise UserError(f"perf fit --steps: --gpu {args.gpu}: allowed: {', '.join(sorted(gpus))}")
    if args.model not in models:
        raise UserError(
            f"perf fit --steps: --model {args.model}: allowed: {', '.join(sorted(models))}"
        )
    log = read_step_log(args.steps)
    source, base = _gpu_calibration(args.calibration, args.gpu)
    fitted = fit_live(log, base, models[args.model], gpus[args.gpu], args.tp, args.decode_attention)
    note = (
        f"python -m sim perf fit --steps {args.steps} --gpu {args.gpu} --model {args.model} "
        f"--tp {args.tp} --decode-attention {args.decode_attention} --out {args.out}\n"
        f"GPU parameters from {source}; host terms and noise from {log.path.name}"
    )
    write_calibration(args.out, fitted.calibration, note)
    print(f"{args.steps}: {len(log)} steps; GPU part from {source}")
    print(format_live_fit(log, fitted))
    print(f"calibration written to {args.out}")
    return 0


def _gpu_calibration(spec: str | None, gpu: str) -> tuple[str, Calibration]:
    """(name, calibration): `spec`'s, else the one shipped for `gpu`, else the plain roofline."""
    if spec is not None:
        return spec, load_calibration(resolve_calibration(spec))
    shipped = {
        f"builtin:{name}": load_calibration(resolve_calibration(f"builtin:{name}"))
        for name in builtin_calibrations()
    }
    for_gpu = {name: c for name, c in shipped.items() if c.gpu == gpu and not c.steps}
    if len(for_gpu) > 1:
        raise UserError(
            f"perf fit --steps: several shipped calibrations for {gpu} ({', '.join(for_gpu)}); "
            f"choose one with --calibration"
        )
    if not for_gpu:
        return "the uncalibrated roofline", Calibration(PerfParams(), gpu, "", 0)
    return next(iter(for_gpu.items()))


def _cmd_predict(args: argparse.Namespace) -> int:
    params = _params_from(args)
    queries = read_profile(args.queries, args.gpu, args.tp, timed=False)
    out = pd.read_csv(args.queries)
    out["ms_predicted"] = np.round(predict_ms(queries, params), 4)
    out.to_csv(args.out, index=False)
    print(f"{len(out)} predictions written to {args.out}")
    return 0


def _params_from(args: argparse.Namespace) -> PerfParams:
    spec = args.calibration
    if spec is None:
        return PerfParams()
    if spec.endswith(".csv"):
        profile = read_profile(spec, args.gpu, args.tp)
        return fit(profile, fixed=_held(args, profile))
    return load_calibration(resolve_calibration(spec)).params


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.folds is not None and args.folds < 2:
        raise UserError(f"--folds {args.folds}: must be at least 2")
    profile = read_profile(args.profile, args.gpu, args.tp)
    holdouts = {expr: _held_out_rows(profile, expr) for expr in args.holdout}  # before any fit
    print(f"{args.profile}: {len(profile)} rows; absolute percentage error of ms_median")
    default = predict_ms(profile, PerfParams())
    print(
        format_table("uncalibrated roofline (default efficiencies)", error_table(profile, default))
    )
    if args.calibration:
        params = load_calibration(resolve_calibration(args.calibration)).params
        table = error_table(profile, predict_ms(profile, params))
        print(format_table(f"calibration {args.calibration}, not refitted", table))
    fixed = _held(args, profile)
    full = fit(profile, fixed=fixed)
    print(
        format_table("fit on all rows, in sample", error_table(profile, predict_ms(profile, full)))
    )
    how = "leave-one-out" if args.folds is None else f"{args.folds}-fold"
    cv = cross_validated_ms(profile, args.folds, start=full, fixed=fixed)
    print(format_table(f"cross-validated ({how})", error_table(profile, cv)))
    for expr, test in holdouts.items():
        params = fit(profile[~test], start=full, fixed=fixed)
        held = profile[test]
        table = error_table(held, predict_ms(held, params))
        print(format_table(f"fit where not ({expr}), tested where it holds", table))
    return 0


def _held_out_rows(profile: pd.DataFrame, expr: str) -> np.ndarray:
    """The rows `expr` holds out: some, not all (UserError otherwise)."""
    test = _rows_where(profile, expr)
    if test.all() or not test.any():
        raise UserError(f"--holdout {expr!r}: selects {int(test.sum())} of {len(test)} rows")
    return test


def _rows_where(profile: pd.DataFrame, expr: str) -> np.ndarray:
    try:
        mask = profile.eval(expr)
    except Exception as exc:  # pandas raises many types for a bad expression
        raise UserError(
            f"--holdout {expr!r}: not a valid expression over the columns: {exc}"
        ) from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise UserError(f"--holdout {expr!r}: must give true or false per row")
    return mask.to_numpy()


def _format_params(params: PerfParams) -> str:
    lines = ["fitted parameters"]
    for name in PerfParams.names():
        lines.append(f"  {name:<22} {getattr(params, name):.4g}")
    return "\n".join(lines)
