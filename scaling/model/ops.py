"""GELU, SwiGLU and the norms with written-out backward passes that save only their input.

Differentiated as written, `jax.nn.gelu(approximate=True)` keeps five [tokens, 4d]
intermediates for the backward pass (x³, the tanh argument, the tanh, 1 + tanh, the product)
and a LayerNorm keeps three [tokens, d]; XLA stores them all. These versions compute the same
forward values with the same operations and keep only their input (plus a norm's per-token
mean and inverse RMS), recomputing the rest in the backward pass, as PyTorch's kernels do:
at d_model 512 that halves the activations a step stores (5.1 to 2.6 GiB for 8 layers and
8192 tokens), with no loss of speed on the CPU. Gradients are computed in float32.
`add_positions` writes out the position embedding's gradient, for speed (see there),
`split_qkv` adds the attention's input biases after the split, for GPU traffic (see there),
`after` keeps a backward pass's work in the backward pass, for memory (see there), and
`product_dtype` is the dtype a matrix product is asked for.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def after(anchor: jax.Array, *xs: jax.Array) -> tuple[jax.Array, ...]:
    """`xs` unchanged in value, but computed from `anchor` (each plus 0 times anchor's first
    element), so that XLA cannot start work on them before `anchor` exists.

    A backward pass calls it on its saved values with the incoming gradient as anchor. Without
    it XLA's CPU scheduler moves the backward's broadcasts of saved values (a norm's scale and
    inverse RMS spread over all tokens) into the forward pass, as soon as their inputs exist,
    and keeps them alive until the backward reaches them: at d_model 512 (8 layers, 8192
    tokens a device) the norms' anchors cut the gradient program's temporaries from 4.24 to
    3.69 GB a device, at the same speed. `jax.lax.optimization_barrier` does not prevent it:
    XLA's CPU pipeline removes barriers before it schedules. Exact for a finite anchor (a
    gradient that is not is a diverged step anyway)."""
    zero = anchor.reshape(-1)[0] * 0
    return tuple(x + zero.astype(x.dtype) for x in xs)


@jax.custom_vjp
def gelu_tanh(x: jax.Array) -> jax.Array:
    """`jax.nn.gelu(x, approximate=True)`, saving only x for the backward pass."""
    return jax.nn.gelu(x, approximate=True)


def _gelu_fwd(x):
    return gelu_tanh(x), x


def _gelu_bwd(x, g):
    xf = x.astype(jnp.float32)
    t = jnp.tanh(_SQRT_2_OVER_PI * (xf + _GELU_CUBIC * xf * xf * xf))
    slope = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * (
        _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * xf * xf)
    )
    return ((g.astype(jnp.float32) * slope).astype(x.dtype),)


gelu_tanh.defvjp(_gelu_fwd, _gelu_bwd)


@jax.custom_vjp
def swiglu(h: jax.Array) -> jax.Array:
    """silu(gate) * up for h = [gate, up] on the last axis (2f -> f), saving only h."""
    f = h.shape[-1] // 2
    return jax.nn.silu(h[..., :f]) * h[..., f:]


def _swiglu_fwd(h):
    return swiglu(h), h


def _swiglu_bwd(h, g):
    f = h.shape[-1] // 2
    hf = h.astype(jnp.float32)
    gate, up = hf[..., :f], hf[..., f:]
    s = jax.nn.sigmoid(gate)
    gf = g.astype(jnp.float32)
    d_gate = gf * up * s * (1.0 + gate * (1.0 - s))
    d_up = gf * gate * s
    return (jnp.concatenate([d_gate, d_up], axis=-1).astype(h.dtype),)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array | None, eps: float) -> jax.Array:
    """LayerNorm over the last axis in float32, (x - mean) / sqrt(var + eps) * scale (+ bias),
    returned in x's dtype; saves x and the per-token mean and inverse RMS."""
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    inv = jax.lax.rsqrt(var + eps)
    y = (xf - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), (x, mean, inv, scale, bias is not None)


