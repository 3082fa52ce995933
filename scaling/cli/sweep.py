"""`scaling sweep run|status|results`: run a sweep file, watch it, and collect its results."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help="run sweeps, show their status, collect results")
    sub = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _args: p.print_help() or 2)

    run = sub.add_parser("run", help="run what a sweep is missing (resumes, never reruns)")
    run.add_argument("spec", help="sweep file (TOML), e.g. sweeps/tiny.toml")
    run.add_argument("--out", help="sweep folder (default: runs/<sweep name>)")
    run.add_argument("--workers", type=int, default=1, help="runs at once (processes)")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    run.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    run.add_argument(
        "--device", help="estimate wall time for this accelerator (e.g. H100) in --dry-run"
    )
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="counts by state and a row per run")
    status.add_argument("dir", help="sweep folder")
    status.set_defaults(func=_status)

    results = sub.add_parser("results", help="the results table (one row per evaluation)")
    results.add_argument("dir", help="sweep folder")
    results.add_argument("--out", help="write FILE.csv or FILE.parquet (default: print CSV)")
    results.add_argument("--final", action="store_true", help="only each run's last evaluation")
    results.add_argument("--include-diverged", action="store_true", help="keep diverged runs")
    results.set_defaults(func=_results)


def _run(args: argparse.Namespace) -> int:
    from scaling.sweep.designs import plan
    from scaling.sweep.spec import load_spec

    if args.workers < 1:
        raise ConfigError("--workers", args.workers, "a positive integer")
    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    if args.dry_run:
        from scaling.sweep.plan_table import estimate_throughput, format_plan

        runs = plan(spec)
        dtype = runs[0].config.train.compute_dtype if runs else "float32"
        tp = estimate_throughput(out, args.device, dtype)
        finished = {}
        if out.is_dir():  # a sweep under way: what is finished needs no time
            from scaling.sweep.store import TERMINAL_STATES, RunStore

            store = RunStore(out)
            states = {r.run_id: store.state(r.run_id) for r in runs}
            finished = {k: v for k, v in states.items() if v in TERMINAL_STATES}
        print(format_plan(runs, spec.convention, tp, args.workers, finished))
        return 0
    if args.device:
        raise ConfigError("--device", args.device, "only with --dry-run")
    from scaling.sweep.runner import run_sweep

    summary = run_sweep(spec, out, workers=args.workers, retry_failed=args.retry_failed)
    counts = "  ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    print(f"sweep {spec.name}: {len(summary.states)} runs in {out}  |  {counts}")
    return 0 if not summary.counts().get("failed") else 1


def _status(args: argparse.Namespace) -> int:
    from scaling.sweep.status import format_status, sweep_status

    print(format_status(sweep_status(args.dir)))
    return 0


def _results(args: argparse.Namespace) -> int:
    from scaling.sweep.results import load_results, write_results

    df = load_results(
        args.dir, view="final" if args.final else "all", include_diverged=args.include_diverged
    )
    if args.out:
        write_results(df, args.out)
        print(f"{len(df)} rows -> {args.out}")
    else:
        print(df.to_csv(index=False), end="")
    return 0
