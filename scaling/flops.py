"""Every parameter and FLOP count of the Transformer family, under named conventions.

This module is the only place these numbers are computed (nothing else multiplies 6·N·D).
Symbols: d = d_model, L = n_layers, H = n_heads, K = head_dim (H·K = d), f = d_ff,
V = vocab_size, T = context (the sequence length a token is trained at).

Parameters (exactly what `scaling.model.transformer` instantiates; a test checks equality):
- `N_embedding`: token embedding V·d, + learned positions T·d (`gpt2`), + output head d·V
  when embeddings are untied.
- `N_nonembedding` (Kaplan et al. 2020): everything else — attention (fused QKV 3d², output
  d²), MLP (2·d·f for GELU, 3·d·f for SwiGLU: every variant but gpt2), norms (LayerNorm 2d,
  RMSNorm d, PaLM's bias-free LayerNorm d; two per layer, one for `palm`'s parallel block, and
  the final norm), biases (`gpt2`: 3d + d + f + d per layer), QK-norm (per layer 2 norms over
  K). `performer`'s random projection is a fixed constant, not a parameter: not counted.
- `N_chinchilla` (Hoffmann et al. 2022): all parameters *including* the embeddings. Their Table
  A9 sizes are reproduced by non-embedding + one V·d embedding matrix (tied); we count every
  trainable tensor (token embedding, learned positions, an untied head), so for this family
  N_chinchilla == N_total. It is a separate field so results name the convention they use.

Forward FLOPs per token (training = forward + backward = 3 × forward for every convention):
- `kaplan`: 2·N_nonembedding (training 6N): parameters only, no attention operations, for
  every variant.
- `attention`: 2·N_nonembedding + 2·L·T·d (training 6N + 6·L·T·d), Kaplan's Table 1 context
  term as published. The two attention matmuls (Q·Kᵀ logits and probabilities·V) cost 2·T·d
  each per token per layer over the full T×T score matrix, 4·L·T·d in all; the causal mask
  lets an implementation skip about half, giving 2·L·T·d. So this convention is the *causally
  halved* count (XLA, computing the full masked matrix, does 4·L·T·d).
- `chinchilla`: Hoffmann et al. 2022, Appendix F, per sequence of T tokens, divided by T:
  embeddings 2·V·d; per layer QKV 2·3·d·(K·H), logits 2·T·(K·H), softmax 3·H·T, softmax@V
  2·T·(K·H), output projection 2·(K·H)·d, dense block 2·d·f per MLP matrix (2 for GELU, 3 for
  SwiGLU — the appendix's 2 matrices, made variant-aware); final logits 2·d·V. No causal
  halving; norms, biases, positions, rotary and nonlinearities are not counted (as there).

Attention operations per token per layer (`attention_flops_per_token`), by variant:
- softmax (`gpt2`, `llama`, `palm`) and `local`: a query sees `keys` keys, 4·d·keys FLOPs
  (logits and mixing) and, for `chinchilla`, 3·H·keys for the softmax. Causal, w =
  min(window, T) (w = T without a window): `chinchilla` counts keys = w (no causal saving,
  as Appendix F); `attention` counts keys = w·(1 - w/(2T)), the mean of the causal band
  (T/2 at w = T, Kaplan's halving; -> w when w << T). Bidirectional (causal=False, masked
  LM): keys = min(2w - 1, T) in both (no halving). `local`'s blocked kernel computes 2w keys
  per query (half masked), 2x the count, as full attention's masked triangle is.
- `performer` (FAVOR+, M random features, J = K + 1: values plus the normalizer): feature
  projections of q and k 2·2·d·M, state update phi(k)·[v,1]ᵀ 2·H·M·J, state read phi(q)·S
  2·H·M·J — the prefix-sum algorithm, the same causal or not; no triangle, so no halving
  (`attention` = these matmuls; `chinchilla` adds 3 FLOPs per feature exponential, 2·3·H·M,
  as it counts 3 per softmax entry). The chunked kernel also computes a masked C×C block per
  chunk (C = 64), work the count leaves out as it leaves out the masked triangle.
Counts are for training sequences of `context` tokens and, unless causal=False is passed,
causal attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaling.errors import ConfigError
from scaling.model.shape import ModelShape

CONVENTIONS = ("kaplan", "attention", "chinchilla")
BACKWARD_TO_FORWARD = 2.0  # backward pass = 2 × forward, so training = 3 × forward


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one shape under each convention (see the module docstring)."""

    N_total: int
    N_embedding: int
    N_nonembedding: int
    N_chinchilla: int


def _mlp_matrices(shape: ModelShape) -> int:
    return 3 if shape.swiglu else 2


def _norm_params(dim: int, shape: ModelShape) -> int:
    # LayerNorm scale + bias | RMSNorm or bias-free LayerNorm: scale
    return 2 * dim if shape.norm == "layernorm" else dim


def layer_params(shape: ModelShape) -> int:
    """Parameters of one residual block (attention + MLP + their norms)."""
    d, f, K = shape.d_model, shape.d_ff, shape.head_dim
    norms = 1 if shape.parallel else 2
    n = 4 * d * d + _mlp_matrices(shape) * d * f + norms * _norm_params(d, shape)
    if shape.biases:
        n += 3 * d + d + f + d  # biases of QKV, attention output, MLP in, MLP out
    if shape.qk_norm:
        n += 2 * _norm_params(K, shape)
    return n


