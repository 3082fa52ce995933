"""`ModelShape`: the full description of one member of the Transformer family."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scaling.errors import ConfigError

VARIANTS = ("gpt2", "llama", "palm", "performer", "local")
# Every variant but gpt2 uses rotary positions, a SwiGLU MLP and no biases (LLaMA/PaLM style).
ROTARY_VARIANTS = ("llama", "palm", "performer", "local")
DEFAULT_WINDOW = 64  # `local`: keys a query sees (itself and the window - 1 before it)


@dataclass(frozen=True)
class ModelShape:
    """Width, depth and the choices that change parameter and FLOP counts.

    `mlp_ratio` is d_ff / d_model. For the SwiGLU variants (all but gpt2) the default 8/3 keeps
    the MLP's parameter count equal to a GELU MLP of ratio 4 (PaLM itself used 4); d_ff is
    rounded to `mlp_multiple_of`.
    `qk_norm` normalizes queries and keys per head (a norm over head_dim, shared by the heads)
    before the attention logits; it adds parameters, which `scaling.flops` counts.

    Variants: `gpt2` (LayerNorm, GELU, learned positions, biases); `llama` (RMSNorm, SwiGLU,
    rotary, no biases); `palm` (parallel attention and MLP reading one shared LayerNorm without
    bias, SwiGLU, rotary, no biases); `performer` (llama blocks with FAVOR+ linear attention);
    `local` (llama blocks with sliding-window causal attention).
    Variant-only fields, which must stay unset (None) for the other variants, which refuse them:
    `window` (`local`: keys per query, default 64) and `n_features` (`performer`: random
    features per head, default round(head_dim * ln(head_dim)), at least head_dim). Unset
    fields are left out of `to_dict`, so configs of the other variants are unchanged by them.

    `parametrization` (`scaling.model.parametrization`): `sp` (standard, the default), `mup`
    (needs `base_d_model`) or `mup-depth` (needs `base_d_model` and `base_n_layers`). The base
    shape is this shape at the base width and depth (same heads, MLP ratio, vocabulary);
    multipliers are ratios against it, so the model at its base shape is the `sp` model. `sp`
    accepts and ignores a base, so a sweep can cross parametrizations over one base. These
    fields are left out of `to_dict` while all are at their defaults (sp, no base).
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
    window: int | None = None
    n_features: int | None = None
    parametrization: str = "sp"
    base_d_model: int | None = None
    base_n_layers: int | None = None

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
        if self.variant in ROTARY_VARIANTS and self.head_dim % 2:
            raise ConfigError(
                "n_heads", self.n_heads, "a value giving an even head_dim (rotary positions)"
            )
        for name, owner in (("window", "local"), ("n_features", "performer")):
            v = getattr(self, name)
            if v is None:
                continue
            if self.variant != owner:
                raise ConfigError(name, v, f"unset (none) unless variant = {owner}")
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(name, v, "a positive integer (or none for the default)")
        self._check_parametrization()

    def _check_parametrization(self) -> None:
        from scaling.model.parametrization import PARAMETRIZATIONS

        p = self.parametrization
        if p not in PARAMETRIZATIONS:
            raise ConfigError("parametrization", p, " | ".join(PARAMETRIZATIONS))
        for name in ("base_d_model", "base_n_layers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ConfigError(name, v, "a positive integer (or none)")
        needs = {"mup": ("base_d_model",), "mup-depth": ("base_d_model", "base_n_layers")}
        for name in needs.get(p, ()):
            if getattr(self, name) is None:
                raise ConfigError(name, None, f"a positive integer (parametrization = {p})")
        b = self.base_d_model
        if b is not None:
            if b % self.n_heads:
                raise ConfigError(
                    "base_d_model", b, f"a multiple of n_heads={self.n_heads} (same heads)"
                )
            if self.variant in ROTARY_VARIANTS and (b // self.n_heads) % 2:
                raise ConfigError("base_d_model", b, "a value giving an even base head_dim")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        ratio = self.mlp_ratio if self.mlp_ratio is not None else _default_mlp_ratio(self.variant)
        m = self.mlp_multiple_of
        return max(m, round(ratio * self.d_model / m) * m)

    @property
    def norm(self) -> str:
        """ "layernorm" (gpt2), "layernorm_nobias" (palm) or "rmsnorm" (the others)."""
        return {"gpt2": "layernorm", "palm": "layernorm_nobias"}.get(self.variant, "rmsnorm")

    @property
    def swiglu(self) -> bool:
        return self.variant in ROTARY_VARIANTS

    @property
    def rotary(self) -> bool:
        return self.variant in ROTARY_VARIANTS

    @property
    def biases(self) -> bool:
        return self.variant == "gpt2"

    @property
    def parallel(self) -> bool:
        """Attention and MLP read the same normed input and add to the residual together."""
        return self.variant == "palm"

    @property
    def attention_window(self) -> int | None:
        """`local`: the window (keys per query, the query included); None for the others."""
        if self.variant != "local":
            return None
        return self.window if self.window is not None else DEFAULT_WINDOW

    @property
    def features(self) -> int | None:
        """`performer`: random features per head (resolved default); None for the others."""
        if self.variant != "performer":
            return None
        if self.n_features is not None:
            return self.n_features
        K = self.head_dim
        return max(K, round(K * math.log(K)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("window", "n_features"):
            if d[name] is None:
                del d[name]
        if (
            self.parametrization == "sp"
            and self.base_d_model is None
            and self.base_n_layers is None
        ):
            for name in ("parametrization", "base_d_model", "base_n_layers"):
                del d[name]
        return d

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
    return 8.0 / 3.0 if variant in ROTARY_VARIANTS else 4.0  # SwiGLU: 3 matrices of 8/3·d
