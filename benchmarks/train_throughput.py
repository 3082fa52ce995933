"""Training throughput and MFU of the JAX train step on this machine, against nanoGPT/PyTorch.

GPT-2 shapes (context 256, vocabulary 256, batch 64, float32), from ~1e5 to ~2.5e7
non-embedding parameters. The step is the one `scaling train` runs (same jit, shardings, host
batches from `scaling.data.train_batch`), set up the same way (allocator, CPU split into host
devices: see `scaling.train.runtime`); `--no-tuning` measures the plain process instead.
FLOPs use the `attention` convention; the peak is a float32 matmul measured now. `RSS GB` is
the JAX process's peak resident memory so far.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 2] [--rounds 5] [--no-tuning]
        [--torch PYTHON] [--sizes 64,128]

The reference is nanoGPT on PyTorch with the same shapes (`benchmarks/nanogpt_torch.py`), run
in the same session by a Python that has torch (--torch, else $SCALING_TORCH_PYTHON, else this
one if it imports torch). It stays up in one process (`--serve`), and the two alternate in
short rounds, size by size: each round times the JAX step, then the PyTorch step, for
--seconds (at least two steps) each, so the two windows lie seconds apart and a machine whose
speed drifts (this VM's does, by +-25% over minutes) drifts for both. Tokens/s are the medians
over the rounds, and the ratio is the median of the rounds' own ratios (`each round`, the
spread to read it with). Without torch, the figures quoted in issue 3 (MFU at a 210 GFLOP/s
peak) stand in, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Sizes: (d_model, n_layers, n_heads).
SIZES = ((64, 2, 2), (128, 4, 2), (256, 6, 4), (384, 6, 6), (512, 8, 8))
PYTORCH_MFU = {64: 0.33, 128: 0.49, 256: 0.62, 384: 0.70}
PYTORCH_PEAK = 210e9  # the float32 matmul peak the PyTorch MFU figures were measured against
BATCH, CONTEXT, VOCAB = 64, 256, 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per round")
    parser.add_argument("--no-tuning", action="store_true", help="SCALING_RUNTIME=off")
    parser.add_argument("--sizes", default="", help="comma-separated d_model subset")
    parser.add_argument(
        "--torch",
        default=os.environ.get("SCALING_TORCH_PYTHON", ""),
        help="a Python with torch for the reference (default: this one if it can)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="JAX/PyTorch alternations per size")
    args = parser.parse_args()
    torch_python = find_torch_python(args.torch)
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
    reference = TorchReference(torch_python) if torch_python else None
    ref_kind = (
        f"PyTorch {reference.version} measured ({torch_python})"
        if reference
        else "PyTorch quoted (issue 3)"
    )
    print(f"reference: {ref_kind}; {args.rounds} alternating rounds of {args.seconds:g} s each")
    header = (
        f"{'d_model':>7} {'layers':>6} {'N_nonemb':>10} {'tokens/s':>10} {'step s':>7} "
        f"{'MFU':>6} {'RSS GB':>6} {'PyTorch tok/s':>13} {'PyTorch MFU':>11} {'ratio tok/s':>11}"
        "  each round"
    )
    print(header)
    for d, L, H in SIZES:
        if wanted and d not in wanted:
            continue
        timer, n_ne, fpt = build_step(d, L, H)
        ours, ref = [], []
        for _ in range(max(args.rounds, 1)):
            ours.append(timer(args.seconds))
            if reference:
                ref.append(reference.tokens_per_s(d, L, H, args.seconds))
        tps = statistics.median(ours)
        step_s = BATCH * CONTEXT / tps
        mfu_ = tps * fpt / peak.flops
        if ref:
            ref_tps = statistics.median(ref)
            ref_mfu = ref_tps * fpt / peak.flops
        elif d in PYTORCH_MFU:
            ref_mfu = PYTORCH_MFU[d]
            ref_tps = ref_mfu * PYTORCH_PEAK / fpt_of(d, L, H)
        else:
            ref_tps = None
        if ref_tps:
            rounds_ratio = [a / b for a, b in zip(ours, ref, strict=False)] or [tps / ref_tps]
            ratio = statistics.median(rounds_ratio)
            ref_s = f"{ref_tps:13,.0f} {ref_mfu:11.3f} {ratio:11.2f}"
        else:
            ref_s = f"{'-':>13} {'-':>11} {'-':>11}"
        rounds = ",".join(f"{a / b:.2f}" for a, b in zip(ours, ref, strict=False)) or "-"
        print(
            f"{d:7d} {L:6d} {n_ne:10.3g} {tps:10,.0f} {step_s:7.3f} {mfu_:6.3f} "
            f"{peak_rss_gb():6.1f} {ref_s}  {rounds}",
            flush=True,
        )
    if reference:
        reference.close()
    return 0


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (GB): the sizes run smallest first, so each
    row's figure is about its own size's (tcmalloc keeps what it freed for reuse)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def fpt_of(d: int, L: int, H: int) -> float:
    """Training FLOPs per token (`attention` convention) of the benchmark's shape."""
    from scaling import flops
    from scaling.model.shape import ModelShape

    shape = ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=VOCAB, context=CONTEXT)
    return flops.flops_per_token(shape, "attention")


