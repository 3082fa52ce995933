"""`scaling coordcheck`: the coordinate check of parameterizations across widths or depths."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.errors import ConfigError
from scaling.model.shape import VARIANTS, ModelShape

DEFAULT_PARAMETRIZATIONS = {"width": "sp,mup", "depth": "mup,mup-depth"}
DEFAULT_SIZES = {"width": "32,64,128,256", "depth": "2,4,8"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from scaling.model.coordcheck import SLOPE_THRESHOLD

    p = subparsers.add_parser(
        "coordcheck",
        help="coordinate check: activation RMS vs width (or depth) for sp / mup / mup-depth",
        description=(
            "Train a few steps at several widths (or depths), print the slope of log RMS of "
            "each activation against log size per step, and a verdict: a parametrization "
            f"passes when no slope exceeds the threshold (default {SLOPE_THRESHOLD}). "
            "Exit code 1 when a parametrization other than sp fails (sp is the control)."
        ),
    )
    p.add_argument("--axis", choices=("width", "depth"), default="width")
    p.add_argument(
        "--parametrization",
        help="comma-separated (default sp,mup for width; mup,mup-depth for depth)",
    )
    p.add_argument("--sizes", help="widths or depths (default 32,64,128,256 / 2,4,8)")
    p.add_argument("--d-model", type=int, default=64, help="width for a depth check")
    p.add_argument("--n-layers", type=int, default=2, help="depth for a width check")
    p.add_argument("--n-heads", type=int, default=4, help="attention heads (fixed)")
    p.add_argument("--base-width", type=int, help="base_d_model (default: the smallest width)")
    p.add_argument("--base-depth", type=int, help="base_n_layers (default: the smallest depth)")
    p.add_argument("--variant", choices=VARIANTS, default="gpt2")
    p.add_argument("--vocab", type=int, default=64, help="vocabulary of the synthetic data")
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="Adam updates (RMS after 0..steps)")
    p.add_argument("--lr", type=float, default=1e-2, help="constant learning rate")
    p.add_argument("--seeds", type=int, default=2, help="initialisations averaged")
    p.add_argument("--threshold", type=float, default=SLOPE_THRESHOLD, help="largest slope")
    p.add_argument("--plot", help="write the RMS-vs-size figure here (PNG/PDF)")
    p.add_argument("--json", dest="json_out", help="write the measurements and verdicts here")
    p.set_defaults(func=_coordcheck)


def _ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(flag, text, "comma-separated integers, e.g. 32,64,128") from None
    if len(set(values)) < 2 or min(values) <= 0:
        raise ConfigError(flag, text, "at least two distinct positive integers")
    return values


def _coordcheck(args: argparse.Namespace) -> int:
    from scaling import io
    from scaling.model.coordcheck import coord_check, plot, slope_table
    from scaling.model.parametrization import PARAMETRIZATIONS

    axis = args.axis
    sizes = _ints("--sizes", args.sizes or DEFAULT_SIZES[axis])
    names = (args.parametrization or DEFAULT_PARAMETRIZATIONS[axis]).split(",")
    for name in names:
        if name not in PARAMETRIZATIONS:
            raise ConfigError("--parametrization", name, " | ".join(PARAMETRIZATIONS))
    width = min(sizes) if axis == "width" else args.d_model
    depth = min(sizes) if axis == "depth" else args.n_layers
    base_width = args.base_width or width
    base_depth = args.base_depth or depth
    checks = []
    for name in names:
        try:
            template = ModelShape(
                d_model=width,
                n_layers=depth,
                n_heads=args.n_heads,
                vocab_size=args.vocab,
                context=args.context,
                variant=args.variant,
                parametrization=name,
                base_d_model=base_width,
                base_n_layers=base_depth,
            )
        except ConfigError as e:
            raise ConfigError(_flag(e.field), e.value, e.allowed) from None
        checks.append(
            coord_check(
                template,
                sizes,
                axis=axis,
                steps=args.steps,
                lr=args.lr,
                seeds=args.seeds,
                batch_size=args.batch_size,
                threshold=args.threshold,
            )
        )
    print(slope_table(checks))
    for c in checks:
        print(f"{c.parametrization:10} {'PASS' if c.passed else 'FAIL'}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(checks, args.plot)
        print(f"figure: {args.plot}")
    if args.json_out:
        io.atomic_write_json(args.json_out, [c.to_dict() for c in checks])
    failed = [c for c in checks if c.parametrization != "sp" and not c.passed]
    return 1 if failed else 0


def _flag(field: str) -> str:
    return {
        "d_model": "--d-model / --sizes",
        "n_layers": "--n-layers / --sizes",
        "n_heads": "--n-heads",
        "vocab_size": "--vocab",
        "context": "--context",
        "base_d_model": "--base-width",
        "base_n_layers": "--base-depth",
    }.get(field, field)
