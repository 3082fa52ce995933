r"""What XLA makes of the training step for a GPU, compiled without one: kernels, HBM traffic and a
roofline bound on step time and MFU, per shape, one model and packs of K.

The GPU compiler runs here, on the CPU, against a description of an H100 SXM or an H200 (XLA's
deviceless compilation), so the program a GPU would run can be read on any machine. It needs
jax's CUDA plugin beside jax (`pip install "jax[cuda13]==$(python -c 'import jax;
print(jax.__version__)')"`, ~4.6 GB; no GPU or driver). The model makes its GPU choices
(cuDNN's fused attention in bfloat16) as on a GPU; the GPU compile flags of
`scaling.train.runtime` apply.

Counting, per kernel of the compiled program (fusions, cuBLAS and cuDNN calls, copies; a loop's
body times its trip count): it reads its operands and writes its results once from HBM (cuBLAS
workspaces not counted), and does the FLOPs of its GEMMs and attention (from the shapes in the
program; causal attention half). Its time is at least max(bytes / bandwidth, FLOPs / peak);
the sum over kernels bounds the step from below (launch gaps, L2 reuse and imperfect kernels
left out). `MFU ceiling` = model FLOPs (`attention` convention) / (peak x that bound): what
the program could reach on a perfect GPU. Measured MFU (benchmarks/gpu.sh) below it is kernel
efficiency and launches; the ceiling itself is the program's HBM traffic.

    .venv/bin/python benchmarks/gpu_program.py [--target H200] [--dtype bfloat16]
        [--shapes 768:12:12] [--vocab 50304] [--context 1024] [--batch 16] [--ks 1]
    # the packing case of issue 8:
    .venv/bin/python benchmarks/gpu_program.py --shapes 256:4:4 --vocab 8192 --context 512 \
        --batch 16 --ks 1,4,16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

# Published figures (SXM parts): HBM bandwidth, memory, dense bfloat16 peak.
TARGETS = {
    "H100": {"bandwidth": 3.35e12, "memory": 80e9, "name": "NVIDIA H100 80GB HBM3"},
    "H200": {"bandwidth": 4.8e12, "memory": 141e9, "name": "NVIDIA H200"},
}
BF16_PEAK = 989.4e12
DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2}
DTYPE_BYTES |= {"s8": 1, "u8": 1, "pred": 1, "f8e4m3fn": 1, "f8e5m2": 1}
NOT_KERNELS = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all"}
NOT_KERNELS |= {"partition-id", "replica-id", "opt-barrier", "conditional", "call"}
ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")


def target_config(target: str) -> str:
    """The GpuTargetConfigProto (text) of an SM 9.0 part with `target`'s memory system."""
    t = TARGETS[target]
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: {int(t["bandwidth"])} l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: {int(t["memory"])}
  shared_memory_per_block_optin: 232448 cuda_compute_capability {{ major: 9 }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
runtime_version {{ major: 13 }}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 }}
device_description_str: "{t["name"]}"
"""


# --- reading the compiled program ----------------------------------------------------------
def arrays(shape_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, dims) of each array in an HLO shape (a tuple gives several)."""
    return [
        (t, tuple(int(d) for d in dims.split(",") if d)) for t, dims in ARRAY.findall(shape_text)
    ]


def nbytes(shape_text: str) -> int:
    return sum(DTYPE_BYTES[t] * math.prod(dims) for t, dims in arrays(shape_text))


