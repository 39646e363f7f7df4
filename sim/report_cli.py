"""``sim report DIR [DIR ...] --out R``: figures, CSVs, report.html and report.md of saved runs."""

from __future__ import annotations

import argparse


def add_report(sub: argparse._SubParsersAction) -> None:
    """Register the ``report`` command."""
    from sim.cli import add_target_margin_option

    p = sub.add_parser(
        "report",
        help="analyse saved run directories (no simulation) into figures and an HTML report",
    )
    p.add_argument("run_dirs", nargs="+", metavar="DIR", help="run directories (sim run / sweep)")
    p.add_argument("--out", required=True, help="folder for report.html, report.md and figures/")
    p.add_argument(
        "--window-s",
        type=float,
        help="length of the utilization timeline's windows, seconds (default: about 100 windows)",
    )
    add_target_margin_option(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report
    from sim.cli import check_target_margin
    from sim.errors import UserError
    from sim.rundir import check_out_dir

    if args.window_s is not None and args.window_s <= 0:
        raise UserError(f"--window-s {args.window_s}: must be > 0")
    target = check_target_margin(args.target_margin)
    check_out_dir(args.out)
    report = build_report(args.run_dirs, args.out, args.window_s, target)
    print(f"{len(report.figures)} figures (PNG, SVG, CSV) in {report.out_dir / 'figures'}/")
    for line in report.skipped:
        print(f"not drawn: {line}")
    print(f"report: {report.html} and {report.markdown}")
    return 0
