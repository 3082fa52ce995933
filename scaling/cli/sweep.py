"""`scaling sweep run|status|results`: run a sweep file, watch it, and collect its results."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from scaling.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help="run sweeps, show their status, collect results")
    sub = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _args: p.print_help() or 2)

    run = sub.add_parser("run", help="run what a sweep is missing (resumes, never reruns)")
    run.add_argument("spec", help="sweep file (TOML), e.g. sweeps/tiny.toml")
    run.add_argument("--out", help="sweep folder (default: runs/<sweep name>)")
    run.add_argument("--workers", type=int, help="local executor: runs at once (default 1)")
    run.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        help="where runs execute (default: the sweep file's [executor], else local)",
    )
    dist = run.add_argument_group("slurm / ray (override the sweep file's [executor])")
    dist.add_argument("--partition", help="slurm partition")
    dist.add_argument("--time", help='time limit per job: minutes or "[D-]HH:MM[:SS]"')
    dist.add_argument("--gpus-per-job", type=int, help="GPUs per run")
    dist.add_argument("--cpus-per-job", type=int, help="CPUs per run")
    dist.add_argument("--mem-gb", type=float, help="memory per job (slurm)")
    dist.add_argument("--retries", type=int, help="times a job whose process or node died reruns")
    dist.add_argument("--max-parallel", type=int, help="jobs at once")
    dist.add_argument("--ray-address", help='an existing Ray cluster ("auto", "host:6379")')
    run.add_argument(
        "--pack-size",
        help='runs of one shape trained together per job: "auto" (default) or K; 1: one run '
        "per job (overrides the sweep file's [executor] pack_size)",
    )
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

    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers", args.workers, "a positive integer")
    spec = load_spec(args.spec)
    executor = _executor_options(spec.executor, args)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    if args.dry_run:
        from scaling.sweep.packing import pack_policy
        from scaling.sweep.plan_table import estimate_throughput, format_plan, plan_packs

        runs = plan(spec)
        dtype = runs[0].config.train.compute_dtype if runs else "float32"
        tp = estimate_throughput(out, args.device, dtype)
        finished = {}
        if out.is_dir():  # a sweep under way: what is finished needs no time
            from scaling.sweep.store import TERMINAL_STATES, RunStore

            store = RunStore(out)
            states = {r.run_id: store.state(r.run_id) for r in runs}
            finished = {k: v for k, v in states.items() if v in TERMINAL_STATES}
        policy = pack_policy(executor)
        if args.device and executor.pack_size == "auto":  # estimate for that accelerator
            policy = replace(policy, accelerator=True, measurements=(), memory_bytes=None)
        packs = plan_packs(runs, policy, finished)
        print(format_plan(runs, spec.convention, tp, executor.workers, finished, packs, policy))
        return 0
    if args.device:
        raise ConfigError("--device", args.device, "only with --dry-run")
    from scaling.sweep.runner import run_sweep

    summary = run_sweep(spec, out, executor=executor, retry_failed=args.retry_failed)
    counts = "  ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    print(f"sweep {spec.name}: {len(summary.states)} runs in {out}  |  {counts}")
    return 0 if not summary.counts().get("failed") else 1


def _executor_options(base, args: argparse.Namespace):
    """The sweep file's [executor] with the flags given on the command line on top."""
    flags = {
        "kind": args.executor,
        "workers": args.workers,
        "partition": args.partition,
        "time": _time_flag(args.time),
        "gpus_per_job": args.gpus_per_job,
        "cpus_per_job": args.cpus_per_job,
        "mem_gb": args.mem_gb,
        "retries": args.retries,
        "max_parallel": args.max_parallel,
        "ray_address": args.ray_address,
        "pack_size": _pack_flag(args.pack_size),
    }
    try:
        return base.with_overrides(**flags)
    except ConfigError as e:  # name the flag, not the sweep-file key
        flag = "--" + e.field.removeprefix("executor.").replace("_", "-")
        flag = "--executor" if flag == "--kind" else flag
        raise ConfigError(flag, e.value, e.allowed) from e


def _pack_flag(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.strip().isdigit() else value


def _time_flag(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


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
