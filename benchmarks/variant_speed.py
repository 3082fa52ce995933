"""Forward + backward time of each architecture variant at one width, across contexts.

For each context, every variant's jitted value-and-grad of the mean logit-sum loss is timed
in interleaved rounds (so a machine shared with other jobs slows them alike); printed: median
milliseconds per step, the ratio to llama (the same blocks with full softmax attention), and
each variant's `chinchilla` forward FLOPs per token relative to llama's (scaling.flops).

    .venv/bin/python benchmarks/variant_speed.py [--contexts 256,1024,2048] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from scaling import flops
from scaling.model.shape import VARIANTS, ModelShape
from scaling.model.transformer import make_model


def step_fn(shape: ModelShape):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_model(shape, seed=0)))

    @jax.jit
    def init():
        return nnx.split(make_model(shape, seed=0))[1]

    @jax.jit
    def grad(state, tokens):
        def loss(s):
            return jnp.mean(nnx.merge(graphdef, s)(tokens))

        return jax.value_and_grad(loss)(state)

    return init(), grad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", default="256,1024,2048")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--tokens", type=int, default=8192, help="tokens per step (batch × context)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print(
        f"d_model={args.d_model} n_layers={args.n_layers} head_dim={args.head_dim} "
        f"tokens/step={args.tokens}; local window 64, performer default features"
    )
    print(f"{'context':>7} {'variant':>10} {'ms/step':>9} {'x llama':>8} {'FLOPs x llama':>14}")
    for T in (int(c) for c in args.contexts.split(",")):
        shapes = {
            v: ModelShape(
                d_model=args.d_model,
                n_layers=args.n_layers,
                n_heads=args.d_model // args.head_dim,
                context=T,
                variant=v,
            )
            for v in VARIANTS
        }
        tokens = jnp.zeros((max(1, args.tokens // T), T), jnp.int32)
        runs = {}
        for v, shape in shapes.items():
            state, grad = step_fn(shape)
            jax.block_until_ready(grad(state, tokens))  # compile
            runs[v] = (state, grad)
        times = {v: [] for v in shapes}
        for _ in range(args.rounds):
            for v, (state, grad) in runs.items():
                t0 = time.perf_counter()
                jax.block_until_ready(grad(state, tokens))
                times[v].append(time.perf_counter() - t0)
        ms = {v: 1e3 * statistics.median(t) for v, t in times.items()}
        base = flops.forward_flops_per_token(shapes["llama"], "chinchilla")
        for v, shape in shapes.items():
            f = flops.forward_flops_per_token(shape, "chinchilla") / base
            print(f"{T:>7} {v:>10} {ms[v]:>9.1f} {ms[v] / ms['llama']:>8.2f} {f:>14.2f}")


if __name__ == "__main__":
    main()
