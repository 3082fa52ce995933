"""Parameterizations (`sp`, `mup`, `mup-depth`): the ONE table of their multipliers.

Every multiplier is a power of a ratio between the model and its *base shape* (the same shape
at `base_d_model` width and `base_n_layers` depth, same heads, MLP ratio and vocabulary):

    r_in   = fan_in / base fan_in of the weight (d_model for QKV, attention-out and MLP-in;
             d_ff for MLP-out)
    r      = d_model / base_d_model             (the readout's fan-in)
    r_head = head_dim / base head_dim           (head_dim = d_model / n_heads, heads fixed)
    r_L    = n_layers / base_n_layers

A multiplier is `ratio ** exponent`. Each is exactly 1.0 at the base shape, so `mup` at
width = base width (and `mup-depth` also at depth = base depth) is the same model as `sp`:
the same parameters for the same seed, the same losses. Multipliers are relative to this
code's `sp` (GPT-2 initialisation: std 0.02, output projections 0.02/sqrt(2 n_layers),
attention scores q·k/sqrt(head_dim), Adam at `optim.lr` for every parameter).

TP5's Table 3 states muP without multipliers; its Table 8 formulation (the one the `mup`
package implements: MuReadout / MuSharedReadout, MuAdam) moves the readout's 1/fan_in into a
forward multiplier, which is what a tied embedding needs (one matrix, initialised and updated
as an input layer, read out through the multiplier).

Roles: `embedding` (token and position embeddings: an input layer), `hidden` (the four block
matrices), `readout` (the logits: the tied embedding or the untied head), `vector` (norm
scales, biases). "block" means everything inside a residual block (hidden and vector alike).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaling.model.shape import ModelShape

PARAMETRIZATIONS = ("sp", "mup", "mup-depth")

TP5 = "Yang et al. 2022, Tensor Programs V (arXiv:2203.03466)"
TP6 = "Yang et al. 2023, Tensor Programs VI / Depth-muP (arXiv:2310.02244)"
BORDELON = "Bordelon et al. 2023, Depthwise hyperparameter transfer (arXiv:2309.16620)"


@dataclass(frozen=True)
class Rule:
    """One row: `quantity` is multiplied by `ratio ** exponent[parametrization]`."""

    quantity: str
    ratio: str  # r_in | r | r_head | r_L
    exponent: dict[str, float]
    source: str


def _exp(sp: float, mup: float, depth: float) -> dict[str, float]:
    return {"sp": sp, "mup": mup, "mup-depth": depth}


# The table. Exponents per parametrization (sp, mup, mup-depth); 0 = unchanged from sp.
TABLE: tuple[Rule, ...] = (
    # width (muP, Adam)
    Rule("embedding.init_std", "r", _exp(0, 0, 0), f"{TP5}, Table 8: input weights, init var 1"),
    Rule("embedding.adam_lr", "r", _exp(0, 0, 0), f"{TP5}, Tables 3/8: input weights, Adam LR 1"),
    Rule(
        "hidden.init_std", "r_in", _exp(0, -0.5, -0.5), f"{TP5}, Tables 3/8: hidden, var 1/fan_in"
    ),
    Rule("hidden.adam_lr", "r_in", _exp(0, -1, -1), f"{TP5}, Tables 3/8: hidden, Adam LR 1/fan_in"),
    Rule("readout.init_std", "r", _exp(0, 0, 0), f"{TP5}, Table 8: output weights, init var 1"),
    Rule("readout.forward", "r", _exp(0, -1, -1), f"{TP5}, Table 8: output multiplier 1/fan_in"),
    Rule("readout.adam_lr", "r", _exp(0, 0, 0), f"{TP5}, Table 8: output weights, Adam LR 1"),
    Rule("vector.adam_lr", "r", _exp(0, 0, 0), f"{TP5}, Tables 3/8: biases (and gains), Adam LR 1"),
    Rule(
        "attention.logit_scale",
        "r_head",
        _exp(0, -0.5, -0.5),
        f"{TP5}, muP for Transformers: attention logits q·k/d_head, not q·k/sqrt(d_head)",
    ),
    # depth (Depth-muP, Adam)
    Rule(
        "branch.forward",
        "r_L",
        _exp(0, 0, -0.5),
        f"{TP6}, Depth-muP: residual branch x + f(x)/sqrt(L); {BORDELON}",
    ),
    Rule(
        "block.adam_lr",
        "r_L",
        _exp(0, 0, -0.5),
        f"{TP6}, Depth-muP with Adam: block learning rates eta/sqrt(L) (as tabulated for "
        "alpha = 1/2 by Dey et al. 2025, CompleteP, arXiv:2505.01618)",
    ),
    Rule(
        "branch_out.init_std",
        "r_L",
        _exp(0, 0, 0.5),
        "GPT-2's depth factor 1/sqrt(2 n_layers) on output projections is frozen at the base "
        "depth (1/sqrt(2 base_n_layers)): the branch multiplier takes over its role",
    ),
)
_RULES = {rule.quantity: rule for rule in TABLE}


def base_shape(shape: ModelShape) -> ModelShape:
    """The shape the multipliers are relative to (itself where a base is unset)."""
    return shape.replace(
        d_model=shape.base_d_model or shape.d_model,
        n_layers=shape.base_n_layers or shape.n_layers,
        parametrization="sp",
        base_d_model=None,
        base_n_layers=None,
    )


def multiplier(shape: ModelShape, quantity: str, fan_in: str = "d_model") -> float:
    """`quantity`'s multiplier for `shape` (1.0 exactly at the base shape and under `sp`).

    `fan_in` ("d_model" or "d_ff") names a hidden weight's fan-in, for the r_in rules.
    """
    rule = _RULES[quantity]
    e = rule.exponent[shape.parametrization]
    if e == 0:
        return 1.0
    base = base_shape(shape)
    if rule.ratio == "r_in":
        num, den = getattr(shape, fan_in), getattr(base, fan_in)
    elif rule.ratio == "r":
        num, den = shape.d_model, base.d_model
    elif rule.ratio == "r_head":
        num, den = shape.head_dim, base.head_dim
    else:
        num, den = shape.n_layers, base.n_layers
    if num == den:
        return 1.0
    return (num / den) ** e


# Which parameter plays which role, by its path in the model's state (a/b/c).
_HIDDEN_FAN_IN = {"attn/w_qkv": "d_model", "attn/w_out": "d_model", "mlp/w_in": "d_model"}
_HIDDEN_FAN_IN["mlp/w_out"] = "d_ff"
_EMBEDDINGS = ("embed", "pos_embed")


def role(path: str) -> tuple[str, str | None]:
    """(role, fan_in) of the parameter at `path` ("blocks/0/attn/w_qkv" -> ("hidden",
    "d_model")); role is embedding | hidden | readout | vector."""
    if path in _EMBEDDINGS:
        return "embedding", None
    if path == "head":
        return "readout", None
    m = re.fullmatch(r"blocks/\d+/(attn/w_qkv|attn/w_out|mlp/w_in|mlp/w_out)", path)
    if m:
        return "hidden", _HIDDEN_FAN_IN[m.group(1)]
    return "vector", None


def lr_multiplier(shape: ModelShape, path: str) -> float:
    """Adam learning-rate multiplier of the parameter at `path` (1.0 under `sp`)."""
    if shape.parametrization == "sp":
        return 1.0
    kind, fan_in = role(path)
    if kind == "hidden":
        m = multiplier(shape, "hidden.adam_lr", fan_in)
    else:
        m = multiplier(shape, f"{kind}.adam_lr")
    if path.startswith("blocks/"):
        m *= multiplier(shape, "block.adam_lr")
    return m


def table_text() -> str:
    """The table as aligned text (for docs and `scaling coordcheck --table`)."""
    lines = [f"{'quantity':24} {'ratio':7} {'sp':>5} {'mup':>5} {'mup-depth':>9}  source"]
    for r in TABLE:
        e = r.exponent
        lines.append(
            f"{r.quantity:24} {r.ratio:7} {_fmt(e['sp']):>5} {_fmt(e['mup']):>5} "
            f"{_fmt(e['mup-depth']):>9}  {r.source}"
        )
    return "\n".join(lines)


def _fmt(e: float) -> str:
    return "0" if e == 0 else (f"{e:+g}" if not math.isclose(abs(e), 0.5) else f"{e:+.1f}")
