"""`scaling fit DATA`: fit a scaling law to a CSV, Parquet file or sweep folder."""

from __future__ import annotations

import argparse
import math
import sys

from scaling.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from scaling.laws.api import LAWS
    from scaling.laws.backtest import HOLDOUT_HELP

    p = subparsers.add_parser(
        "fit",
        help="fit a scaling law to a table of runs",
        description="Fit a scaling law (robust Huber loss on log residuals, multi-start L-BFGS). "
        "Default columns for sweep folders: eval_loss, N_nonembedding, D, C_kaplan.",
    )
    p.add_argument("data", metavar="DATA", help="CSV, Parquet file, or sweep folder")
    p.add_argument("--law", default="chinchilla", choices=LAWS, help="law to fit")
    p.add_argument("--loss", metavar="COL", help="loss column")
    p.add_argument("--params", metavar="COL", help="parameter-count column (N)")
    p.add_argument("--tokens", metavar="COL", help="training-token column (D)")
    p.add_argument("--flops", metavar="COL", help="training-FLOP column (C)")
    p.add_argument("--bootstrap", metavar="B", type=int, default=0, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--holdout", metavar="SPEC", help=HOLDOUT_HELP)
    p.add_argument("--window", type=float, help="isoflop: window width in decades of N")
    p.add_argument("--json", metavar="OUT", help="write the FitResult as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="write a figure")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.laws.api import fit_table
    from scaling.laws.tables import load_table

    if args.window is not None and not (math.isfinite(args.window) and args.window > 0):
        raise ConfigError("--window", args.window, "a positive number of decades")
    df = load_table(args.data)
    result = fit_table(
        df,
        args.law,
        loss=args.loss,
        params=args.params,
        tokens=args.tokens,
        flops=args.flops,
        bootstrap=args.bootstrap,
        seed=args.seed,
        holdout=args.holdout,
        window=args.window,
    )
    print(result.to_table())
    if args.json:
        result.save(args.json)
    if args.plot:
        from scaling.laws.api import prepare
        from scaling.plots.laws import figure_for

        data = prepare(
            df, args.law, loss=args.loss, params=args.params, tokens=args.tokens, flops=args.flops
        )
        fig = figure_for(result, data)
        fig.savefig(args.plot, dpi=120)
    if not result.converged:
        print("scaling fit: warning: " + "; ".join(result.flags), file=sys.stderr)
    return 0