def find_torch_python(given: str) -> str | None:
    """A Python that imports torch: `given`, else this one if it can, else None."""
    for candidate in ([given] if given else []) + [sys.executable]:
        path = shutil.which(candidate) or candidate
        ok = subprocess.run([path, "-c", "import torch"], capture_output=True).returncode == 0
        if ok:
            return path
        if given:
            raise SystemExit(f"--torch {given}: cannot import torch there")
    return None


class TorchReference:
    """The PyTorch reference in one long-lived process (`nanogpt_torch.py --serve`), so each
    round's PyTorch window follows the JAX window within a second or two."""

    def __init__(self, python: str):
        script = Path(__file__).with_name("nanogpt_torch.py")
        cmd = [python, str(script), "--serve", "--batch", str(BATCH), "--context", str(CONTEXT)]
        cmd += ["--vocab", str(VOCAB)]
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "XLA_FLAGS")}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.version = json.loads(self._line())["torch"]

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the PyTorch reference stopped (exit {self.proc.wait()})")
        return line

    def tokens_per_s(self, d: int, L: int, H: int, seconds: float) -> float:
        self.proc.stdin.write(f"{d}:{L}:{H} {seconds}\n")
        self.proc.stdin.flush()
        return float(json.loads(self._line())["tokens_per_s"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def build_step(d: int, L: int, H: int):
    """(timer, non-embedding params, FLOPs per token) for one size; timer(seconds) runs the
    compiled training step for about that long and returns tokens/s."""
    import jax
    import numpy as np

    from scaling import flops
    from scaling.data import train_batch
    from scaling.model.shape import ModelShape
    from scaling.train.config import RunConfig
    from scaling.train.mesh import make_mesh
    from scaling.train.optim import make_optimizer
    from scaling.train.step import init_params, make_run_step
    from scaling.train.throughput import MFU_CONVENTION

    shape = ModelShape(d_model=d, n_layers=L, n_heads=H, vocab_size=VOCAB, context=CONTEXT)
    config = RunConfig(model=shape).with_overrides([f"train.batch_size={BATCH}"])
    run_mesh = make_mesh(config.mesh, BATCH)  # as the training loop: the same mesh and step
    rep, shard = run_mesh.replicated(), run_mesh.batch()
    graphdef, params = init_params(shape, 0)
    tx = make_optimizer(config)
    state = list(jax.device_put((params, tx.init(params)), rep))
    step = make_run_step(graphdef, tx, run_mesh, {"params": rep, "opt_state": rep})
    tokens = np.random.default_rng(0).integers(0, VOCAB, 2_000_000).astype(np.uint16)
    counter = [0]

    def run():
        batch = train_batch(tokens, seed=0, step=counter[0], batch_size=BATCH, context=CONTEXT)
        counter[0] += 1
        state[0], state[1], out = step(*state, jax.device_put(batch, shard), np.float32(1e-3))
        return out["loss"]

    for _ in range(2):  # compile and warm up
        run().block_until_ready()

    def timer(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            loss = run()
            n += 1
            if n >= 2:
                loss.block_until_ready()
                if time.perf_counter() - t0 >= seconds:
                    break
        return BATCH * CONTEXT * n / (time.perf_counter() - t0)

    fpt = flops.flops_per_token(shape, MFU_CONVENTION)
    return timer, flops.param_counts(shape).N_nonembedding, fpt


if __name__ == "__main__":
    sys.exit(main())
