"""The decoder-only causal Transformer family in flax.nnx, described by a `ModelShape`.

Two variants: `gpt2` (LayerNorm, GELU MLP, learned absolute positions, biases) and `llama`
(RMSNorm, SwiGLU MLP, rotary positions, no biases). Parameters are float32; `compute_dtype`
(e.g. bfloat16) is what matmuls run in. Norms, softmax and logits are computed in float32.
The forward pass is deterministic and keeps no hidden state, so it can be split once with
`nnx.split` and jitted (or vmapped over stacked states) as a pure function.

Every parameter created here is counted by `scaling.flops.param_counts`; a test asserts the
two agree exactly, so a change here needs the same change there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model.shape import ModelShape

INIT_STD = 0.02
NORM_EPS = 1e-5
ROPE_BASE = 10_000.0


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class Norm(nnx.Module):
    """LayerNorm (scale and bias) for `gpt2`, RMSNorm (scale only) for `llama`; float32 math."""

    def __init__(self, dim: int, variant: str):
        self.rms = variant == "llama"
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = None if self.rms else nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.rms:
            x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + NORM_EPS)
            return (x * self.scale[...]).astype(dtype)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        x = (x - mean) * jax.lax.rsqrt(var + NORM_EPS)
        return (x * self.scale[...] + self.bias[...]).astype(dtype)


def rotary(x_BTHK: jax.Array) -> jax.Array:
    """Rotary position embedding (half-split layout): pairs (i, i + K/2) rotate by angle t*f_i."""
    T, K = x_BTHK.shape[1], x_BTHK.shape[3]
    freq = ROPE_BASE ** (-jnp.arange(0, K // 2, dtype=jnp.float32) / (K // 2))
    angle_TF = jnp.arange(T, dtype=jnp.float32)[:, None] * freq[None, :]
    cos = jnp.cos(angle_TF)[None, :, None, :]
    sin = jnp.sin(angle_TF)[None, :, None, :]
    x = x_BTHK.astype(jnp.float32)
    x1, x2 = x[..., : K // 2], x[..., K // 2 :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHK.dtype)


class Attention(nnx.Module):
    """Causal multi-head self-attention with one fused QKV projection."""

    def __init__(self, shape: ModelShape, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        d, H, K = shape.d_model, shape.n_heads, shape.head_dim
        self.n_heads, self.head_dim = H, K
        self.rotary = shape.variant == "llama"
        self.compute_dtype = compute_dtype
        bias = shape.variant == "gpt2"
        self.w_qkv = _normal(rngs, (d, 3, H, K), INIT_STD)
        self.b_qkv = nnx.Param(jnp.zeros((3, H, K), jnp.float32)) if bias else None
        self.w_out = _normal(rngs, (H, K, d), INIT_STD / math.sqrt(2 * shape.n_layers))
        self.b_out = nnx.Param(jnp.zeros((d,), jnp.float32)) if bias else None
        self.q_norm = Norm(K, shape.variant) if shape.qk_norm else None
        self.k_norm = Norm(K, shape.variant) if shape.qk_norm else None

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cd = self.compute_dtype
        qkv = jnp.einsum("btd,dchk->cbthk", x_BTD, self.w_qkv[...].astype(cd))
        if self.b_qkv is not None:
            qkv = qkv + self.b_qkv[...].astype(cd)[:, None, None]
        q_BTHK, k_BTHK, v_BTHK = qkv[0], qkv[1], qkv[2]
        if self.q_norm is not None:
            q_BTHK, k_BTHK = self.q_norm(q_BTHK), self.k_norm(k_BTHK)
        if self.rotary:
            q_BTHK, k_BTHK = rotary(q_BTHK), rotary(k_BTHK)
        T = x_BTD.shape[1]
        scores_BHTS = jnp.einsum(
            "bthk,bshk->bhts", q_BTHK, k_BTHK, preferred_element_type=jnp.float32
        ) / math.sqrt(self.head_dim)
        causal_TS = jnp.tril(jnp.ones((T, T), dtype=bool))
        scores_BHTS = jnp.where(causal_TS, scores_BHTS, jnp.finfo(jnp.float32).min)
        probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1).astype(cd)
        y_BTHK = jnp.einsum("bhts,bshk->bthk", probs_BHTS, v_BTHK)
        y_BTD = jnp.einsum("bthk,hkd->btd", y_BTHK, self.w_out[...].astype(cd))
        if self.b_out is not None:
            y_BTD = y_BTD + self.b_out[...].astype(cd)
        return y_BTD


class MLP(nnx.Module):
    """GELU MLP (`gpt2`, with biases) or SwiGLU MLP (`llama`, three matrices, no biases)."""

    def __init__(self, shape: ModelShape, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        d, f = shape.d_model, shape.d_ff
        self.swiglu = shape.variant == "llama"
        self.compute_dtype = compute_dtype
        out_std = INIT_STD / math.sqrt(2 * shape.n_layers)
        if self.swiglu:
            self.w_in = _normal(rngs, (d, 2, f), INIT_STD)  # gate and up projections, fused
            self.b_in = None
        else:
            self.w_in = _normal(rngs, (d, f), INIT_STD)
            self.b_in = nnx.Param(jnp.zeros((f,), jnp.float32))
        self.w_out = _normal(rngs, (f, d), out_std)
        self.b_out = None if self.swiglu else nnx.Param(jnp.zeros((d,), jnp.float32))

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cd = self.compute_dtype
        if self.swiglu:
            h = jnp.einsum("btd,dcf->cbtf", x_BTD, self.w_in[...].astype(cd))
            h_BTF = jax.nn.silu(h[0]) * h[1]
        else:
            h_BTF = x_BTD @ self.w_in[...].astype(cd) + self.b_in[...].astype(cd)
            h_BTF = jax.nn.gelu(h_BTF, approximate=True)
        y_BTD = h_BTF @ self.w_out[...].astype(cd)
        if self.b_out is not None:
            y_BTD = y_BTD + self.b_out[...].astype(cd)
        return y_BTD


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, shape: ModelShape, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        self.norm_attn = Norm(shape.d_model, shape.variant)
        self.attn = Attention(shape, rngs=rngs, compute_dtype=compute_dtype)
        self.norm_mlp = Norm(shape.d_model, shape.variant)
        self.mlp = MLP(shape, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x_BTD = x_BTD + self.attn(self.norm_attn(x_BTD))
        return x_BTD + self.mlp(self.norm_mlp(x_BTD))


class Transformer(nnx.Module):
    """Decoder-only causal language model: `model(tokens_BT int32) -> logits_BTV float32`."""

    def __init__(self, shape: ModelShape, *, rngs: nnx.Rngs, compute_dtype=jnp.float32):
        self.shape = shape
        self.compute_dtype = jnp.dtype(compute_dtype)
        d, V = shape.d_model, shape.vocab_size
        self.embed = _normal(rngs, (V, d), INIT_STD)
        self.pos_embed = (
            _normal(rngs, (shape.context, d), INIT_STD) if shape.variant == "gpt2" else None
        )
        self.blocks = nnx.List(
            [
                Block(shape, rngs=rngs, compute_dtype=self.compute_dtype)
                for _ in range(shape.n_layers)
            ]
        )
        self.norm_final = Norm(d, shape.variant)
        self.head = None if shape.tied_embeddings else _normal(rngs, (d, V), INIT_STD)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        seq_len = tokens_BT.shape[1]
        if seq_len > self.shape.context:
            raise ValueError(f"sequence length {seq_len} exceeds context {self.shape.context}")
        cd = self.compute_dtype
        x_BTD = jnp.take(self.embed[...], tokens_BT, axis=0)
        if self.pos_embed is not None:
            x_BTD = x_BTD + self.pos_embed[...][:seq_len]
        x_BTD = x_BTD.astype(cd)
        for block in self.blocks:
            x_BTD = block(x_BTD)
        x_BTD = self.norm_final(x_BTD)
        w_DV = self.embed[...].T if self.head is None else self.head[...]
        return jnp.einsum("btd,dv->btv", x_BTD, w_DV.astype(cd), preferred_element_type=jnp.float32)


def make_model(shape: ModelShape, seed: int, compute_dtype=jnp.float32) -> Transformer:
    """The model for `shape` with parameters drawn from `seed` alone (deterministic init)."""
    return Transformer(shape, rngs=nnx.Rngs(params=seed), compute_dtype=compute_dtype)


def param_count(model: nnx.Module) -> int:
    """The number of trainable parameters actually instantiated in `model`."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
