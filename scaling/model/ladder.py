"""Ladders: turn target non-embedding parameter counts into valid `ModelShape`s.

A recipe fixes the head dimension and a preferred aspect ratio d_model / n_layers. Widths are
multiples of the head dimension (n_heads = d_model / head_dim); models narrower than one head
use a single head of width d_model (d_model even, from 16), so targets down to ~1e4
exist. Among all (n_layers, d_model) whose N_nonembedding (from `scaling.flops`) is within
`tolerance` of the target, the one with the aspect ratio nearest the recipe's is returned
(then the nearest N); if none is that close, the nearest N. A result more than
`MAX_RELATIVE_ERROR` from the target is refused with a ConfigError saying why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from scaling import flops
from scaling.errors import ConfigError
from scaling.model.shape import ROTARY_VARIANTS, VARIANTS, ModelShape

RECIPES: dict[str, dict[str, float]] = {
    "default": {"head_dim": 64, "aspect": 64.0},
    "wide": {"head_dim": 64, "aspect": 128.0},
    "deep": {"head_dim": 64, "aspect": 32.0},
    "wide-heads": {"head_dim": 128, "aspect": 128.0},
    "narrow-heads": {"head_dim": 32, "aspect": 64.0},  # a denser width grid for small models
}
MIN_D_MODEL = 16  # narrowest single-head model
SMALL_D_STEP = 2  # width step below one head_dim (one head; even for rotary)
MAX_RELATIVE_ERROR = 0.10
DEFAULT_TOLERANCE = 0.05


def _positive(field: str, value: Any, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(field, value, "a positive integer" if integer else "a positive number")


def _recipe(recipe: str, head_dim: int | None, aspect: float | None) -> tuple[int, float]:
    if recipe not in RECIPES:
        raise ConfigError("recipe", recipe, " | ".join(RECIPES))
    head_dim = int(RECIPES[recipe]["head_dim"]) if head_dim is None else head_dim
    aspect = float(RECIPES[recipe]["aspect"]) if aspect is None else aspect
    _positive("head_dim", head_dim, integer=True)
    _positive("aspect", aspect)
    return head_dim, float(aspect)


def _width(i: int, head_dim: int) -> int:
    """The i-th allowed d_model: 16, 18, ... below head_dim, then multiples of head_dim."""
    small = max(0, -(-(head_dim - MIN_D_MODEL) // SMALL_D_STEP))  # widths 16.. < head_dim
    if i < small:
        return MIN_D_MODEL + SMALL_D_STEP * i
    return head_dim * (i - small + 1)


def _make(d_model: int, n_layers: int, head_dim: int, kw: dict[str, Any]) -> ModelShape:
    n_heads = d_model // head_dim if d_model >= head_dim else 1
    return ModelShape(d_model=d_model, n_layers=n_layers, n_heads=n_heads, **kw)


def _n(shape: ModelShape) -> int:
    return flops.param_counts(shape).N_nonembedding


def _candidates(target: float, head_dim: int, aspect: float, kw: dict) -> Iterator[ModelShape]:
    """For each depth, the two widths whose N brackets the target (N grows with width)."""
    ideal_layers = (target / (12.0 * aspect**2)) ** (1.0 / 3.0)
    for n_layers in range(1, int(8 * ideal_layers) + 16):
        if _n(_make(_width(0, head_dim), n_layers, head_dim, kw)) > 2 * target:
            break
        hi = 1
        while _n(_make(_width(hi, head_dim), n_layers, head_dim, kw)) < target:
            hi *= 2
        lo = 0  # invariant: N(width(lo)) may be < target, N(width(hi)) >= target
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _n(_make(_width(mid, head_dim), n_layers, head_dim, kw)) < target:
                lo = mid
            else:
                hi = mid
        for i in {lo, hi}:
            yield _make(_width(i, head_dim), n_layers, head_dim, kw)


def shape_for_params(
    target_nonembedding: float,
    *,
    variant: str = "gpt2",
    recipe: str = "default",
    head_dim: int | None = None,
    aspect: float | None = None,
    vocab_size: int = 256,
    context: int = 256,
    mlp_ratio: float | None = None,
    tied_embeddings: bool = True,
    qk_norm: bool = False,
    mlp_multiple_of: int = 1,
    window: int | None = None,
    n_features: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ModelShape:
    """The valid shape whose N_nonembedding is nearest `target_nonembedding` (see module doc).

    `window` (`local`) and `n_features` (`performer`) do not change N; they are passed on to
    every shape (unset: each variant's default)."""
    _positive("params", target_nonembedding)
    if variant not in VARIANTS:
        raise ConfigError("variant", variant, " | ".join(VARIANTS))
    head_dim, aspect = _recipe(recipe, head_dim, aspect)
    if variant in ROTARY_VARIANTS and head_dim % 2:
        raise ConfigError("head_dim", head_dim, f"an even number for {variant} (rotary positions)")
    kw = dict(
        vocab_size=vocab_size,
        context=context,
        variant=variant,
        mlp_ratio=mlp_ratio,
        tied_embeddings=tied_embeddings,
        qk_norm=qk_norm,
        mlp_multiple_of=mlp_multiple_of,
        window=window,
        n_features=n_features,
    )
    target = float(target_nonembedding)
    smallest = _make(_width(0, head_dim), 1, head_dim, kw)
    n_min = _n(smallest)
    if target < n_min * (1 - MAX_RELATIVE_ERROR):
        raise ConfigError(
            "params",
            target_nonembedding,
            f">= {math.ceil(n_min * (1 - MAX_RELATIVE_ERROR)):,} N_nonembedding: the smallest "
            f"{variant} model (d_model={smallest.d_model}, n_layers=1) has {n_min:,}",
        )

    def error(s: ModelShape) -> float:
        return abs(math.log(_n(s) / target))

    def aspect_error(s: ModelShape) -> float:
        return abs(math.log(s.d_model / s.n_layers / aspect))

    cands = list(_candidates(target, head_dim, aspect, kw))
    close = [s for s in cands if error(s) <= math.log1p(tolerance)]
    best = min(close, key=lambda s: (aspect_error(s), error(s))) if close else min(cands, key=error)
    if abs(_n(best) / target - 1) > MAX_RELATIVE_ERROR:
        raise ConfigError(
            "params",
            target_nonembedding,
            f"a size the recipe can build within {MAX_RELATIVE_ERROR:.0%}; the nearest "
            f"{variant} shape has N_nonembedding {_n(best):,} (head_dim={head_dim})",
        )
    return best


def geometric_ladder(n_min: float, n_max: float, k: int, **kw: Any) -> list[ModelShape]:
    """K shapes for targets spaced geometrically from n_min to n_max (N strictly increasing).

    Keywords are those of `shape_for_params`. Raises ConfigError when the range is too narrow
    for K distinct shapes.
    """
    _positive("n_min", n_min)
    _positive("n_max", n_max)
    _positive("k", k, integer=True)
    if k > 1 and not n_max > n_min:
        raise ConfigError("n_max", n_max, f"a number > n_min={n_min:g} when k > 1")
    ratio = (n_max / n_min) ** (1.0 / (k - 1)) if k > 1 else 1.0
    shapes = [shape_for_params(n_min * ratio**i, **kw) for i in range(k)]
    sizes = [_n(s) for s in shapes]
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise ConfigError(
            "k", k, f"fewer sizes: {n_min:g}..{n_max:g} has too few distinct shapes for {k}"
        )
    return shapes
