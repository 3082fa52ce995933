"""The training loss of the readout: cross-entropy of logits = mult · x · w, token chunk by
chunk, with its gradient formed in the forward pass.

Written as the model writes it (`linear(x, w)`, then log-softmax over the vocabulary), a step
keeps the float32 logits of every token for the backward pass and makes several more
[tokens, vocabulary] arrays there (probabilities, their gradient, copies for the two
products): 268 MB each for 8192 tokens and 8192 words. The gradient of a mean cross-entropy
with respect to the logits does not depend on anything after it (only on a scalar factor:
the loss's own cotangent), so this computes it at once, chunk by chunk: each chunk's logits,
log-partition, cross-entropy, gradient to x, and its part of the gradient to w, accumulated.
Only [chunk, vocabulary] arrays exist at any time (`token_chunks`), and the backward pass
only scales the stored gradients by the loss's cotangent. The products are those of `linear`
and its backward pass (operands in the compute dtype, accumulated in float32), so values and
gradients agree with the plain form to float32 rounding (tests/test_readout.py). Logits are
asked for in the operands' dtype, as `linear` does: bfloat16 operands give bfloat16 logits,
as in PyTorch under autocast and MaxText's default, and the log-softmax reads them in float32.
On a GPU that halves the bytes of the passes over them (10% of the HBM traffic of a
1.2e8-parameter step at vocabulary 50304, 67.4 to 60.8 GB; benchmarks/gpu_program.py).

The same idea as Levanter's blockwise cross-entropy and Liger's fused linear cross-entropy.
Evaluation and `taps` keep the model's own logits (`Transformer.__call__`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from scaling.model.ops import product_dtype

CHUNK_BYTES = 64 * 2**20  # float32 logits of one chunk, unless 4 x d_model tokens need more


def token_chunks(n_tokens: int, vocab_size: int, d_model: int) -> int:
    """The fewest chunks (a divisor of n_tokens) of at most CHUNK_BYTES of float32 logits or
    4 x d_model tokens, whichever is more. Each chunk adds its part to the float32 [d, V]
    gradient of w (8·d·V bytes read and written); chunks of fewer than ~4·d tokens spend more
    on that than on their logits (2 CPU cores, vocabulary 32768: 128-token chunks at d_model
    128 were 10% slower than the plain form, 512-token chunks 3% faster)."""
    limit = max(CHUNK_BYTES, 4 * d_model * vocab_size * 4)
    for n in range(1, n_tokens + 1):
        if n_tokens % n == 0 and (n_tokens // n) * vocab_size * 4 <= limit:
            return n
    return n_tokens


def readout_cross_entropy(
    x_ND: jax.Array,
    w_DV: jax.Array,
    targets_N: jax.Array,
    scale_N: jax.Array,
    *,
    logit_mult: float = 1.0,
    z_loss: float = 0.0,
    n_chunks: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(objective, cross-entropy) of logits = logit_mult · x·w against integer targets:
    Σ_n scale_n · (CE_n + z_loss · lse_n²) and Σ_n scale_n · CE_n (nats), lse the log-partition.

    `scale` weighs the tokens (1/N for a plain mean). Differentiable in x and w (the objective;
    the cross-entropy is returned without a gradient); `n_chunks` defaults to
    `token_chunks(N, V, D)`."""
    N, D = x_ND.shape
    n = token_chunks(N, w_DV.shape[1], D) if n_chunks is None else int(n_chunks)
    objective, ce = _readout_ce(x_ND, w_DV, targets_N, scale_N, float(logit_mult), float(z_loss), n)
    return objective, jax.lax.stop_gradient(ce)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _readout_ce(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss, n_chunks):
    return _chunks(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss, n_chunks, grads=False)[0]


def _readout_ce_fwd(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss, n_chunks):
    out, dx_ND, dw_DV = _chunks(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss, n_chunks)
    return out, (dx_ND, dw_DV, targets_N, scale_N)


def _readout_ce_bwd(logit_mult, z_loss, n_chunks, res, cotangents):
    dx_ND, dw_DV, targets_N, scale_N = res
    ct = cotangents[0]  # the cross-entropy output is stop_gradient-ed by the caller
    d_targets = np.zeros(targets_N.shape, jax.dtypes.float0)
    dx, dw = (ct * dx_ND).astype(dx_ND.dtype), (ct * dw_DV).astype(dw_DV.dtype)
    return dx, dw, d_targets, jnp.zeros_like(scale_N)


