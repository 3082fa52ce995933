"""benchmarks/gpu_program.py's reading of a compiled GPU program: kernels, HBM bytes, FLOPs and
the roofline bound, on a small program written in XLA's optimized-HLO text form."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "gpu_program", Path(__file__).parent.parent / "benchmarks" / "gpu_program.py"
)
gpu_program = importlib.util.module_from_spec(SPEC)
sys.modules["gpu_program"] = gpu_program  # its dataclasses look their module up
SPEC.loader.exec_module(gpu_program)

GEMM_CONFIG = (
    'custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{'
    '"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],'
    '"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}'
)
LOOP = (
    "(s32[], bf16[64,16]{1,0}, bf16[16,32]{1,0}) while(%init), condition=%cond, body=%body, "
    'backend_config={"known_trip_count":{"n":"3"}}'
)
ATTENTION = "(bf16[2,4,128,64]{3,1,2,0}, f32[2,4,128]{2,1,0}) custom-call(%q, %q, %q)"
ATTENTION_CONFIG = (
    'custom_call_target="__cudnn$fmhaSoftmax", backend_config={"cudnn_fmha_backend_config": '
    '{"intermediate_tensor_shape": {"element_type": "BF16", "dimensions": ["2", "4", "128", '
    '"128"]}, "mask_type": "CAUSAL"}}'
)
HLO = f"""HloModule step

%fused_add (a: f32[64,32], b: f32[64,32]) -> bf16[64,32] {{
  %a = f32[64,32]{{1,0}} parameter(0)
  %b = f32[64,32]{{1,0}} parameter(1)
  %sum = f32[64,32]{{1,0}} add(%a, %b)
  ROOT %out = bf16[64,32]{{1,0}} convert(%sum)
}}

%body (t: (s32[], bf16[64,16], bf16[16,32])) -> (s32[], bf16[64,16], bf16[16,32]) {{
  %t = (s32[], bf16[64,16]{{1,0}}, bf16[16,32]{{1,0}}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = bf16[64,16]{{1,0}} get-tuple-element(%t), index=1
  %w = bf16[16,32]{{1,0}} get-tuple-element(%t), index=2
  %mm = (bf16[64,32]{{1,0}}, s8[4194304]{{0}}) custom-call(%x, %w), {GEMM_CONFIG}
  ROOT %next = (s32[], bf16[64,16]{{1,0}}, bf16[16,32]{{1,0}}) tuple(%i, %x, %w)
}}

%cond (t: (s32[], bf16[64,16], bf16[16,32])) -> pred[] {{
  %t = (s32[], bf16[64,16]{{1,0}}, bf16[16,32]{{1,0}}) parameter(0)
  ROOT %p = pred[] constant(true)
}}

ENTRY %main (p0: f32[64,32], p1: f32[64,32], q: bf16[2,128,4,64]) -> bf16[64,32] {{
  %p0 = f32[64,32]{{1,0}} parameter(0)
  %p1 = f32[64,32]{{1,0}} parameter(1)
  %q = bf16[2,128,4,64]{{3,2,1,0}} parameter(2)
  %fusion = bf16[64,32]{{1,0}} fusion(%p0, %p1), kind=kLoop, calls=%fused_add
  %loop = {LOOP}
  %attn = {ATTENTION}, {ATTENTION_CONFIG}
  ROOT %r = bf16[64,32]{{1,0}} bitcast(%fusion)
}}
"""


def test_program_cost_counts_each_kernel_its_bytes_flops_and_trips():
    cost = gpu_program.program_cost(HLO)
    kernels = {k.name: k for k in cost.kernels}
    assert set(kernels) == {"fusion", "mm", "attn"}  # not parameters, tuples, bitcasts, loops
    assert kernels["fusion"].bytes == 2 * 64 * 32 * 4 + 64 * 32 * 2
    assert (kernels["fusion"].kind, kernels["fusion"].flops) == ("fusion:kLoop", 0.0)
    # the GEMM: its operands and result, not its workspace; run 3 times by the loop
    mm = kernels["mm"]
    assert (mm.count, mm.bytes) == (3, (64 * 16 + 16 * 32 + 64 * 32) * 2)
    assert mm.flops == 2 * 64 * 32 * 16
    attn = kernels["attn"]  # causal: half of 2 products of 2·B·H·T·S·head_dim
    assert attn.flops == 0.5 * 2 * 2 * (2 * 4 * 128 * 128) * 64
    assert attn.bytes == 3 * 2 * 128 * 4 * 64 * 2 + 2 * 4 * 128 * 64 * 2 + 2 * 4 * 128 * 4
    assert cost.launches == 1 + 3 + 1
    assert cost.bytes == kernels["fusion"].bytes + 3 * mm.bytes + attn.bytes
    assert cost.flops == 3 * mm.flops + attn.flops


def test_roofline_bound_takes_each_kernels_slower_limit():
    cost = gpu_program.program_cost(HLO)
    bandwidth, peak = 1e12, 1e15
    expected = sum(k.count * max(k.bytes / bandwidth, k.flops / peak) for k in cost.kernels)
    assert cost.bound_s(bandwidth, peak) == pytest.approx(expected)
    # with a slow enough peak the GEMMs and attention become FLOP-bound, and the bound grows
    assert cost.bound_s(bandwidth, 1e9) > cost.bound_s(bandwidth, peak)
    assert cost.by_kind()["__cublas$lt$matmul"] == (3, 3 * (64 * 16 + 16 * 32 + 64 * 32) * 2)


def test_target_config_names_the_part_and_its_bandwidth():
    text = gpu_program.target_config("H200")
    assert "memory_bandwidth: 4800000000000" in text and 'NVIDIA H200"' in text
    assert "major: 9" in text
