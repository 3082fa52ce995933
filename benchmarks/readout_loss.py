"""The training loss's readout two ways, in one run: chunked (the default) against the plain form.

For each vocabulary it compiles the gradient of the training loss of one model and batch as
`scaling.train.step.loss_fn` computes it (`scaling.model.readout`: the cross-entropy in token
chunks, its gradient formed in the forward pass) and in the plain form (the model's float32
logits, then log-softmax: `token_losses`, what evaluation runs), and prints each program's
temporaries (XLA's memory analysis) and time per call, timed in alternating rounds (the ratio
is the median of the rounds' ratios, so the machine's slow phases cancel). One device, no
batch split; z-loss off.

    .venv/bin/python benchmarks/readout_loss.py [--shape 128:4:2] [--vocabs 256,8192,32768]
        [--batch 32] [--context 256] [--rounds 5] [--seconds 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="128:4:2", help="d_model:n_layers:n_heads")
    p.add_argument("--vocabs", default="256,8192,32768")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="per round and form")
    return p.parse_args(argv)


def seconds_per_call(fn, args: tuple, seconds: float) -> float:
    import jax

    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        jax.block_until_ready(fn(*args))
        n += 1
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.model.readout import token_chunks
    from scaling.model.shape import ModelShape
    from scaling.train.step import _mean, init_params, loss_fn, token_losses

    d, L, H = (int(x) for x in args.shape.split(":"))
    n_tokens = args.batch * args.context
    print(f"runtime: {'; '.join(notes) or 'as is'}; jax {jax.__version__}")
    print(f"d_model {d} x {L} layers, {args.batch} x {args.context} tokens, one device")
    print(
        f"{'vocab':>6} {'chunks':>6} {'temp plain GB':>13} {'temp chunked GB':>15} "
        f"{'plain ms':>9} {'chunked ms':>10} {'speed, chunked/plain':>20}",
        flush=True,
    )
    for vocab in (int(v) for v in args.vocabs.split(",") if v):
        shape = ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=vocab, context=args.context)
        graphdef, params = init_params(shape, 0)
        rng = np.random.default_rng(0)
        batch = jnp.asarray(rng.integers(0, vocab, (args.batch, args.context + 1)), jnp.int32)

        def plain(p, batch, graphdef=graphdef):
            return _mean(token_losses(graphdef, p, batch)[0], batch)

        def chunked(p, batch, graphdef=graphdef):
            return loss_fn(p, graphdef, batch, 0.0)[0]

        forms = [jax.jit(jax.grad(f)) for f in (plain, chunked)]
        compiled = [f.lower(params, batch).compile() for f in forms]
        temps = [c.memory_analysis().temp_size_in_bytes for c in compiled]
        ratios, times = [], [[], []]
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            t = {i: seconds_per_call(forms[i], (params, batch), args.seconds) for i in order}
            times[0].append(t[0])
            times[1].append(t[1])
            ratios.append(t[0] / t[1])
        print(
            f"{vocab:>6} {token_chunks(n_tokens, vocab, d):>6} {temps[0] / 1e9:>13.3f} "
            f"{temps[1] / 1e9:>15.3f} {1e3 * statistics.median(times[0]):>9.1f} "
            f"{1e3 * statistics.median(times[1]):>10.1f} {statistics.median(ratios):>20.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