def _layer_norm_bwd(eps, res, g):
    x, mean, inv, scale, has_bias = res
    x, mean, inv, scale = after(g, x, mean, inv, scale)
    xhat = (x.astype(jnp.float32) - mean) * inv
    gf = g.astype(jnp.float32)
    token_axes = tuple(range(g.ndim - 1))
    d_scale = jnp.sum(gf * xhat, axis=token_axes)
    d_bias = jnp.sum(gf, axis=token_axes) if has_bias else None
    gx = gf * scale
    dx = inv * (
        gx
        - jnp.mean(gx, axis=-1, keepdims=True)
        - xhat * jnp.mean(gx * xhat, axis=-1, keepdims=True)
    )
    return dx.astype(x.dtype), d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis in float32, x / sqrt(mean(x²) + eps) * scale, returned in x's
    dtype; saves x and the per-token inverse RMS."""
    return _rms_norm_fwd(x, scale, eps)[0]


def _rms_norm_fwd(x, scale, eps):
    xf = x.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return (xf * inv * scale).astype(x.dtype), (x, inv, scale)


def _rms_norm_bwd(eps, res, g):
    x, inv, scale = after(g, *res)
    xhat = x.astype(jnp.float32) * inv
    gf = g.astype(jnp.float32)
    d_scale = jnp.sum(gf * xhat, axis=tuple(range(g.ndim - 1)))
    gx = gf * scale
    dx = inv * (gx - xhat * jnp.mean(gx * xhat, axis=-1, keepdims=True))
    return dx.astype(x.dtype), d_scale


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def add_positions(x_BTD: jax.Array, pos_TD: jax.Array) -> jax.Array:
    """x + pos (cast to x's dtype) broadcast over the batch. The gradient of pos, a sum over the
    batch, is formed as a product with a vector of ones: XLA's CPU reduce over the leading axis
    alone ran at under 1 GB/s here (at d_model 256, 38 ms a step against 1.3 ms as a product)."""
    return _add_positions(x_BTD, pos_TD.astype(x_BTD.dtype))


@jax.custom_vjp
def _add_positions(x_BTD, pos_TD):
    return x_BTD + pos_TD


def _add_positions_fwd(x_BTD, pos_TD):
    return _add_positions(x_BTD, pos_TD), None


def _add_positions_bwd(_, g_BTD):
    ones_B = jnp.ones(g_BTD.shape[:1], g_BTD.dtype)
    g_TD = jnp.einsum("b,btd->td", ones_B, g_BTD, preferred_element_type=jnp.float32)
    return g_BTD, g_TD.astype(g_BTD.dtype)


_add_positions.defvjp(_add_positions_fwd, _add_positions_bwd)


def product_dtype(operand: jax.Array, out: jnp.dtype) -> jnp.dtype:
    """The dtype a matrix product is asked for: float32, or the operands' own dtype when the
    product is wanted in it (bfloat16 operands to a bfloat16 result). Both sum in float32 and
    round once (on the CPU the two differ in ~1e-4 of elements, by float32 summation order;
    cuBLAS sums bfloat16 products in float32). On a GPU the bfloat16 product is written in
    bfloat16, not in float32 for a second kernel to read and round, and takes the bias and GELU
    into its epilogue: 15% less HBM traffic in the step of a 1.2e8-parameter model
    (benchmarks/gpu_program.py)."""
    return operand.dtype if jnp.dtype(out) == operand.dtype else jnp.dtype(jnp.float32)


def split_qkv(
    qkv_BTCHK: jax.Array, b_CHK: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q, k, v from the fused projection [B, T, 3, H, K], plus their biases b[0], b[1], b[2].

    The biases are added in the split, not to the product: XLA takes a bias added to a batched
    product (a pack's, under vmap) as cuBLAS's C matrix, written out at full size and read back
    (a [tokens, 3d] array twice a layer). The backward pass puts dq, dk, dv back into one
    array as autodiff of a slice does (pads and adds) and sums the bias gradient from it: one
    fused kernel on a GPU, where `jnp.stack` or separate sums of dq, dk and dv make more."""
    if b_CHK is None:
        return qkv_BTCHK[:, :, 0], qkv_BTCHK[:, :, 1], qkv_BTCHK[:, :, 2]
    return _split_qkv_bias(qkv_BTCHK, b_CHK.astype(qkv_BTCHK.dtype))


@jax.custom_vjp
def _split_qkv_bias(qkv_BTCHK, b_CHK):
    return tuple(qkv_BTCHK[:, :, c] + b_CHK[c] for c in range(3))


def _split_qkv_bias_fwd(qkv_BTCHK, b_CHK):
    return _split_qkv_bias(qkv_BTCHK, b_CHK), None


def _split_qkv_bias_bwd(_, g):
    def at(c: int, g_BTHK: jax.Array) -> jax.Array:  # g at index c of a new axis 2 of size 3
        return jnp.pad(g_BTHK[:, :, None], ((0, 0), (0, 0), (c, 2 - c), (0, 0), (0, 0)))

    g_BTCHK = sum(at(c, g_c) for c, g_c in enumerate(g))
    return g_BTCHK, jnp.sum(g_BTCHK, axis=(0, 1))


_split_qkv_bias.defvjp(_split_qkv_bias_fwd, _split_qkv_bias_bwd)
