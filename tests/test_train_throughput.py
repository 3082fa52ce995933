"""Peak FLOP/s (table by device kind, measured CPU peak cached on disk), MFU, runtime setup."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scaling import flops
from scaling.model.shape import ModelShape
from scaling.train import runtime, throughput
from scaling.train.throughput import Peak, mfu, table_peak


@pytest.mark.parametrize(
    ("kind", "dtype", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H200", "float32", 66.9e12),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "float32", 19.5e12),
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v5p", "bfloat16", 459e12),
    ],
)
def test_table_peaks_by_device_kind_and_dtype(kind, dtype, expected):
    peak = table_peak(kind, dtype)
    assert peak is not None and peak.flops == expected
    assert peak.source.startswith("table:") and dtype in peak.source


def test_unknown_device_kind_has_no_table_peak():
    assert table_peak("Some NPU 9000", "float32") is None


def test_mfu_is_model_flops_over_peak():
    shape = ModelShape(d_model=128, n_layers=4, n_heads=4)
    fpt = flops.flops_per_token(shape, "attention")
    assert mfu(1000.0, fpt, Peak(2 * fpt * 1000.0, "test")) == pytest.approx(0.5)


def test_cpu_peak_is_measured_once_and_cached_keeping_the_best(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
    values = iter([100e9, 50e9, 300e9])
    calls = []

    def fake_measure():
        calls.append(1)
        return next(values)

    monkeypatch.setattr(throughput, "measure_cpu_matmul_peak", fake_measure)
    first = throughput.cpu_peak()
    assert first.flops == 100e9 and "measured" in first.source
    assert throughput.cpu_peak().flops == 100e9 and len(calls) == 1  # from the cache
    assert "cached" in throughput.cpu_peak().source
    assert throughput.cpu_peak(refresh=True).flops == 100e9  # a lower measurement: keep best
    assert throughput.cpu_peak(refresh=True).flops == 300e9
    assert throughput.cpu_peak().flops == 300e9 and len(calls) == 3
    assert (tmp_path / "cpu_peak.json").is_file()


def test_cpu_peak_cache_key_names_the_cores_this_process_may_use(monkeypatch):
    # Two processes pinned one per core must not reuse the whole machine's peak (a run of
    # several processes multiplies the per-process peak by their number).
    monkeypatch.setattr(throughput.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    both = throughput.cpu_key(1)
    monkeypatch.setattr(throughput.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    one = throughput.cpu_key(1)
    assert both != one
    assert f"1 of {throughput.os.cpu_count()} cores" in one


def test_measured_matmul_peak_is_plausible():
    flops_per_s = throughput.measure_cpu_matmul_peak(n=256, repeats=2)
    assert 1e8 < flops_per_s < 1e14


def test_runtime_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_RUNTIME", "off")
    assert not runtime.tuning_enabled()
    assert runtime.prepare_process() == ["runtime tuning off (SCALING_RUNTIME=off)"]
    monkeypatch.setenv("SCALING_CPU_DEVICES", "3")
    assert runtime.cpu_device_count() == 3
    monkeypatch.setenv("SCALING_COMPILATION_CACHE", "off")
    assert runtime.compilation_cache_dir() is None
    monkeypatch.setenv("SCALING_COMPILATION_CACHE", str(tmp_path / "cc"))
    assert runtime.compilation_cache_dir() == tmp_path / "cc"
    monkeypatch.delenv("SCALING_COMPILATION_CACHE")
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
    assert runtime.compilation_cache_dir() == tmp_path / "jax-compilation"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", ["--xla_gpu_autotune_level=0", "--xla_gpu_enable_triton_gemm=false"]),
        ("--xla_gpu_autotune_level=2", ["--xla_gpu_autotune_level=2"]),
    ],
)
def test_gpu_compile_flags_are_set_unless_named_and_a_cpu_accepts_them(given, expected):
    """prepare_process adds the GPU compile flags to XLA_FLAGS before jax starts, keeps a value
    the user gave, and jax on a CPU still starts and computes with them."""
    code = (
        "import os\n"
        "from scaling.train.runtime import prepare_process\n"
        "prepare_process(reexec=False)\n"
        "import jax.numpy as jnp\n"
        "assert float(jnp.ones(3).sum()) == 3.0\n"
        "print(os.environ['XLA_FLAGS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SCALING_RUNTIME")}
    env["XLA_FLAGS"] = given
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    for flag in expected:
        assert flag in out
    assert "--xla_gpu_enable_triton_gemm=false" in out
    assert sum(f.startswith("--xla_gpu_autotune_level") for f in out) == 1
