"""Aggregate training throughput of K packed models against the same K runs one after another.

For each size and K it times the step `train_packed` runs (`PackedState.step`: on accelerators
one jitted, vmapped call over K stacked models; on CPUs one call per group of one member a
device; same shardings; `calls` in the table) and the step `train` runs for one model. K runs
one after another each run at the single-model speed, so their aggregate tokens/s is the single
step's tokens/s. The two steps are timed in turns, 3 rounds each, in the same process, and each
keeps its best round (`time_paired`): other load on a shared machine disturbs the best round
less, and a drift in the machine's speed falls on both sides of the ratio. MFU uses the
`attention` FLOP convention of `scaling.flops` and the peak of `scaling.train.throughput`
(measured on CPUs, the published table peak on accelerators). K = 1 is train()'s step
(`train_packed` hands a pack of one to `train`), so its speedup is 1 by construction. Host
batches are transferred every step, as in training. `wall s`: the point's whole time (set-up,
compilation, timing).

    .venv/bin/python benchmarks/packing.py [--quick] [--seconds 4] [--d-models 64,128,256]
        [--ks 1,2,4,8,16] [--batch 8] [--context 256] [--dtype float32] [--out rows.json]
        [--record] [--group-size N]
    # other shapes: --shapes d_model:n_layers:n_heads,...  (e.g. 768:12:12)

`--record` caches the measured speedups for the sweep runner's "auto" pack size
(scaling.sweep.packing: it packs a shape only where a measurement on this machine, at the
nearest measured size, shows at least a 1.2x aggregate speedup; without one a CPU runs alone).
On a CPU whose load average exceeds 3/4 of its cores when it starts, it records nothing (ratios
are noise); during the run its own work keeps the cores busy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

# GPT-2-like shapes of benchmarks/train_throughput.py: d_model -> (n_layers, n_heads).
DEPTH = {64: (2, 2), 128: (4, 2), 256: (6, 4), 384: (6, 6), 512: (8, 8)}
VOCAB = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 4, context 128, 3 s per point")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per point")
    p.add_argument("--d-models", default="64,128,256")
    p.add_argument("--shapes", default="", help="d_model:n_layers:n_heads,... (overrides)")
    p.add_argument("--ks", default="1,2,4,8,16", help="pack sizes; 'none': sequential only")
    p.add_argument("--batch", type=int, default=8, help="sequences per model per step")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab", type=int, default=VOCAB)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument(
        "--group-size", type=int, default=None, help="members per call (default: the device's)"
    )
    p.add_argument("--out", default="", help="write raw rows (JSON) here")
    p.add_argument("--no-tuning", action="store_true", help="SCALING_RUNTIME=off")
    p.add_argument(
        "--record", action="store_true", help="cache the speedups for the sweep's auto pack size"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.context, args.seconds = 4, 128, 3.0
    return args


def shapes_of(args: argparse.Namespace) -> list[Any]:
    from scaling.model.shape import ModelShape

    if args.shapes:
        triples = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",") if s]
    else:
        triples = [(d, *DEPTH[d]) for d in (int(x) for x in args.d_models.split(",") if x)]
    return [
        ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=args.vocab, context=args.context)
        for d, L, H in triples
    ]


def warm(run_one) -> None:
    """Two steps, waited for: compilation and first-touch allocation are not timed."""
    import jax

    for _ in range(2):
        jax.block_until_ready(run_one())


def time_round(run_one, seconds: float, min_steps: int = 2) -> float:
    """Seconds per step over one round of at least `min_steps` steps and `seconds` of wall time;
    steps are dispatched asynchronously (waited for every 4, as the training loop syncs)."""
    import jax

    n, t0 = 0, time.perf_counter()
    while True:
        out = run_one()
        n += 1
        if n >= min_steps and time.perf_counter() - t0 >= seconds:
            break
        if n % 4 == 0:
            jax.block_until_ready(out)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def time_paired(steppers: list, seconds: float, rounds: int = 3) -> list[float]:
    """Seconds per step of each stepper: `rounds` rounds of each in turn, the best of each (the
    one least disturbed by other load). Taking turns puts a drift in the machine's speed (other
    load, clocks) on every stepper alike, so their ratio is measured in one stretch of time."""
    for run_one in steppers:
        warm(run_one)
    best = [math.inf] * len(steppers)
    for _ in range(rounds):
        for i, run_one in enumerate(steppers):
            best[i] = min(best[i], time_round(run_one, seconds / rounds))
    return best


def single_stepper(shape: Any, batch: int, dtype: str):
    """A function running one step of train()'s step for one model (same shardings as the
    loop), returning its loss."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.train.config import RunConfig
    from scaling.train.mesh import make_mesh
    from scaling.train.optim import make_optimizer
    from scaling.train.step import init_params, make_run_step

    run_mesh = make_mesh(RunConfig().mesh, batch)
    rep, shard = run_mesh.replicated(), run_mesh.batch()
    graphdef, params = init_params(shape, 0, jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    tx = make_optimizer(RunConfig())
    state = jax.device_put({"p": params, "o": tx.init(params)}, rep)
    step = make_run_step(graphdef, tx, run_mesh, {"params": rep, "opt_state": rep})
    tokens = np.random.default_rng(0).integers(0, shape.vocab_size, (batch, shape.context + 1))
    tokens = tokens.astype(np.int32)

    def run_one():
        state["p"], state["o"], out = step(
            state["p"], state["o"], jax.device_put(tokens, shard), np.float32(1e-3)
        )
        return out["loss"]

    return run_one


def packed_stepper(shape: Any, K: int, batch: int, dtype: str, group_size: int | None = None):
    """A function running one step of train_packed()'s step for K models (`PackedState`: its
    groups, shardings and jitted calls), returning their losses."""
    import jax.numpy as jnp
    import numpy as np

    from scaling.train.config import RunConfig
    from scaling.train.optim import make_optimizer
    from scaling.train.packed import PackedState
    from scaling.train.step import init_params

    jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    tx = make_optimizer(RunConfig())
    members = [init_params(shape, k, jdtype) for k in range(K)]
    params = [p for _, p in members]
    state = PackedState(
        members[0][0], tx, params, [tx.init(p) for p in params], batch, group_size=group_size
    )
    del members, params
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, shape.vocab_size, (K, batch, shape.context + 1)).astype(np.int32)
    lr = np.full((K,), 1e-3, np.float32)
    active = np.ones((K,), bool)

    def run_one():
        return [loss for _, loss in state.step(tokens, lr, active)]

    return run_one


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import os

    if args.no_tuning:
        os.environ["SCALING_RUNTIME"] = "off"
    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    import jax

    from scaling import flops
    from scaling.io import atomic_write_json
    from scaling.train.packed import member_groups
    from scaling.train.runtime import enable_compilation_cache
    from scaling.train.throughput import MFU_CONVENTION, device_peak

    enable_compilation_cache()
    cores, load_start = os.cpu_count() or 1, os.getloadavg()[0]
    peak = device_peak(args.dtype)
    dev = jax.devices()[0]
    print(f"runtime: {'; '.join(notes) or 'as is'}")
    if dev.platform == "gpu":
        from scaling.model.transformer import cudnn_attention_available

        fused = args.dtype == "bfloat16" and cudnn_attention_available()
        print("attention:", "cuDNN fused (flash)" if fused else "the model's own (XLA)")
    print(
        f"devices: {len(jax.devices())} x {dev.device_kind} ({dev.platform}); peak "
        f"{peak.flops / 1e9:,.1f} GFLOP/s ({peak.source}); jax {jax.__version__}; "
        f"{args.batch} x {args.context} tokens per model per step, {args.dtype}",
        flush=True,
    )
    ks = [] if args.ks == "none" else [int(k) for k in args.ks.split(",") if k]
    print(
        f"{'d_model':>7} {'layers':>6} {'N_total':>9} {'K':>3} {'calls':>5} {'packed tok/s':>13} "
        f"{'seq tok/s':>11} {'speedup':>7} {'MFU pack':>8} {'MFU seq':>8} {'wall s':>6}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for shape in shapes_of(args):
        fpt = flops.flops_per_token(shape, MFU_CONVENTION)
        n_total = flops.param_counts(shape).N_total
        tokens = args.batch * shape.context
        run_single = single_stepper(shape, args.batch, args.dtype)
        for K in ks or [None]:
            t0 = time.perf_counter()
            if K is None or K == 1:  # train_packed hands a pack of one to train()
                K = 1
                single_s = packed_s = time_paired([run_single], args.seconds)[0]
            else:
                try:
                    run_packed = packed_stepper(shape, K, args.batch, args.dtype, args.group_size)
                    single_s, packed_s = time_paired([run_single, run_packed], 2 * args.seconds)
                    del run_packed
                except Exception as e:  # e.g. out of memory at a large K: report, go on
                    msg = str(e).splitlines()[0][:120]
                    print(f"{shape.d_model:7d} {shape.n_layers:6d} {'':9} {K:3d} failed: {msg}")
                    continue
            wall = time.perf_counter() - t0
            seq_tps = tokens / single_s
            tps = K * tokens / packed_s
            calls = len(member_groups(K, jax.local_devices(), args.group_size)) if K > 1 else 1
            row = {
                "d_model": shape.d_model,
                "n_layers": shape.n_layers,
                "n_heads": shape.n_heads,
                "context": shape.context,
                "batch_per_model": args.batch,
                "N_total": n_total,
                "K": K,
                "calls_per_step": calls,
                "packed": bool(ks),
                "dtype": args.dtype,
                "packed_step_s": packed_s,
                "single_step_s": single_s,
                "packed_tokens_per_s": tps,
                "sequential_tokens_per_s": seq_tps,
                "speedup": tps / seq_tps,
                "point_wall_s": wall,
                "mfu_packed": tps * fpt / peak.flops,
                "mfu_sequential": seq_tps * fpt / peak.flops,
                "peak_flops": peak.flops,
                "peak_source": peak.source,
                "device": dev.device_kind,
                "platform": dev.platform,
                "n_devices": len(jax.devices()),
            }
            rows.append(row)
            print(
                f"{shape.d_model:7d} {shape.n_layers:6d} {n_total:9.3g} {K:3d} {calls:5d} "
                f"{tps:13,.0f} "
                f"{seq_tps:11,.0f} {tps / seq_tps:7.2f} {row['mfu_packed']:8.3f} "
                f"{row['mfu_sequential']:8.3f} {wall:6.1f}",
                flush=True,
            )
            if args.out:
                atomic_write_json(args.out, rows)
    # Judged at the start only: during the run this benchmark itself keeps every core busy.
    busy = dev.platform == "cpu" and load_start > 0.75 * cores
    if args.record and args.group_size is not None:  # the sweep packs with the default groups
        print("not recorded: --group-size changes the step the sweep's packs run")
    elif args.record and rows and busy:  # other load makes packed/sequential ratios noise
        print(
            f"not recorded: this CPU was busy (load average {load_start:.1f} on {cores} cores "
            f"at the start); rerun on a quiet machine"
        )
    elif args.record and rows:
        from scaling.sweep.packing import MEASUREMENTS_FILE, record_measurements
        from scaling.train.throughput import cache_dir

        record_measurements(rows)
        print(f"recorded {len(rows)} speedups in {cache_dir() / MEASUREMENTS_FILE}")
    if not math.isfinite(peak.flops):
        print(f"note: no peak for this device ({peak.source}); MFU is nan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
