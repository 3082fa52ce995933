"""Compare the scaling laws of architecture variants (or objectives) in a sweep's results.

Per group of `--by` (default model.variant): the compute frontier (IsoFLOP minima), L(C) = E +
A_C/C^gamma fitted to it with bootstrap intervals over runs, the exponent's difference from the
baseline's, the compute multiplier at a stated loss L*, and L(N, D) where the design identifies
it (scaling.laws.compare). Prints a markdown table and writes OUT/compare.md, compare.json and
frontiers.png.

    .venv/bin/python analysis/compare_architectures.py runs/architectures --out docs/out
    .venv/bin/python analysis/compare_architectures.py runs/objectives --by train.objective \
        --baseline causal --offset zero
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from scaling.errors import ConfigError, ScalingError
from scaling.io import atomic_write_json, atomic_write_text
from scaling.laws.compare import FRONTIERS, OFFSETS, CompareOptions, compare, group_labels
from scaling.laws.tables import load_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="sweep folder, or CSV/Parquet with one row per run")
    ap.add_argument("--by", default="model.variant", help="column naming each run's group")
    ap.add_argument("--baseline", default=None, help="group the others are compared to")
    ap.add_argument("--loss", default="eval_loss")
    ap.add_argument("--flops", default="C_attention", help="compute column (the convention)")
    ap.add_argument("--params", default="N_nonembedding")
    ap.add_argument("--tokens", default="D")
    ap.add_argument("--frontier", default="isoflop", choices=FRONTIERS)
    ap.add_argument("--offset", default="shared", choices=OFFSETS, help="E: shared|free|zero")
    ap.add_argument("--target-loss", type=float, default=None, help="L* for the multipliers")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma-separated groups to keep (default all)")
    ap.add_argument("--no-nd", action="store_true", help="skip the L(N, D) fits")
    ap.add_argument("--out", default="analysis/out/compare", help="folder for table, JSON, PNG")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except ScalingError as e:
        print(f"compare_architectures: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    opts = CompareOptions(
        by=args.by,
        baseline=args.baseline,
        loss=args.loss,
        flops=args.flops,
        params=args.params,
        tokens=args.tokens,
        frontier=args.frontier,
        offset=args.offset,
        target_loss=args.target_loss,
        bootstrap=args.bootstrap,
        seed=args.seed,
        nd=not args.no_nd,
    )
    df = load_table(args.data)
    if args.only:
        keep = [g.strip() for g in args.only.split(",") if g.strip()]
        labels = group_labels(df, opts.by)
        unknown = sorted(set(keep) - set(labels.dropna()))
        if unknown:
            raise ConfigError("--only", unknown[0], ", ".join(sorted(set(labels.dropna()))))
        df = df[labels.isin(keep)].reset_index(drop=True)
    t0 = time.perf_counter()
    result = compare(df, opts)
    seconds = time.perf_counter() - t0
    table = result.markdown()
    print(table)
    print(f"(compared {len(result.groups)} groups of {len(df)} runs in {seconds:.1f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.md", table)
    atomic_write_json(out / "compare.json", {**result.to_dict(), "source": str(args.data)})
    from scaling.plots.compare import frontiers_figure

    by = group_labels(df, opts.by)
    runs = {
        str(g): np.column_stack([df.loc[by == g, opts.flops], df.loc[by == g, opts.loss]])
        for g in result.groups
    }
    fig = frontiers_figure(result, runs)
    fig.savefig(out / "frontiers.png", dpi=150)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'frontiers.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
