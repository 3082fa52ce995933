"""Training throughput and MFU of the JAX train step on this machine, against nanoGPT/PyTorch.

GPT-2 shapes (context 256, vocabulary 256, batch 64, float32), from ~1e5 to ~2.5e7
non-embedding parameters. The step is the one `scaling train` runs (same jit, shardings, host
batches from `scaling.data.train_batch`), set up the same way (allocator, CPU split into host
devices: see `scaling.train.runtime`); `--no-tuning` measures the plain process instead.
FLOPs use the `attention` convention; the peak is a float32 matmul measured now.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 8] [--no-tuning]

The PyTorch figures (nanoGPT, same shapes, this 2-core CPU, peak ~210 GFLOP/s) are quoted
from issue 3 as MFU (d_model 64-512). The ratio compares tokens/s, the one figure that does not
depend on whose peak is right: PyTorch's tokens/s = its MFU x 210 GFLOP/s / FLOPs per token.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Sizes: (d_model, n_layers, n_heads).
SIZES = ((64, 2, 2), (128, 4, 2), (256, 6, 4), (384, 6, 6), (512, 8, 8))
PYTORCH_MFU = {64: 0.33, 128: 0.49, 256: 0.62, 384: 0.70}
PYTORCH_PEAK = 210e9  # the float32 matmul peak the PyTorch MFU figures were measured against
BATCH, CONTEXT, VOCAB = 64, 256, 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per size")
    parser.add_argument("--no-tuning", action="store_true", help="SCALING_RUNTIME=off")
    parser.add_argument("--sizes", default="", help="comma-separated d_model subset")
    args = parser.parse_args()
    if args.no_tuning:
        os.environ["SCALING_RUNTIME"] = "off"
    from scaling.train.runtime import prepare_process

    notes = prepare_process()
    print(f"runtime: {'; '.join(notes) or 'as is'}", flush=True)

    import jax

    from scaling.train.runtime import enable_compilation_cache
    from scaling.train.throughput import cpu_peak, device_peak

    enable_compilation_cache()
    on_cpu = jax.devices()[0].platform == "cpu"
    peak = cpu_peak(refresh=True) if on_cpu else device_peak("float32")
    print(
        f"devices: {len(jax.devices())} x {jax.devices()[0].device_kind}; "
        f"peak {peak.flops / 1e9:.1f} GFLOP/s ({peak.source}); jax {jax.__version__}",
        flush=True,
    )
    wanted = {int(s) for s in args.sizes.split(",") if s}
    header = (
        f"{'d_model':>7} {'layers':>6} {'N_nonemb':>10} {'tokens/s':>10} {'step s':>7} "
        f"{'MFU':>6} {'PyTorch MFU':>11} {'PyTorch tok/s':>13} {'ratio tok/s':>11}"
    )
    print(header)
    for d, L, H in SIZES:
        if wanted and d not in wanted:
            continue
        n_ne, tps, step_s, mfu_ = measure(d, L, H, args.seconds, peak)
        ref = PYTORCH_MFU.get(d)
        if ref:
            ref_tps = ref * PYTORCH_PEAK / fpt_of(d, L, H)
            ref_s = f"{ref:11.2f} {ref_tps:13,.0f} {tps / ref_tps:11.2f}"
        else:
            ref_s = f"{'-':>11} {'-':>13} {'-':>11}"
        print(
            f"{d:7d} {L:6d} {n_ne:10.3g} {tps:10,.0f} {step_s:7.3f} {mfu_:6.3f} {ref_s}", flush=True
        )
    return 0


def fpt_of(d: int, L: int, H: int) -> float:
    """Training FLOPs per token (`attention` convention) of the benchmark's shape."""
    from scaling import flops
    from scaling.model.shape import ModelShape

    shape = ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=VOCAB, context=CONTEXT)
    return flops.flops_per_token(shape, "attention")


def measure(d: int, L: int, H: int, seconds: float, peak) -> tuple[int, float, float, float]:
    """Non-embedding params, tokens/s, seconds/step and MFU of the training step at one size."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from scaling import flops
    from scaling.data import train_batch
    from scaling.model.shape import ModelShape
    from scaling.train.config import RunConfig
    from scaling.train.optim import make_optimizer
    from scaling.train.step import init_params, make_train_step
    from scaling.train.throughput import MFU_CONVENTION, mfu

    shape = ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=VOCAB, context=CONTEXT)
    config = RunConfig(model=shape).with_overrides([f"train.batch_size={BATCH}"])
    devices = jax.local_devices()
    if BATCH % len(devices):
        devices = devices[:1]
    mesh = Mesh(np.array(devices), ("data",))
    rep, shard = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    graphdef, params = init_params(shape, 0)
    tx = make_optimizer(config)
    params, opt_state = jax.device_put((params, tx.init(params)), rep)
    step = make_train_step(
        graphdef, tx, in_shardings=(rep, rep, shard, None), out_shardings=(rep, rep, rep)
    )
    tokens = np.random.default_rng(0).integers(0, VOCAB, 2_000_000).astype(np.uint16)

    def run(i: int):
        nonlocal params, opt_state
        batch = train_batch(tokens, seed=0, step=i, batch_size=BATCH, context=CONTEXT)
        params, opt_state, out = step(
            params, opt_state, jax.device_put(batch, shard), np.float32(1e-3)
        )
        return out["loss"]

    for i in range(2):  # compile and warm up
        run(i).block_until_ready()
    n, t0 = 0, time.perf_counter()
    while True:
        loss = run(2 + n)
        n += 1
        if n % 2 == 0 or n >= 3:
            loss.block_until_ready()
            if n >= 3 and time.perf_counter() - t0 >= seconds:
                break
    dt = (time.perf_counter() - t0) / n
    tps = BATCH * CONTEXT / dt
    fpt = flops.flops_per_token(shape, MFU_CONVENTION)
    return flops.param_counts(shape).N_nonembedding, tps, dt, mfu(tps, fpt, peak)


if __name__ == "__main__":
    sys.exit(main())
