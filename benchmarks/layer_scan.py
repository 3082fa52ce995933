r"""Scan over layers or unroll them: compilation and step time of the training step, in one run.

For each shape, the step `scaling train` runs (`make_run_step`: on a CPU split into host
devices, the two-program step) is built twice from the same parameters: blocks unrolled (the
default) and blocks as one `jax.lax.scan` (`make_model(..., scan_layers=True)`). It prints each
one's first call (compilation plus one step; the persistent compilation cache is off here),
its step time (median of alternating, paired steps), the scan's speed (median of the paired
ratios unrolled/scanned step time: < 1, the scan's steps are slower), and the runs the scan
pays for (`scan pays`: runs shorter than compile time saved / step time lost; "never" when it
compiles no faster, "always" when its steps are no slower). The first losses must agree.

    .venv/bin/python benchmarks/layer_scan.py [--shapes 128:4:2,128:16:2,64:32:2]
        [--batch 64] [--context 256] [--vocab 256] [--reps 6] [--dtype float32]
    # on a GPU:
    python3 benchmarks/layer_scan.py --dtype bfloat16 --shapes 768:12:12,1024:24:16 \
        --batch 16 --context 1024 --vocab 50304
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

DEFAULT_SHAPES = "128:4:2,128:16:2,64:32:2"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="d_model:n_layers:n_heads,...")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--reps", type=int, default=6, help="paired steps per variant")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args(argv)

    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # compile time is measured
    from scaling import flops
    from scaling.model.shape import ModelShape

    print(f"runtime: {'; '.join(notes) or 'as is'}")
    dev = jax.devices()[0]
    print(f"{len(jax.devices())} x {dev.device_kind} ({dev.platform}), jax {jax.__version__}")
    print(
        f"{'shape':<12} {'N_total':>9} {'layers':>6}  {'first call s':>13}  "
        f"{'step ms':>15}  {'scan speed':>10}  {'scan pays':>14}"
    )
    print(f"{'':<12} {'':>9} {'':>6}  {'unroll':>6} {'scan':>6}  {'unroll':>7} {'scan':>7}")
    for spec in args.shapes.split(","):
        d, L, H = (int(x) for x in spec.split(":"))
        first, steps, losses = measure(d, L, H, args)
        step = {k: statistics.median(v) for k, v in steps.items()}
        speed = statistics.median(a / b for a, b in zip(steps[False], steps[True], strict=True))
        saved = (first[False] - step[False]) - (first[True] - step[True])
        lost = step[True] - step[False]
        pays = "always" if lost <= 0 else "never" if saved <= 0 else f"< {saved / lost:,.0f} steps"
        n = flops.param_counts(ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=args.vocab))
        print(
            f"{spec:<12} {n.N_total:9.3g} {L:>6}  {first[False]:6.1f} {first[True]:6.1f}  "
            f"{step[False] * 1e3:7.1f} {step[True] * 1e3:7.1f}  {speed:10.3f}  {pays:>14}",
            flush=True,
        )
        if abs(losses[True] - losses[False]) > 1e-3 * abs(losses[False]):
            print(f"  first losses differ: {losses}", file=sys.stderr)
            return 1
    return 0


def measure(d: int, L: int, H: int, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """(first-call seconds, paired step seconds, first loss), each keyed by scan_layers."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.data import train_batch
    from scaling.model.shape import ModelShape
    from scaling.train.config import RunConfig
    from scaling.train.mesh import make_mesh
    from scaling.train.optim import make_optimizer
    from scaling.train.step import init_params, make_run_step

    shape = ModelShape(
        d_model=d, n_layers=L, n_heads=H, vocab_size=args.vocab, context=args.context
    )
    config = RunConfig(model=shape).with_overrides([f"train.batch_size={args.batch}"])
    run_mesh = make_mesh(config.mesh, args.batch)
    rep, shard = run_mesh.replicated(), run_mesh.batch()
    tx = make_optimizer(config)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    tokens = np.random.default_rng(0).integers(0, args.vocab, 4_000_000).astype(np.int32)

    def batch(i: int) -> jax.Array:
        b = train_batch(tokens, seed=0, step=i, batch_size=args.batch, context=args.context)
        return jax.device_put(b, shard)

    variants, first, losses = {}, {}, {}
    for scan in (False, True):
        graphdef, params = init_params(shape, 0, dtype, scan_layers=scan)
        step = make_run_step(graphdef, tx, run_mesh, {"params": rep, "opt_state": rep})
        state = jax.device_put((params, tx.init(params)), rep)
        b = batch(0)
        t0 = time.perf_counter()
        *state, metrics = step(*state, b, np.float32(1e-3))
        losses[scan] = float(metrics["loss"])
        first[scan] = time.perf_counter() - t0
        variants[scan] = [step, state]
    steps: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.reps):
        for scan in (False, True) if i % 2 == 0 else (True, False):
            step, state = variants[scan]
            b = batch(1 + i)
            t0 = time.perf_counter()
            *state, metrics = step(*state, b, np.float32(1e-3))
            jax.block_until_ready(metrics["loss"])
            steps[scan].append(time.perf_counter() - t0)
            variants[scan][1] = state
    return first, steps, losses


if __name__ == "__main__":
    sys.exit(main())
