"""`scaling count` (parameters and FLOPs of one shape) and `scaling plan` (targets -> shapes)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from scaling import flops
from scaling.errors import ConfigError
from scaling.model.shape import VARIANTS, ModelShape

# ModelShape / ladder field -> the flag a user typed, so errors name what they can change.
_FLAGS = {
    "d_model": "--d-model",
    "n_layers": "--n-layers",
    "n_heads": "--n-heads",
    "vocab_size": "--vocab",
    "context": "--context",
    "variant": "--variant",
    "mlp_ratio": "--mlp-ratio",
    "head_dim": "--head-dim",
    "aspect": "--aspect",
    "recipe": "--recipe",
    "params": "--params",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    count = subparsers.add_parser("count", help="parameters and FLOPs/token of one model shape")
    count.add_argument("--d-model", type=int, required=True, help="width")
    count.add_argument("--n-layers", type=int, required=True, help="depth")
    heads = count.add_mutually_exclusive_group(required=True)
    heads.add_argument("--n-heads", type=int, help="attention heads")
    heads.add_argument("--head-dim", type=int, help="head width (n_heads = d_model / head_dim)")
    _shape_options(count)
    count.set_defaults(func=_count)

    plan = subparsers.add_parser("plan", help="shapes nearest target non-embedding sizes")
    plan.add_argument(
        "--params", required=True, help="target N_nonembedding, comma-separated (1e5,1e6,3M)"
    )
    plan.add_argument("--recipe", default="default", help="named recipe (head_dim, aspect)")
    plan.add_argument("--head-dim", type=int, help="head width (overrides the recipe)")
    plan.add_argument("--aspect", type=float, help="d_model / n_layers (overrides the recipe)")
    _shape_options(plan)
    plan.set_defaults(func=_plan)


def _shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", type=int, default=256, help="vocabulary size (default 256)")
    p.add_argument("--context", type=int, default=256, help="sequence length (default 256)")
    p.add_argument("--variant", choices=VARIANTS, default="gpt2", help="architecture")
    p.add_argument("--mlp-ratio", type=float, help="d_ff / d_model (default 4; llama 8/3)")
    p.add_argument("--untied", action="store_true", help="separate output head")
    p.add_argument("--qk-norm", action="store_true", help="normalize queries and keys")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _flagged(e: ConfigError) -> ConfigError:
    """The same error, naming the command-line flag instead of the field."""
    flag = _FLAGS.get(e.field)
    return ConfigError(flag, e.value, e.allowed) if flag else e


def _shape_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        vocab_size=args.vocab,
        context=args.context,
        variant=args.variant,
        mlp_ratio=args.mlp_ratio,
        tied_embeddings=not args.untied,
        qk_norm=args.qk_norm,
    )


def _count(args: argparse.Namespace) -> int:
    try:
        if args.head_dim is not None:
            if args.head_dim <= 0 or args.d_model % args.head_dim:
                raise ConfigError("head_dim", args.head_dim, f"a divisor of d_model={args.d_model}")
            n_heads = args.d_model // args.head_dim
        else:
            n_heads = args.n_heads
        shape = ModelShape(
            d_model=args.d_model, n_layers=args.n_layers, n_heads=n_heads, **_shape_kwargs(args)
        )
    except ConfigError as e:
        raise _flagged(e) from None
    counts = flops.counts_dict(shape)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    rows = [(k, _fmt(v)) for k, v in counts.items() if not isinstance(v, dict)]
    for name in flops.CONVENTIONS:
        fwd = counts["forward_flops_per_token"][name]
        rows.append((f"flops_per_token.{name}", f"{counts['flops_per_token'][name]:.4g}"))
        rows.append((f"  (forward {name})", f"{fwd:.4g}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def parse_sizes(text: str) -> list[float]:
    """'1e5,3M,2.5e7' -> [1e5, 3e6, 2.5e7]; k/M/B (or G)/T suffixes; refuses anything else."""
    suffix = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
    sizes = []
    for raw in text.split(","):
        item = raw.strip()
        scale = suffix.get(item[-1:].lower(), 1.0)
        number = item[:-1] if scale != 1.0 else item
        try:
            value = float(number) * scale
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ConfigError("--params", item, "positive numbers separated by commas, e.g. 1e5,3M")
        sizes.append(value)
    return sizes


def _plan(args: argparse.Namespace) -> int:
    from scaling.model.ladder import shape_for_params

    targets = parse_sizes(args.params)
    rows = []
    for target in targets:
        try:
            shape = shape_for_params(
                target,
                recipe=args.recipe,
                head_dim=args.head_dim,
                aspect=args.aspect,
                **_shape_kwargs(args),
            )
        except ConfigError as e:
            raise _flagged(e) from None
        rows.append({"target_nonembedding": target, **flops.counts_dict(shape)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ["target", "d_model", "n_layers", "n_heads", "head_dim", "d_ff", "N_nonemb"]
    header += ["error", "N_total", "6N/tok", "attn/tok", "chin/tok"]
    table = [header]
    for r in rows:
        f = r["flops_per_token"]
        table.append(
            [
                f"{r['target_nonembedding']:.3g}",
                *(str(r[k]) for k in ("d_model", "n_layers", "n_heads", "head_dim", "d_ff")),
                f"{r['N_nonembedding']:,}",
                f"{r['N_nonembedding'] / r['target_nonembedding'] - 1:+.1%}",
                f"{r['N_total']:,}",
                *(f"{f[c]:.3g}" for c in flops.CONVENTIONS),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"variant={args.variant} vocab={args.vocab} context={args.context} (FLOPs: training)")
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