def computations(hlo: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines; the entry computation also as "ENTRY"."""
    comps: dict[str, list[str]] = {}
    body: list[str] | None = None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head:
            body = comps.setdefault(head.group(2), [])
            if head.group(1):
                comps["ENTRY"] = body
        elif line.startswith("}"):
            body = None
        elif body is not None:
            body.append(line)
    return comps


def _dims(config: str, key: str) -> list[int]:
    found = re.search(rf'"{key}":\s*\[([^\]]*)\]', config)
    return [int(x) for x in re.findall(r"\d+", found.group(1))] if found else []


def gemm_flops(line: str, operand_dims: list[tuple[int, ...]], out_dims: tuple[int, ...]) -> float:
    """2 x output elements x contracted size, from a cuBLAS call's dot dimension numbers."""
    contracted = _dims(line, "lhs_contracting_dimensions")
    if not operand_dims or not contracted:
        return 0.0
    return 2.0 * math.prod(out_dims) * math.prod(operand_dims[0][i] for i in contracted)


def attention_flops(line: str, operand_dims: list[tuple[int, ...]]) -> float:
    """cuDNN flash attention: 2 products forward, 5 backward, of 2·B·H·T·S·head_dim FLOPs each;
    half of them under a causal mask."""
    scores = re.search(r'"intermediate_tensor_shape":.*?"dimensions":\s*\[([^\]]*)\]', line)
    if not scores or not operand_dims:
        return 0.0
    bhts = math.prod(int(x) for x in re.findall(r"\d+", scores.group(1)))
    products = 5 if "Backward" in line else 2
    causal = 0.5 if '"mask_type": "CAUSAL"' in line or '"mask_type":"CAUSAL"' in line else 1.0
    return products * 2.0 * bhts * operand_dims[0][-1] * causal


@dataclass
class Kernel:
    name: str
    kind: str
    bytes: float
    flops: float
    count: int = 1  # times it runs per step (loop trip counts)


@dataclass
class ProgramCost:
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def launches(self) -> int:
        return sum(k.count for k in self.kernels)

    @property
    def bytes(self) -> float:
        return sum(k.bytes * k.count for k in self.kernels)

    @property
    def flops(self) -> float:
        return sum(k.flops * k.count for k in self.kernels)

    def bound_s(self, bandwidth: float, peak: float) -> float:
        return sum(max(k.bytes / bandwidth, k.flops / peak) * k.count for k in self.kernels)

    def by_kind(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for k in self.kernels:
            n, b = out.get(k.kind, (0, 0.0))
            out[k.kind] = (n + k.count, b + k.bytes * k.count)
        return out


def program_cost(hlo: str) -> ProgramCost:
    """The kernels of an optimized GPU HLO module (`compiled.as_text()`), with their traffic and
    FLOPs, loops' bodies counted their trip count (1 when XLA does not know it)."""
    comps = computations(hlo)
    cost = ProgramCost()

    def walk(name: str, count: int) -> None:
        shapes: dict[str, str] = {}
        for line in comps.get(name, []):
            m = INSTRUCTION.match(line)
            if not m:
                continue
            out_name, shape, op, rest = m.groups()
            custom = re.search(r'custom_call_target="([^"]+)"', line)
            if custom and custom.group(1).startswith("__cublas"):
                shape = re.sub(r",?\s*s8\[\d+\](\{0\})?", "", shape)  # the workspace
            shapes[out_name] = shape
            if op == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                body = re.search(r"body=%?([\w.\-]+)", line)
                walk(body.group(1), count * (int(trips.group(1)) if trips else 1))
                continue
            if op in NOT_KERNELS:
                continue
            operands = re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])
            operand_dims = [d for o in operands for _, d in arrays(shapes.get(o, ""))[:1]]
            traffic = sum(nbytes(shapes.get(o, "")) for o in operands) + nbytes(shape)
            kind, flops = op, 0.0
            if op == "fusion":
                kind = "fusion:" + re.search(r"kind=(\w+)", line).group(1)
            elif custom:
                kind = custom.group(1)
                if kind.startswith("__cublas"):
                    flops = gemm_flops(line, operand_dims, arrays(shape)[0][1])
                elif kind.startswith("__cudnn$fmha"):
                    flops = attention_flops(line, operand_dims)
            cost.kernels.append(Kernel(out_name, kind, traffic, flops, count))

    walk("ENTRY", 1)
    return cost


# --- compiling the step for a GPU ----------------------------------------------------------
def gpu_device(target: str):
    import jax
    from jax.experimental.topologies import get_topology_desc

    try:
        topology = get_topology_desc(
            "gpu", "cuda", target_config=target_config(target), topology="1x1x1"
        )
    except (NotImplementedError, RuntimeError) as e:
        sys.exit(
            f"gpu_program.py: jax {jax.__version__} cannot compile for a GPU here ({e}); "
            f'install its CUDA plugin: pip install "jax[cuda13]=={jax.__version__}"'
        )
    return topology.devices[0]