_readout_ce.defvjp(_readout_ce_fwd, _readout_ce_bwd)


def _chunks(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss, n_chunks, *, grads=True):
    """((objective, ce), dx, dw): the sums over chunks, and the objective's gradients when
    `grads` (dx in x's dtype, dw in float32 cast to w's dtype)."""
    N, D = x_ND.shape
    V = w_DV.shape[1]
    C = N // n_chunks
    logits_dtype = product_dtype(w_DV, x_ND.dtype)
    one_pass = jax.default_backend() == "gpu"  # see `logsumexp`
    xs = (x_ND.reshape(n_chunks, C, D), targets_N.reshape(n_chunks, C), scale_N.reshape(-1, C))

    def chunk(carry, xs_c):
        x_CD, t_C, s_C = xs_c
        logits_CV = jnp.einsum("cd,dv->cv", x_CD, w_DV, preferred_element_type=logits_dtype)
        logits_CV = logits_CV.astype(jnp.float32)
        logits_CV = logits_CV * logit_mult if logit_mult != 1.0 else logits_CV
        lse_C = logsumexp(logits_CV) if one_pass else jax.nn.logsumexp(logits_CV, axis=-1)
        onehot_CV = jax.nn.one_hot(t_C, V, dtype=jnp.float32)
        ce_C = lse_C - jnp.sum(logits_CV * onehot_CV, axis=-1)
        objective_C = ce_C + z_loss * jnp.square(lse_C) if z_loss else ce_C
        sums = carry[0] + jnp.stack([jnp.sum(s_C * objective_C), jnp.sum(s_C * ce_C)])
        if not grads:
            return (sums,), None
        p_CV = jnp.exp(logits_CV - lse_C[:, None])
        dlse_C = s_C * (1.0 + 2.0 * z_loss * lse_C) if z_loss else s_C
        g_CV = (dlse_C[:, None] * p_CV - s_C[:, None] * onehot_CV) * logit_mult
        g_CV = g_CV.astype(w_DV.dtype)
        dx_CD = jnp.einsum(
            "cv,dv->cd", g_CV, w_DV, preferred_element_type=product_dtype(w_DV, x_ND.dtype)
        )
        dw_DV = carry[1] + jnp.einsum(
            "cd,cv->dv", x_CD, g_CV.astype(x_CD.dtype), preferred_element_type=jnp.float32
        )
        return (sums, dw_DV), dx_CD.astype(x_ND.dtype)

    carry = (jnp.zeros(2, jnp.float32),) + ((jnp.zeros((D, V), jnp.float32),) if grads else ())
    if n_chunks == 1:
        carry, dx = chunk(carry, tuple(a[0] for a in xs))
        dx = None if dx is None else dx[None]
    else:
        carry, dx = jax.lax.scan(chunk, carry, xs)
    out = (carry[0][0], carry[0][1])
    if not grads:
        return out, None, None
    return out, dx.reshape(N, D), carry[1].astype(w_DV.dtype)


def logsumexp(x_CV: jax.Array) -> jax.Array:
    """log Σ_v exp(x_cv) over the last axis in one pass over x, a reduction of (max, Σ exp(x -
    max)) pairs, where `jax.nn.logsumexp` reads x twice (its max, then the sum). One exp per
    element either way; not differentiable (the readout forms its own gradient).

    The readout uses it on GPUs, where the logits are read from HBM: a 16-pack of 256 x 4
    models at vocabulary 8192 moves 54.2 GB a step instead of 56.3 (benchmarks/gpu_program.py).
    XLA's CPU backend runs this reduction slower than the two plain ones (d_model 64 trained at
    0.89x), so CPUs keep `jax.nn.logsumexp`."""

    def combine(a, b):
        (m1, s1), (m2, s2) = a, b
        first = m1 >= m2
        hi, lo = jnp.maximum(m1, m2), jnp.minimum(m1, m2)
        scale = jnp.exp(jnp.where(hi == lo, 0.0, lo - hi))  # both -inf: 1, not exp(nan)
        return hi, jnp.where(first, s1, s2) + jnp.where(first, s2, s1) * scale

    x = x_CV.astype(jnp.float32)
    init = (jnp.float32(-jnp.inf), jnp.float32(0.0))
    m_C, s_C = jax.lax.reduce((x, jnp.ones_like(x)), init, combine, (x.ndim - 1,))
    return m_C + jnp.log(s_C)
