"""`scaling report SWEEP_DIR [--out DIR]`: fits, figures and a written report of a sweep."""

from __future__ import annotations

import argparse

from scaling.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="fit a sweep (Chinchilla approaches 1-3) and write its report (HTML, Markdown, PNG)",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder (--out of sweep run)")
    p.add_argument("--out", help="report folder (default: SWEEP_DIR/report)")
    p.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples for intervals (default 200)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise ConfigError("--bootstrap", args.bootstrap, "a non-negative integer")
    from scaling.report import build_report

    path = build_report(args.sweep_dir, args.out, bootstrap=args.bootstrap, seed=args.seed)
    print(f"report: {path}")
    print(f"        {path.with_name('report.md')} (Markdown), figures in {path.parent / 'figures'}")
    return 0
