#!/usr/bin/env bash
# Training throughput and MFU on one GPU, bfloat16 compute (float32 master weights), packed and
# unpacked: a prepared script for a machine with a GPU. It installs nothing and fetches nothing:
# it assumes the project's virtualenv with jax[cuda] is present (PYTHON=... to use another,
# e.g. PYTHON=python3 on a machine whose python has jax[cuda], flax and optax). Its parts have
# time limits that add up to 8 minutes; on an H200 most of the time is compilation (17-67 s
# per point with the GPU compile flags of scaling.train.runtime, which it uses).
#
#   bash benchmarks/gpu.sh            # raw numbers: $OUT (or benchmarks/out)/gpu_*.json
#
# First a check that cuDNN's fused attention (used on GPUs in bfloat16) computes the model's
# attention. Part 1, packing: K = 16 packed models against the same runs one after another
#   (one model's step, timed in turns with the pack's: `seq tok/s`), 16 sequences of 512
#   tokens per model per step, at vocabulary 256 (the project's sweeps: ~0.9e6 and ~3.4e6
#   parameters) and 8192 (~1.9e6 and ~5.4e6, as measured before).
# Part 2, single models from ~1.2e8 to ~1e9 parameters (vocabulary 50304, context 1024, 16
#   sequences per step), unpacked.
# What XLA compiles these steps into, and the MFU that program allows (its roofline bound), is
# in benchmarks/gpu_program.py, which needs no GPU.
# MFU: `attention` FLOP convention (scaling.flops), against the table peak for the device in
# scaling.train.throughput (bfloat16 dense, e.g. H100/H200 SXM 989.4 TFLOP/s).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT:-benchmarks/out}

if ! command -v "$PY" >/dev/null; then
  echo "gpu.sh: $PY not found. It needs the project's virtualenv with jax[cuda], or" \
       "PYTHON=a python with jax[cuda], flax and optax (this script installs nothing)." >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's scaling/, installed or not
if ! "$PY" - <<'PY' >&2
import sys
try:
    import jax
    devices = jax.devices()
except Exception as e:  # no CUDA plugin, no driver
    print(f"gpu.sh: jax found no usable backend ({e})")
    sys.exit(1)
if devices[0].platform != "gpu":
    print(f"gpu.sh: no GPU found: jax {jax.__version__} sees {devices[0].platform} devices only "
          "(needs jax[cuda] installed in the venv and an NVIDIA GPU); nothing measured.")
    sys.exit(1)
import flax
import optax

print(f"gpu.sh: {len(devices)} x {devices[0].device_kind}, jax {jax.__version__}, "
      f"flax {flax.__version__}, optax {optax.__version__}")
PY
then
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader
mkdir -p "$OUT_DIR"
echo "gpu.sh: raw numbers go to $OUT_DIR/gpu_packed_v256.json, gpu_packed.json and gpu_single.json"
status=0

echo; echo "== check: cuDNN fused attention (bfloat16) against the model's own (float32) =="
timeout 35 "$PY" - <<'PY' || status=$?
import math

import jax
import jax.numpy as jnp

from scaling.model import transformer

print("cuDNN fused attention compiles:", transformer.cudnn_attention_available())
B, T, H, K = 4, 1024, 8, 64
q, k, v, g = (jax.random.normal(key, (B, T, H, K)) for key in jax.random.split(jax.random.key(0), 4))
bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]


def own(q, k, v):
    return jnp.sum(g * transformer._block_causal_attention(q, k, v, 8, 1.0))


def fused(q, k, v):
    y = transformer.fused_attention(q, k, v, True, 1 / math.sqrt(K))
    assert y is not None, "the fused path did not apply"
    return jnp.sum(g * y.astype(jnp.float32))


want = jax.jit(jax.value_and_grad(own, argnums=(0, 1, 2)))(q, k, v)
got = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))(*bf)
rel = lambda a, b: float(jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel()))
print("relative error (bfloat16 operands: 1e-3 to 1e-2 expected): output-weighted sum "
      f"{rel(got[0], want[0]):.1e}; dq {rel(got[1][0].astype(jnp.float32), want[1][0]):.1e}, "
      f"dk {rel(got[1][1].astype(jnp.float32), want[1][1]):.1e}, "
      f"dv {rel(got[1][2].astype(jnp.float32), want[1][2]):.1e}")
PY

echo; echo "== packed vs sequential, bfloat16, vocabulary 256 (the project's sweeps) =="
timeout 110 "$PY" benchmarks/packing.py --dtype bfloat16 --shapes 128:4:2,256:4:4 --ks 16 \
  --batch 16 --context 512 --vocab 256 --seconds 3 --out "$OUT_DIR/gpu_packed_v256.json" \
  || status=$?

echo; echo "== packed vs sequential, bfloat16, vocabulary 8192 =="
timeout 110 "$PY" benchmarks/packing.py --dtype bfloat16 --shapes 128:4:2,256:4:4 --ks 16 \
  --batch 16 --context 512 --vocab 8192 --seconds 3 --out "$OUT_DIR/gpu_packed.json" || status=$?

echo; echo "== single models ~1.2e8 to ~1e9 parameters, bfloat16 =="
timeout 225 "$PY" benchmarks/packing.py --dtype bfloat16 \
  --shapes 768:12:12,1024:24:16,2048:18:16,1536:24:16 --ks none \
  --batch 16 --context 1024 --vocab 50304 --seconds 3 --out "$OUT_DIR/gpu_single.json" || status=$?

if [ "$status" -ne 0 ]; then
  echo "gpu.sh: a part ended with status $status (124 = its time limit); rows so far are kept" >&2
fi
exit "$status"