def param_counts(shape: ModelShape) -> ParamCounts:
    """Exact parameter counts of the model `scaling.model.transformer` builds for `shape`."""
    d, V = shape.d_model, shape.vocab_size
    embedding = V * d
    if not shape.rotary:
        embedding += shape.context * d  # learned absolute positions
    if not shape.tied_embeddings:
        embedding += d * V
    nonembedding = shape.n_layers * layer_params(shape) + _norm_params(d, shape)
    total = embedding + nonembedding
    return ParamCounts(
        N_total=total, N_embedding=embedding, N_nonembedding=nonembedding, N_chinchilla=total
    )


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ConfigError("convention", convention, " | ".join(CONVENTIONS))


def attention_keys(shape: ModelShape, convention: str, *, causal: bool = True) -> float:
    """Keys per query counted for softmax attention (see the module docstring)."""
    T = shape.context
    w = min(shape.attention_window or T, T)
    if not causal:
        return float(min(2 * w - 1, T))
    return float(w) if convention == "chinchilla" else w * (1.0 - w / (2.0 * T))


def attention_flops_per_token(shape: ModelShape, convention: str, *, causal: bool = True) -> float:
    """Forward FLOPs per token of one layer's attention operations — everything but the
    parameter matmuls (QKV and output projections) — under `convention` (0 for `kaplan`)."""
    _check_convention(convention)
    if convention == "kaplan":
        return 0.0
    d, H = shape.d_model, shape.n_heads
    M = shape.features
    if M is not None:  # FAVOR+: features, state update and read; exp at 3 FLOPs (chinchilla)
        J = shape.head_dim + 1
        matmuls = 2 * 2 * d * M + 2 * 2 * H * M * J
        return float(matmuls + (2 * 3 * H * M if convention == "chinchilla" else 0))
    keys = attention_keys(shape, convention, causal=causal)
    softmax = 3 * H * keys if convention == "chinchilla" else 0.0
    return 2 * 2 * d * keys + softmax


def _chinchilla_forward_per_token(shape: ModelShape, causal: bool) -> float:
    d, L, H, V = shape.d_model, shape.n_layers, shape.n_heads, shape.vocab_size
    attn_width = shape.head_dim * H  # Appendix F's key_size × num_heads
    embeddings = 2 * V * d
    qkv = 2 * 3 * d * attn_width
    attention = attention_flops_per_token(shape, "chinchilla", causal=causal)
    out_proj = 2 * attn_width * d
    dense = 2 * _mlp_matrices(shape) * d * shape.d_ff
    final_logits = 2 * d * V
    layer = qkv + attention + out_proj + dense
    return float(embeddings + L * layer + final_logits)


def forward_flops_per_token(shape: ModelShape, convention: str, *, causal: bool = True) -> float:
    """FLOPs of one forward pass per token (a multiply-add counts 2) under `convention`."""
    _check_convention(convention)
    if convention == "chinchilla":
        return _chinchilla_forward_per_token(shape, causal)
    n = 2.0 * param_counts(shape).N_nonembedding
    if convention == "attention":
        n += shape.n_layers * attention_flops_per_token(shape, convention, causal=causal)
    return n


def flops_per_token(shape: ModelShape, convention: str, *, causal: bool = True) -> float:
    """Training FLOPs per token: forward + backward (2 × forward) = 3 × forward."""
    forward = forward_flops_per_token(shape, convention, causal=causal)
    return (1.0 + BACKWARD_TO_FORWARD) * forward


def training_flops(
    shape: ModelShape, tokens: float, convention: str, *, causal: bool = True
) -> float:
    """Training compute C for `tokens` tokens (D) under `convention`: flops_per_token × D."""
    if not tokens >= 0:
        raise ConfigError("tokens", tokens, "a non-negative number")
    return flops_per_token(shape, convention, causal=causal) * float(tokens)


def tokens_for_flops(
    shape: ModelShape, flops: float, convention: str, *, causal: bool = True
) -> float:
    """Tokens D that a training budget of `flops` (C) buys under `convention`: C / per-token."""
    if not flops >= 0:
        raise ConfigError("flops", flops, "a non-negative number")
    return float(flops) / flops_per_token(shape, convention, causal=causal)


def counts_dict(shape: ModelShape) -> dict[str, Any]:
    """The JSON object of `scaling count --json`: shape fields, N_* and per-token FLOPs."""
    counts = param_counts(shape)
    return {
        **shape.to_dict(),
        "head_dim": shape.head_dim,
        "d_ff": shape.d_ff,
        **({"window": shape.attention_window} if shape.variant == "local" else {}),
        **({"n_features": shape.features} if shape.variant == "performer" else {}),
        "N_total": counts.N_total,
        "N_embedding": counts.N_embedding,
        "N_nonembedding": counts.N_nonembedding,
        "N_chinchilla": counts.N_chinchilla,
        "flops_per_token": {c: flops_per_token(shape, c) for c in CONVENTIONS},
        "forward_flops_per_token": {c: forward_flops_per_token(shape, c) for c in CONVENTIONS},
    }
