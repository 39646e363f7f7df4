"""``sim perf``: fit the step-time model to a measured profile, predict steps, report its error.

* ``sim perf fit PROFILE.csv --gpu h200 --out CALIB.toml``
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
    cross_validated_ms,
    error_table,
    fit,
    format_table,
    load_calibration,
    parse_fixed,
    predict_ms,
    read_profile,
    resolve_calibration,
    write_calibration,
)
from sim.errors import UserError
from sim.perf import PerfParams


def add(sub: argparse._SubParsersAction) -> None:
    """Register ``perf`` and its subcommands."""
    perf = sub.add_parser("perf", help="calibrate, run and check the step-time model")
    verbs = perf.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("fit", help="fit the roofline's parameters to a measured profile")
    p.add_argument("profile", help="profile CSV (columns of sim/data/h200_llama3-8b_bf16.csv)")
    _add_gpu_tp(p)
    _add_fix(p)
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


def _cmd_fit(args: argparse.Namespace) -> int:
    profile = read_profile(args.profile, args.gpu, args.tp)
    params = fit(profile, fixed=parse_fixed(args.fix))
    predicted = predict_ms(profile, params)
    gpus = ",".join(sorted(profile["gpu"].unique()))
    fixes = "".join(f" --fix {item}" for item in args.fix)
    note = f"python -m sim perf fit {args.profile} --gpu {gpus}{fixes} --out {args.out}"
    write_calibration(
        args.out, Calibration(params, gpus, Path(args.profile).name, len(profile)), note
    )
    print(_format_params(params))
    print(format_table("in-sample error of the fit", error_table(profile, predicted)))
    print(f"calibration written to {args.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    params = _params_from(args.calibration, args.gpu, args.tp, parse_fixed(args.fix))
    queries = read_profile(args.queries, args.gpu, args.tp, timed=False)
    out = pd.read_csv(args.queries)
    out["ms_predicted"] = np.round(predict_ms(queries, params), 4)
    out.to_csv(args.out, index=False)
    print(f"{len(out)} predictions written to {args.out}")
    return 0


def _params_from(spec: str | None, gpu: str | None, tp: int, fixed: dict) -> PerfParams:
    if spec is None:
        return PerfParams()
    if spec.endswith(".csv"):
        return fit(read_profile(spec, gpu, tp), fixed=fixed)
    return load_calibration(resolve_calibration(spec)).params


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.folds is not None and args.folds < 2:
        raise UserError(f"--folds {args.folds}: must be at least 2")
    profile = read_profile(args.profile, args.gpu, args.tp)
    print(f"{args.profile}: {len(profile)} rows; absolute percentage error of ms_median")
    default = predict_ms(profile, PerfParams())
    print(
        format_table("uncalibrated roofline (default efficiencies)", error_table(profile, default))
    )
    if args.calibration:
        params = load_calibration(resolve_calibration(args.calibration)).params
        table = error_table(profile, predict_ms(profile, params))
        print(format_table(f"calibration {args.calibration}, not refitted", table))
    fixed = parse_fixed(args.fix)
    full = fit(profile, fixed=fixed)
    print(
        format_table("fit on all rows, in sample", error_table(profile, predict_ms(profile, full)))
    )
    how = "leave-one-out" if args.folds is None else f"{args.folds}-fold"
    cv = cross_validated_ms(profile, args.folds, start=full, fixed=fixed)
    print(format_table(f"cross-validated ({how})", error_table(profile, cv)))
    for expr in args.holdout:
        test = _rows_where(profile, expr)
        if test.all() or not test.any():
            raise UserError(f"--holdout {expr!r}: selects {int(test.sum())} of {len(test)} rows")
        params = fit(profile[~test], start=full, fixed=fixed)
        held = profile[test]
        table = error_table(held, predict_ms(held, params))
        print(format_table(f"fit where not ({expr}), tested where it holds", table))
    return 0


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