def compiled_step_text(shape, K: int, batch: int, dtype: str, device) -> tuple[str, float]:
    """The optimized HLO of `train_step` (K = 1, as `scaling train` runs one model on one GPU) or
    of `make_packed_step` (K members), and its temporaries in bytes."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from scaling.train.config import RunConfig
    from scaling.train.optim import make_optimizer
    from scaling.train.packed import make_packed_step
    from scaling.train.step import init_params, train_step

    on = NamedSharding(Mesh(np.array([device]), ("d",)), PartitionSpec())
    tx = make_optimizer(RunConfig())
    made: dict = {}

    def make() -> Any:  # parameters as shapes only: nothing is drawn or stored
        made["graphdef"], params = init_params(shape, 0, jnp.dtype(dtype))
        return params

    params = jax.eval_shape(make)
    opt = jax.eval_shape(tx.init, params)
    graphdef = made["graphdef"]

    def spec(tree, lead: tuple[int, ...]):
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(lead + a.shape, a.dtype, sharding=on), tree
        )

    def arg(dims: tuple[int, ...], dt) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(dims, dt, sharding=on)

    tokens = (batch, shape.context + 1)
    if K == 1:
        step = jax.jit(
            lambda p, o, b, lr: train_step(graphdef, p, o, b, lr, tx=tx), donate_argnums=(0, 1)
        )
        args = (spec(params, ()), spec(opt, ()), arg(tokens, jnp.int32), arg((), jnp.float32))
    else:
        step = make_packed_step(graphdef, tx)
        args = (
            spec(params, (K,)),
            spec(opt, (K,)),
            arg((K, *tokens), jnp.int32),
            arg((K,), jnp.float32),
            arg((K,), jnp.bool_),
        )
    compiled = step.lower(*args).compile()
    return compiled.as_text(), float(compiled.memory_analysis().temp_size_in_bytes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="H200", choices=sorted(TARGETS))
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--shapes", default="768:12:12", help="d_model:n_layers:n_heads,...")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16, help="sequences per model per step")
    p.add_argument("--ks", default="1", help="models per step: 1 is one model, more a pack")
    p.add_argument("--kernels", type=int, default=0, help="also list the N heaviest kernels")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    if min(ks) < 1:
        p.error(f"--ks must be >= 1 each, got {args.ks}")
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")  # no CUDA libraries needed
    os.environ.setdefault("JAX_PLATFORMS", "cpu,cuda")
    from scaling.train.runtime import GPU_COMPILE_FLAGS

    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *GPU_COMPILE_FLAGS])
    import jax

    from scaling import flops
    from scaling.model import transformer
    from scaling.model.shape import ModelShape
    from scaling.train.throughput import MFU_CONVENTION

    # The model's GPU choices, made as on a GPU (there is none to ask).
    jax.default_backend = lambda: "gpu"
    transformer.cudnn_attention_available = lambda: True
    device = gpu_device(args.target)
    bandwidth, peak = TARGETS[args.target]["bandwidth"], BF16_PEAK
    print(
        f"deviceless compilation for {args.target} (SM 9.0, {bandwidth / 1e12:.2f} TB/s, "
        f"bfloat16 peak {peak / 1e12:.1f} TFLOP/s), jax {jax.__version__}, {args.dtype}; "
        f"{args.batch} x {args.context} tokens per model per step, vocab {args.vocab}"
    )
    print(
        f"{'d x L':>9} {'N_total':>8} {'K':>3} {'kernels':>7} {'HBM GB':>8} {'GB/member':>9} "
        f"{'TFLOP':>7} {'bound ms':>9} {'of it HBM':>9} {'MFU ceiling':>11} {'temp GB':>8}",
        flush=True,
    )
    rows = []
    for text in args.shapes.split(","):
        d, L, H = (int(x) for x in text.split(":"))
        shape = ModelShape(
            d_model=d, n_layers=L, n_heads=H, vocab_size=args.vocab, context=args.context
        )
        model_flops = flops.flops_per_token(shape, MFU_CONVENTION) * args.batch * args.context
        for K in ks:
            hlo, temp = compiled_step_text(shape, K, args.batch, args.dtype, device)
            cost = program_cost(hlo)
            bound = cost.bound_s(bandwidth, peak)
            hbm_only = sum(
                k.count * k.bytes / bandwidth
                for k in cost.kernels
                if k.bytes / bandwidth >= k.flops / peak
            )
            row = {
                "d_model": d,
                "n_layers": L,
                "n_heads": H,
                "K": K,
                "target": args.target,
                "N_total": flops.param_counts(shape).N_total,
                "kernels": cost.launches,
                "hbm_bytes": cost.bytes,
                "flops": cost.flops,
                "bound_s": bound,
                "hbm_bound_share": hbm_only / bound,
                "temp_bytes": temp,
                "mfu_ceiling": K * model_flops / (peak * bound),
                "by_kind": cost.by_kind(),
            }
            rows.append(row)
            print(
                f"{f'{d}x{L}':>9} {row['N_total']:8.2e} {K:3d} {cost.launches:7d} "
                f"{cost.bytes / 1e9:8.2f} {cost.bytes / 1e9 / K:9.2f} {cost.flops / 1e12:7.2f} "
                f"{bound * 1e3:9.2f} {hbm_only / bound:9.2f} {row['mfu_ceiling']:11.3f} "
                f"{temp / 1e9:8.2f}",
                flush=True,
            )
            for k in sorted(cost.kernels, key=lambda k: -k.bytes * k.count)[: args.kernels]:
                print(
                    f"    {k.bytes * k.count / 1e6:9.1f} MB {k.flops * k.count / 1e9:9.1f} GFLOP "
                    f"x{k.count:<3d} {k.kind:<28} {k.name}"
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
