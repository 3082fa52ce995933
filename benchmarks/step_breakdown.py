r"""Where a train step's time goes: the step against the parts it is made of, in one process.

For one shape (or a pack of K of it, vmapped as `train_packed` runs it) it times, each jitted
on its own: the whole step (`train_step`: gradient, AdamW update, metrics); the loss and its
gradient; the loss alone (forward); the loss and gradient with a 128-token vocabulary (the
difference is what the output layer and the cross-entropy over the full vocabulary cost); and
the optimizer update alone on fixed gradients. Each is printed in ms per step, as a share of the
whole step, and per member for a pack. Leaving a part out and taking differences is how time is
placed inside a program without a profiler (the GPU machines lent here have no hardware
counters on their gVisor runtime). Arrays live on the first device with no batch split, as on
one GPU; a CPU split into host devices trains faster than this (benchmarks/train_throughput.py).

    .venv/bin/python benchmarks/step_breakdown.py [--shape 768:12:12] [--vocab 50304]
        [--context 1024] [--batch 16] [--k 1] [--dtype bfloat16] [--seconds 2]
    # on a GPU, the two cases issue 8 is about (~3 min with compilation):
    python3 benchmarks/step_breakdown.py --dtype bfloat16 --shape 768:12:12 --vocab 50304 \
        --context 1024 --batch 16
    python3 benchmarks/step_breakdown.py --dtype bfloat16 --shape 256:4:4 --vocab 8192 \
        --context 512 --batch 16 --k 16
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

SMALL_VOCAB = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="128:4:2", help="d_model:n_layers:n_heads")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="sequences per model per step")
    p.add_argument("--k", type=int, default=1, help="models packed into one vmapped step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per part")
    args = p.parse_args(argv)
    if args.k < 1:
        p.error(f"--k must be >= 1, got {args.k}")
    return args


def seconds_per_call(run, seconds: float) -> float:
    """Two warm-up calls (compilation), then 3 rounds of at least 2 calls and seconds/3 each:
    the best round's seconds per call (the round least disturbed by other load)."""
    import jax

    for _ in range(2):
        jax.block_until_ready(run())
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < seconds / 3:
            out = run()
            n += 1
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def parts(shape: Any, args: argparse.Namespace) -> dict[str, Any]:
    """name -> a call of that part's jitted program, on K stacked members. The step and the
    update donate their parameters and optimizer state and carry them on, as training does."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.train.config import RunConfig
    from scaling.train.optim import make_optimizer
    from scaling.train.packed import stack_trees
    from scaling.train.step import init_params, loss_fn, train_step

    cdtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    tx = make_optimizer(RunConfig())
    K, B, T = args.k, args.batch, shape.context
    rng = np.random.default_rng(0)

    def stack(trees: list[Any]) -> Any:  # one model: as train() holds it; a pack: stacked
        return jax.device_put(trees[0] if K == 1 else stack_trees(trees))

    def setup(s: Any) -> tuple[Any, Any, Any, Any]:
        members = [init_params(s, k, cdtype) for k in range(K)]
        params = stack([p for _, p in members])
        opt = stack([tx.init(p) for _, p in members])
        tokens = rng.integers(0, s.vocab_size, (K, B, T + 1)).astype(np.int32)
        return members[0][0], params, opt, jax.device_put(tokens[0] if K == 1 else tokens)

    graphdef, params, opt, tokens = setup(shape)
    small = dataclasses.replace(shape, vocab_size=SMALL_VOCAB)
    graphdef_s, params_s, _, tokens_s = setup(small)
    lr = jnp.float32(1e-3) if K == 1 else jnp.full((K,), 1e-3, jnp.float32)

    def step(p, o, b, lr):
        return train_step(graphdef, p, o, b, lr, tx=tx)

    def grad_of(g):
        return lambda p, b: jax.grad(loss_fn, has_aux=True)(p, g, b, 0.0)

    def update(p, o, g):
        u, o = tx.update(g, o, p)
        return jax.tree.map(lambda a, d: a + (1e-3 * d).astype(a.dtype), p, u), o

    v, jit = (lambda f: f) if K == 1 else jax.vmap, jax.jit
    grads = jit(v(grad_of(graphdef)))(params, tokens)[0]

    def carried(fn: Any, *rest: Any) -> Any:
        state = [jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, opt)]
        donating = jax.jit(v(fn), donate_argnums=(0, 1))

        def run() -> Any:
            state[0], state[1], *_ = donating(state[0], state[1], *rest)
            return state[0]

        return run

    def call(fn: Any, *fn_args: Any) -> Any:
        compiled = jit(v(fn))
        return lambda: compiled(*fn_args)

    return {
        "step": carried(step, tokens, lr),
        "loss + gradient": call(grad_of(graphdef), params, tokens),
        "loss (forward)": call(lambda p, b: loss_fn(p, graphdef, b, 0.0)[1], params, tokens),
        f"loss + gradient, vocab {SMALL_VOCAB}": call(grad_of(graphdef_s), params_s, tokens_s),
        "optimizer update": carried(update, grads),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    import jax

    from scaling import flops
    from scaling.model.shape import ModelShape
    from scaling.train.throughput import MFU_CONVENTION, device_peak

    d, L, H = (int(x) for x in args.shape.split(":"))
    shape = ModelShape(
        d_model=d, n_layers=L, n_heads=H, vocab_size=args.vocab, context=args.context
    )
    dev = jax.devices()[0]
    peak = device_peak(args.dtype)
    tokens = args.k * args.batch * shape.context
    print(f"runtime: {'; '.join(notes) or 'as is'}")
    print(
        f"{dev.device_kind} ({dev.platform}), jax {jax.__version__}; d_model {d} x {L} layers, "
        f"vocab {args.vocab}, N_total {flops.param_counts(shape).N_total:.3g}; K = {args.k} x "
        f"{args.batch} x {shape.context} tokens per step, {args.dtype}",
        flush=True,
    )
    print(f"{'part':<30} {'ms/step':>9} {'of step':>8} {'ms/member':>10}", flush=True)
    step_s = None
    for name, run in parts(shape, args).items():
        s = seconds_per_call(run, args.seconds)
        step_s = step_s or s
        print(f"{name:<30} {s * 1e3:9.2f} {s / step_s:8.2f} {s * 1e3 / args.k:10.2f}", flush=True)
        if name == "step":
            mfu = tokens / s * flops.flops_per_token(shape, MFU_CONVENTION) / peak.flops
            print(f"{'':<30} {tokens / s:,.0f} tokens/s, MFU {mfu:.3f} ({peak.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
