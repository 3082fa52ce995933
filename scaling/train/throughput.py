"""Peak FLOP/s of the machine and model FLOPs utilization (MFU).

On CPUs the peak is measured once: a jitted float32 matrix product sharded across all local
devices, best of a few runs, cached on disk (keyed by machine, CPU, device count and jax
version). On accelerators it comes from a table of published dense peaks by device kind and
dtype. MFU uses the `attention` FLOP convention of `scaling.flops`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.cache import cache_dir
from scaling.io import atomic_write_json, read_json

MFU_CONVENTION = "attention"

# Published dense peaks per chip, FLOP/s (no sparsity). float32 on NVIDIA is the non-tensor-core
# FP32 rate; on TPUs float32 matmuls run as bfloat16 passes by default, so the bf16 peak applies.
ACCELERATOR_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.4e12, "float32": 66.9e12},
    "H100 PCIE": {"bfloat16": 756.0e12, "float32": 51.2e12},
    "H100": {"bfloat16": 989.4e12, "float32": 66.9e12},  # SXM
    "A100": {"bfloat16": 312.0e12, "float32": 19.5e12},
    "V100": {"bfloat16": 125.0e12, "float32": 15.7e12},  # fp16 tensor cores for half precision
    "L4": {"bfloat16": 121.0e12, "float32": 30.3e12},
    "TPU V5P": {"bfloat16": 459.0e12, "float32": 459.0e12},
    "TPU V5 LITE": {"bfloat16": 197.0e12, "float32": 197.0e12},  # v5e
    "TPU V5E": {"bfloat16": 197.0e12, "float32": 197.0e12},
    "TPU V5": {"bfloat16": 459.0e12, "float32": 459.0e12},  # v5p reports "TPU v5"
    "TPU V4": {"bfloat16": 275.0e12, "float32": 275.0e12},
    "TPU V6 LITE": {"bfloat16": 918.0e12, "float32": 918.0e12},  # v6e (Trillium)
}


@dataclass(frozen=True)
class Peak:
    """Peak FLOP/s for the devices a run uses, and where the number came from."""

    flops: float
    source: str


def table_peak(device_kind: str, dtype: str) -> Peak | None:
    """The published peak for a device kind (longest matching table key), or None."""
    kind = device_kind.upper()
    for key in sorted(ACCELERATOR_PEAKS, key=len, reverse=True):
        if key in kind:
            return Peak(ACCELERATOR_PEAKS[key][dtype], f"table:{key} {dtype}")
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_key(n_devices: int) -> str:
    """The cache key of a CPU peak: machine, CPU model, the cores this process may use, jax, and
    its local devices (two processes pinned one per core each get half the machine's peak)."""
    import jax

    cores = f"{usable_cores()} of {os.cpu_count()} cores"
    parts = [platform.node(), _cpu_model(), cores, f"jax {jax.__version__}"]
    parts.append(f"devices {n_devices}")
    return " | ".join(parts)


def measure_cpu_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of an n x n float32 matmul, rows sharded over this process's CPU
    devices (in a run of several processes, each measures its own)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices(backend="cpu")
    mesh = Mesh(np.array(devices), ("d",))
    rows = NamedSharding(mesh, PartitionSpec("d", None))
    full = NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32), rows)
    b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32), full)
    mm = jax.jit(jnp.matmul, out_shardings=rows)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def cpu_peak(*, refresh: bool = False) -> Peak:
    """This process's measured CPU peak, from the on-disk cache when this machine has measured
    it for the same cores and local devices.

    `refresh` measures again; the cache keeps the highest value measured (a busy machine
    measures low, and the peak is the best the machine can do).
    """
    import jax

    key = cpu_key(len(jax.local_devices(backend="cpu")))
    path = cache_dir() / "cpu_peak.json"
    entries: dict = {}
    if path.is_file():
        try:
            entries = read_json(path)
        except (OSError, ValueError):
            entries = {}
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    old = entries.get(digest) if isinstance(entries.get(digest), dict) else None
    if old and not refresh:
        return Peak(float(old["flops"]), "measured:cpu float32 matmul (cached)")
    flops = measure_cpu_matmul_peak()
    if old and float(old["flops"]) > flops:
        return Peak(float(old["flops"]), f"measured:cpu float32 matmul (cached; now {flops:.3g})")
    entries[digest] = {"key": key, "flops": flops, "measured": time.time()}
    with contextlib.suppress(OSError):
        atomic_write_json(path, entries)
    return Peak(flops, "measured:cpu float32 matmul")


def device_peak(compute_dtype: str = "float32") -> Peak:
    """Peak FLOP/s summed over the local devices of the default backend."""
    import jax

    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        return cpu_peak()
    one = table_peak(devices[0].device_kind, compute_dtype)
    if one is None:
        return Peak(float("nan"), f"unknown device kind {devices[0].device_kind!r}")
    return Peak(one.flops * len(devices), f"{one.source} x{len(devices)}")


def mfu(tokens_per_s: float, flops_per_token: float, peak: Peak) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the peak."""
    return tokens_per_s * flops_per_token / peak.flops
