#!/usr/bin/env bash
# Training throughput and MFU on one GPU, bfloat16 compute (float32 master weights), packed and
# unpacked: a prepared script for a machine with a GPU. It installs nothing and fetches nothing:
# it assumes the project's virtualenv with jax[cuda] is present (PYTHON=... to use another).
# Runs in well under 8 minutes on an H100/H200 (each part has a time limit).
#
#   bash benchmarks/gpu.sh            # raw numbers: $OUT (or benchmarks/out)/gpu_*.json
#
# Part 1, packing: ~5e6 and ~1.4e7 parameters (vocabulary 8192, context 512, 16 sequences per
#   model per step), K = 1, 4, 16 packed models against the same runs one after another.
# Part 2, single models from ~5e7 to ~1e9 parameters (vocabulary 50304, context 1024, 8
#   sequences per step), unpacked.
# MFU: `attention` FLOP convention (scaling.flops), against the table peak for the device in
# scaling.train.throughput (bfloat16 dense, e.g. H100/H200 SXM 989.4 TFLOP/s).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT:-benchmarks/out}

if [ ! -x "$PY" ]; then
  echo "gpu.sh: $PY not found. It needs the project's virtualenv with jax[cuda]" \
       "(this script installs nothing)." >&2
  exit 2
fi
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
print(f"gpu.sh: {len(devices)} x {devices[0].device_kind}, jax {jax.__version__}")
PY
then
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader
mkdir -p "$OUT_DIR"
echo "gpu.sh: raw numbers go to $OUT_DIR/gpu_packed.json and $OUT_DIR/gpu_single.json"
status=0

echo; echo "== packed vs sequential, bfloat16 =="
timeout 200 "$PY" benchmarks/packing.py --dtype bfloat16 --shapes 256:4:4,384:6:6 --ks 1,4,16 \
  --batch 16 --context 512 --vocab 8192 --seconds 3 --out "$OUT_DIR/gpu_packed.json" || status=$?

echo; echo "== single models ~5e7 to ~1e9 parameters, bfloat16 =="
timeout 240 "$PY" benchmarks/packing.py --dtype bfloat16 \
  --shapes 512:8:8,768:12:12,1024:24:16,1536:24:16,2048:18:16 --ks none \
  --batch 8 --context 1024 --vocab 50304 --seconds 3 --out "$OUT_DIR/gpu_single.json" || status=$?

if [ "$status" -ne 0 ]; then
  echo "gpu.sh: a part ended with status $status (124 = its time limit); rows so far are kept" >&2
fi
exit "$status"
