"""`ModelShape`: the full description of one member of the Transformer family."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scaling.errors import ConfigError

VARIANTS = ("gpt2", "llama")


@dataclass(frozen=True)
class ModelShape:
    """Width, depth and the choices that change parameter and FLOP counts.

    `mlp_ratio` is d_ff / d_model. For `llama` (SwiGLU) the default 8/3 keeps the MLP's
    parameter count equal to a GELU MLP of ratio 4; d_ff is rounded to `mlp_multiple_of`.
    `qk_norm` normalizes queries and keys per head (a norm over head_dim, shared by the heads)
    before the attention logits; it adds parameters, which `scaling.flops` counts.
    """

    d_model: int
    n_layers: int
    n_heads: int
    vocab_size: int = 256
    context: int = 256
    variant: str = "gpt2"
    mlp_ratio: float | None = None
    tied_embeddings: bool = True
    mlp_multiple_of: int = 1
    qk_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "vocab_size", "context", "mlp_multiple_of"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(name, v, "a positive integer")
        if self.variant not in VARIANTS:
            raise ConfigError("variant", self.variant, " | ".join(VARIANTS))
        if self.d_model % self.n_heads:
            raise ConfigError("n_heads", self.n_heads, f"a divisor of d_model={self.d_model}")
        for name in ("tied_embeddings", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false")
        r = self.mlp_ratio
        if r is not None and (
            not isinstance(r, int | float) or isinstance(r, bool) or not 0 < r < math.inf
        ):
            raise ConfigError("mlp_ratio", r, "a positive number (or none for the default)")
        if self.variant == "llama" and self.head_dim % 2:
            raise ConfigError(
                "n_heads", self.n_heads, "a value giving an even head_dim (rotary positions)"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        ratio = self.mlp_ratio if self.mlp_ratio is not None else _default_mlp_ratio(self.variant)
        m = self.mlp_multiple_of
        return max(m, round(ratio * self.d_model / m) * m)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelShape:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError("model." + unknown[0], d[unknown[0]], ", ".join(sorted(fields)))
        return cls(**d)

    def replace(self, **changes: Any) -> ModelShape:
        return dataclasses.replace(self, **changes)


def _default_mlp_ratio(variant: str) -> float:
    return 8.0 / 3.0 if variant == "llama" else 4.0
