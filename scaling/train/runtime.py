"""Process setup for fast CPU training: allocator, host-device split, compilation cache.

`prepare_process()` runs at the start of a command, before jax is imported:
- allocator: glibc's malloc hands large buffers back to the system and faults them in again
  on every step. If tcmalloc is installed (Debian: libtcmalloc-minimal4), the process
  re-executes itself once with it preloaded (TCMALLOC_RELEASE_RATE=0); otherwise glibc is told
  (mallopt: one arena, no mmap, no trim) to keep freed memory, which removes most of it.
- device split: the CPU is split into several XLA host devices
  (--xla_force_host_platform_device_count) so the training loop can shard each batch.
- GPU compilation: XLA's GPU autotuning and Triton GEMM fusions are off (GPU_COMPILE_FLAGS;
  each is left alone when XLA_FLAGS names it). On an H200 (jax 0.11.2) this cut a small
  model's set-up and compilation from 62 s to 17 s at the same step time (d_model 256 and
  768), which is what a sweep of many small runs spends its time on. CPUs ignore them.
`enable_compilation_cache()` turns on JAX's persistent compilation cache (any time).

SCALING_RUNTIME=off (or `scaling train --no-tuning`) leaves the process as it is;
SCALING_CPU_DEVICES=N sets the split; SCALING_COMPILATION_CACHE=off or a folder.
"""

from __future__ import annotations

import ctypes
import os
import sys

from scaling.cache import compilation_cache_dir, enable_compilation_cache

__all__ = ["compilation_cache_dir", "enable_compilation_cache", "prepare_process"]

TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)
REEXEC_MARK = "SCALING_RUNTIME_REEXEC"
MAX_CPU_DEVICES = 8
GPU_COMPILE_FLAGS = ("--xla_gpu_autotune_level=0", "--xla_gpu_enable_triton_gemm=false")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tuning_enabled() -> bool:
    return os.environ.get("SCALING_RUNTIME", "on").lower() not in ("off", "0", "false", "no")


def find_tcmalloc() -> str | None:
    return next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)


def cpu_device_count() -> int:
    """Host devices to split the CPU into: $SCALING_CPU_DEVICES, else the usable cores (<= 8)."""
    env = os.environ.get("SCALING_CPU_DEVICES")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CPU_DEVICES))


def prepare_process(*, reexec: bool = True) -> list[str]:
    """Set up allocator and device split; returns what was done, in words.

    Both take effect only at process start (LD_PRELOAD) or before jax's backends start
    (XLA_FLAGS). When that moment has passed (tcmalloc to preload, or jax already running),
    the process re-executes itself once (`os.execve`, marked by REEXEC_MARK) with the new
    environment, if `reexec`; otherwise it does what it still can.
    """
    if not tuning_enabled():
        return ["runtime tuning off (SCALING_RUNTIME=off)"]
    env = dict(os.environ)
    notes: list[str] = []
    lib = find_tcmalloc()
    preloaded = lib is not None and lib in env.get("LD_PRELOAD", "")
    if lib and not preloaded:
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD")) if p)
        env.setdefault("TCMALLOC_RELEASE_RATE", "0")
    n = cpu_device_count()
    flags = env.get("XLA_FLAGS", "")
    split_wanted = n > 1 and "xla_force_host_platform_device_count" not in flags
    added = [f for f in GPU_COMPILE_FLAGS if f.split("=")[0] not in flags]
    if split_wanted:
        added.append(f"--xla_force_host_platform_device_count={n}")
    if added:
        env["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    needs_restart = (lib and not preloaded) or (split_wanted and _jax_started())
    can_reexec = reexec and bool(sys.argv) and os.path.isfile(sys.argv[0])
    if needs_restart and can_reexec and not os.environ.get(REEXEC_MARK):
        env[REEXEC_MARK] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if preloaded:
        notes.append(f"allocator tcmalloc with release rate 0 ({lib})")
    elif _glibc_keep_memory():
        notes.append("allocator glibc malloc told to keep freed memory (mallopt)")
    if added and not _jax_started():
        os.environ["XLA_FLAGS"] = env["XLA_FLAGS"]
    if split_wanted and not _jax_started():
        notes.append(f"CPU split into {n} XLA host devices")
    elif "xla_force_host_platform_device_count" in flags:
        count = flags.split("xla_force_host_platform_device_count=")[-1].split()[0]
        notes.append(f"CPU split into {count} XLA host devices (XLA_FLAGS)")
    return notes


def _jax_started() -> bool:
    """True when jax's backends exist already (XLA_FLAGS would no longer be read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def _glibc_keep_memory() -> bool:
    """One arena (per-thread arenas unmap emptied heaps), no mmap for large blocks, no trimming:
    freed buffers are reused. Measured here at d_model 256: page faults per step 724k -> 93k,
    system time per step 1.6 s -> 0.2 s (tcmalloc: 0.5k faults, ~0 s)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_ARENA_MAX, 1) == 1
        ok = ok and libc.mallopt(_M_MMAP_MAX, 0) == 1
        return ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
