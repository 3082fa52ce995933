"""`scaling train --config FILE.toml [--set key=value ...] --out DIR [--resume]`.

Before jax starts, the process is set up for fast CPU training (allocator, CPU split into
host devices; see `scaling.train.runtime`) and says so; `--no-tuning` leaves it alone.
One run on several processes (hosts): launched by `srun -n N` (SLURM), on a multi-host TPU
slice, or with `--coordinator HOST:PORT --num-processes N --process-id I` on each process, it
calls jax.distributed.initialize first (see `scaling.train.distributed`); process 0 writes.
Exit codes: 0 done, 3 diverged, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError

EXIT_DIVERGED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one model (resumable); writes config, status, metrics, checkpoints",
        description="Train one model as configured; built-in defaults without --config.",
    )
    p.add_argument("--config", type=Path, help="run config (TOML: [model], [optim], ...)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config value, e.g. --set optim.lr=3e-3 (TOML literal); repeatable",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-tuning",
        action="store_true",
        help="leave the allocator and CPU device split alone (also SCALING_RUNTIME=off)",
    )
    g = p.add_argument_group(
        "several processes (one run over several hosts; SLURM and TPU slices are detected)"
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes training this run")
    g.add_argument("--process-id", type=int, metavar="I", help="this process: 0 .. N-1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.train import distributed
    from scaling.train.config import RunConfig
    from scaling.train.metrics import CONFIG_FILE, STATUS_FILE

    plan = distributed.plan_launch(
        coordinator=getattr(args, "coordinator", None),
        num_processes=getattr(args, "num_processes", None),
        process_id=getattr(args, "process_id", None),
    )

    config = RunConfig.from_toml(args.config) if args.config else RunConfig()
    if args.overrides:
        config = config.with_overrides(args.overrides)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", str(out), "a folder (this is a file)")
    if not args.resume and any((out / f).exists() for f in (CONFIG_FILE, STATUS_FILE)):
        raise ConfigError("--out", str(out), "a new or empty folder, or --resume to continue it")

    import os

    if args.no_tuning:
        os.environ["SCALING_RUNTIME"] = "off"
    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    if plan.multiprocess:
        distributed.initialize(plan)  # before anything else uses jax
        import jax

        notes.append(f"process {jax.process_index()} of {jax.process_count()} ({plan.why})")
        distributed.barrier("scaling train: --out checked")  # no process writes before
    print(f"scaling train: runtime: {'; '.join(notes) or 'as is'}", file=sys.stderr)

    from scaling.train import train

    outcome = train(config, out, resume=True, progress=not args.no_progress)
    if distributed.is_writer():  # one summary for a run of several processes
        print(summary_line(outcome))
    return EXIT_DIVERGED if outcome.state == "diverged" else 0


def summary_line(outcome: Any) -> str:
    """One line: state, step, tokens, final losses, throughput, where the run is."""
    head = f"scaling train: {outcome.state} at step {outcome.step:,} ({outcome.tokens:,} tokens)"
    r = outcome.final or {}
    parts = []
    if r.get("eval_loss") is not None:
        se = r.get("eval_loss_se")
        parts.append(f"eval loss {r['eval_loss']:.4f}" + (f" ± {se:.4f}" if se else ""))
    if r.get("train_loss") is not None:
        parts.append(f"train loss {r['train_loss']:.4f}")
    if r.get("tokens_per_s"):
        parts.append(f"{r['tokens_per_s']:,.0f} tok/s")
    if r.get("mfu") is not None:
        parts.append(f"MFU {r['mfu']:.2f}")
    if r.get("wall_time") is not None:
        parts.append(f"{r['wall_time']:.1f} s")
    for key, label in (("entropy_rate", "entropy rate"), ("unigram_entropy", "unigram entropy")):
        if outcome.data.get(key) is not None:
            parts.append(f"data {label} {outcome.data[key]:.4f}")
    if outcome.reason:
        parts.append(outcome.reason)
    return f"{head}: {', '.join(parts)}; in {outcome.run_dir}"
