"""The decoder-only Transformer family in flax.nnx, described by a `ModelShape`.

Variants: `gpt2` (LayerNorm, GELU MLP, learned absolute positions, biases); `llama` (RMSNorm,
SwiGLU MLP, rotary positions, no biases); `palm` (llama's MLP and positions in a parallel
block, y = x + attn(norm(x)) + mlp(norm(x)) with one LayerNorm without bias, as in PaLM);
`performer` (llama blocks, FAVOR+ linear attention in place of softmax attention); `local`
(llama blocks, sliding-window causal attention). Parameters are float32; `compute_dtype`
(e.g. bfloat16) is what matmuls run in. Norms, softmax, FAVOR+ features and sums, and logits
are computed in float32. `model(tokens, causal=False)` attends both ways (masked-LM training).
The forward pass is deterministic and keeps no hidden state (performer's random projection is
a constant of the layer, not state), so it can be split once with `nnx.split(model, nnx.Param)`
and jitted (or vmapped over stacked states) as a pure function.

Every parameter created here is counted by `scaling.flops.param_counts`; a test asserts the
two agree exactly, so a change here needs the same change there.

Parameterizations (`shape.parametrization`): the initialisation scales, the attention-logit
scale, the residual-branch multiplier and the output-logit multiplier are read from the table
in `scaling.model.parametrization`; each is applied only when it is not exactly 1, so `sp`
computes exactly what it computed before they existed. `model(tokens, taps={})` also records
the RMS of the activations a coordinate check follows (`scaling.model.coordcheck`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.model.ops import (
    add_positions,
    gelu_tanh,
    layer_norm,
    product_dtype,
    rms_norm,
    split_qkv,
    swiglu,
)
from scaling.model.parametrization import multiplier
from scaling.model.shape import ModelShape

INIT_STD = 0.02
NORM_EPS = 1e-5
ROPE_BASE = 10_000.0
FEATURE_SEED = 20210309  # performer's projections: a constant of (layer, shape), see below
FAVOR_CHUNK = 64  # causal FAVOR+: tokens per chunk (quadratic inside, prefix sums across)
CAUSAL_BLOCKS = 8  # causal softmax attention: query blocks (see `_block_causal_attention`)
MIN_QUERY_BLOCK = 32


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


def rms(x: jax.Array) -> jax.Array:
    """Root mean square of all entries (float32): the size of a typical coordinate."""
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def _hidden_std(shape: ModelShape, fan_in: str, *, branch_out: bool = False) -> float:
    """Init std of a block matrix: GPT-2's (0.02; output projections 0.02/sqrt(2 n_layers))
    times the parametrization's width (and, for output projections, depth) multipliers."""
    std = INIT_STD / math.sqrt(2 * shape.n_layers) if branch_out else INIT_STD
    std *= multiplier(shape, "hidden.init_std", fan_in)
    if branch_out:
        std *= multiplier(shape, "branch_out.init_std")
    return std


class Norm(nnx.Module):
    """`layernorm` (scale, bias), `layernorm_nobias` (scale; PaLM) or `rmsnorm` (scale), in
    float32 (`scaling.model.ops`: the backward pass saves only the input)."""

    def __init__(self, dim: int, kind: str):
        self.rms = kind == "rmsnorm"
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32)) if kind == "layernorm" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.rms:
            return rms_norm(x, self.scale[...], NORM_EPS)
        bias = None if self.bias is None else self.bias[...]
        return layer_norm(x, self.scale[...], bias, NORM_EPS)


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


# --- dense layers -----------------------------------------------------------------------------
def linear(x_NK: jax.Array, w_KM: jax.Array, out_dtype: jnp.dtype | None = None) -> jax.Array:
    """x @ w over x's last axis (any leading axes), products accumulated in float32.

    Same values as `x @ w` (each product in `product_dtype`); its gradient is written out
    (`jax.custom_vjp`) so that the weight gradient, a product over all tokens, transposes the
    smaller of x and the output gradient: XLA's CPU dot wants its left operand's contracted
    (token) axis minor and copies it into that layout, so dW = xᵀ·g copies x while (gᵀ·x)ᵀ
    copies g. At d_model 64 the copy of the MLP's [tokens, 4d] activations took longer than the
    dot itself. The product is also formed with its smaller axis first ([512, 8192]·[8192, 128]
    runs at ~70 GFLOP/s on one core here, [128, 8192]·[8192, 512] at ~100), behind an
    optimization barrier: XLA would otherwise fold the transpose after it (ours, or the tied
    embedding's) back into the dot.
    """
    return _linear(x_NK, w_KM, out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _linear(x_NK, w_KM, out_dtype):
    return _linear_fwd(x_NK, w_KM, out_dtype)[0]


def _linear_fwd(x_NK, w_KM, out_dtype):
    out = out_dtype or x_NK.dtype
    y = jnp.einsum("...k,km->...m", x_NK, w_KM, preferred_element_type=product_dtype(x_NK, out))
    return y.astype(out), (x_NK, w_KM)


def _linear_bwd(out_dtype, res, g_NM):
    x_NK, w_KM = res
    K, M = w_KM.shape
    x2, g2 = x_NK.reshape(-1, K), g_NM.reshape(-1, M).astype(x_NK.dtype)
    dx = jnp.einsum(
        "...m,km->...k",
        g_NM.astype(w_KM.dtype),
        w_KM,
        preferred_element_type=product_dtype(w_KM, x_NK.dtype),
    ).astype(x_NK.dtype)
    barrier, dw_dtype = jax.lax.optimization_barrier, product_dtype(x2, w_KM.dtype)
    if K <= M:
        dw = barrier(jnp.einsum("nk,nm->km", x2, g2, preferred_element_type=dw_dtype))
    else:
        dw = barrier(jnp.einsum("nm,nk->mk", g2, x2, preferred_element_type=dw_dtype)).T
    return dx, dw.astype(w_KM.dtype)


_linear.defvjp(_linear_fwd, _linear_bwd)


# --- softmax attention: full, windowed (`local`) -------------------------------------------
def _softmax_mix(scores_BHTS: jax.Array, mask_TS: jax.Array | None, v_BSHK: jax.Array) -> jax.Array:
    if mask_TS is not None:
        scores_BHTS = jnp.where(mask_TS, scores_BHTS, jnp.finfo(jnp.float32).min)
    probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1).astype(v_BSHK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs_BHTS, v_BSHK)


def softmax_attention(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHK: jax.Array,
    *,
    causal: bool = True,
    window: int | None = None,
    logit_mult: float = 1.0,
) -> jax.Array:
    """Softmax attention; with `window`, a query sees only keys less than `window` positions
    away (itself and the window - 1 before it when causal; either side when not). Scores are
    q·k/sqrt(head_dim), times `logit_mult` when it is not 1 (muP: sqrt(base head_dim)/head_dim
    overall).

    Causal with window < T runs blockwise (`_local_attention`, O(T·window)); otherwise full
    attention, so a window >= T is exactly full attention: causal by query blocks
    (`_block_causal_attention`), bidirectional as one T×T matrix.
    """
    T, K = q_BTHK.shape[1], q_BTHK.shape[3]
    if causal and window is not None and window < T:
        return _local_attention(q_BTHK, k_BTHK, v_BTHK, window, logit_mult)
    if window is None or window >= T:
        fused = fused_attention(q_BTHK, k_BTHK, v_BTHK, causal, logit_mult / math.sqrt(K))
        if fused is not None:
            return fused
    if causal and causal_blocks(T) > 1:
        return _block_causal_attention(q_BTHK, k_BTHK, v_BTHK, causal_blocks(T), logit_mult)
    scores_BHTS = jnp.einsum(
        "bthk,bshk->bhts", q_BTHK, k_BTHK, preferred_element_type=jnp.float32
    ) / math.sqrt(K)
    if logit_mult != 1.0:
        scores_BHTS = scores_BHTS * logit_mult
    t, s = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    mask_TS = (s <= t) if causal else None
    if window is not None and window < T:  # bidirectional band (causal case returned above)
        mask_TS = jnp.abs(t - s) < window
    return _softmax_mix(scores_BHTS, mask_TS, v_BTHK)


def fused_attention(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHK: jax.Array,
    causal: bool,
    scale: float,
    implementation: str = "cudnn",
) -> jax.Array | None:
    """Full attention as one fused kernel (`jax.nn.dot_product_attention`): on a GPU, cuDNN's
    flash attention for bfloat16/float16 inputs, which never forms the T×T matrix and runs on
    the tensor cores in both passes. None where it does not apply (not a GPU, float32, a shape
    cuDNN rejects, or a cuDNN that cannot compile it here); the caller then uses its own.
    `implementation="xla"` runs jax's reference version anywhere (for tests)."""
    if implementation == "cudnn" and not (
        q_BTHK.dtype in (jnp.bfloat16, jnp.float16)
        and jax.default_backend() == "gpu"
        and cudnn_attention_available()
    ):
        return None
    try:
        return jax.nn.dot_product_attention(
            q_BTHK, k_BTHK, v_BTHK, scale=scale, is_causal=causal, implementation=implementation
        )
    except (NotImplementedError, RuntimeError, ValueError):  # cuDNN's shape limits, at trace
        return None


@functools.cache
def cudnn_attention_available() -> bool:
    """Whether cuDNN's fused attention compiles on this GPU, forward and backward, also under
    vmap (packed runs): probed once per process on a small causal problem."""

    def loss(q: jax.Array) -> jax.Array:
        y = jax.nn.dot_product_attention(q, q, q, is_causal=True, implementation="cudnn")
        return jnp.sum(y.astype(jnp.float32))

    probe = jax.ShapeDtypeStruct((2, 2, 128, 2, 64), jnp.bfloat16)
    try:
        jax.jit(jax.vmap(jax.grad(loss))).lower(probe).compile()
        return True
    except Exception:  # no cuDNN, or one without these kernels: the caller's own attention
        return False


def causal_blocks(T: int) -> int:
    """Query blocks for causal full attention: up to CAUSAL_BLOCKS of at least MIN_QUERY_BLOCK
    queries that divide T evenly; 1 means one masked T×T matrix."""
    n = min(CAUSAL_BLOCKS, T // MIN_QUERY_BLOCK)
    while n > 1 and T % n:
        n -= 1
    return max(n, 1)


def _block_causal_attention(
    q_BTHK: jax.Array, k_BTHK: jax.Array, v_BTHK: jax.Array, n: int, logit_mult: float
) -> jax.Array:
    """Causal attention by n query blocks of W = T/n: block i's queries meet only keys
    [0, (i+1)·W), the ones they may see, so the blocks above the diagonal (all masked) are never
    formed: (n+1)/2n of the T×T work and memory, the same result as the masked T×T product
    (each row's softmax sums the same terms; masked ones are exactly 0 in both).

    Its gradient is written out (`jax.custom_vjp`) as in FlashAttention's backward pass:
    dS = P ⊙ (dP - rowsum(dO ⊙ O)), so no T×T reduction is needed beyond the forward's, and
    each block's dK, dV are added in place into one buffer rather than padded to T and summed.
    """
    scale = logit_mult / math.sqrt(q_BTHK.shape[3])
    return _blocked_attention(q_BTHK, k_BTHK, v_BTHK, n, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blocked_attention(q_BTHK, k_BTHK, v_BTHK, n: int, scale: float) -> jax.Array:
    return _blocked_attention_fwd(q_BTHK, k_BTHK, v_BTHK, n, scale)[0]


def _blocked_attention_fwd(q_BTHK, k_BTHK, v_BTHK, n: int, scale: float):
    # Heads first, once (not a transposed copy of the key prefix for every block).
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q_BTHK, k_BTHK, v_BTHK))  # [B, H, T, K]
    T = q.shape[2]
    W = T // n
    t, s = jnp.arange(W)[:, None], jnp.arange(T)[None, :]
    out, saved = [], []
    for i in range(n):
        S = (i + 1) * W
        scores_BHWS = (
            jnp.einsum(
                "bhtk,bhsk->bhts",
                q[:, :, i * W : S],
                k[:, :, :S],
                preferred_element_type=jnp.float32,
            )
            * scale
        )
        scores_BHWS = jnp.where(s[:, :S] <= t + i * W, scores_BHWS, -jnp.inf)
        p_BHWS = jnp.exp(scores_BHWS - jnp.max(scores_BHWS, axis=-1, keepdims=True))
        inv_BHW1 = 1.0 / jnp.sum(p_BHWS, axis=-1, keepdims=True)
        o_BHWK = jnp.einsum("bhts,bhsk->bhtk", p_BHWS.astype(v.dtype), v[:, :, :S])
        o_BHWK = (o_BHWK * inv_BHW1).astype(v.dtype)
        out.append(o_BHWK)
        saved.append((p_BHWS, inv_BHW1, o_BHWK))
    return jnp.swapaxes(jnp.concatenate(out, axis=2), 1, 2), (q, k, v, saved)


def _blocked_attention_bwd(n: int, scale: float, res, do_BTHK):
    q, k, v, saved = res  # [B, H, T, K]
    do = jnp.swapaxes(do_BTHK, 1, 2).astype(jnp.float32)
    W = q.shape[2] // n
    dq, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
    for i in range(n):
        S = (i + 1) * W
        p_BHWS, inv_BHW1, o_BHWK = saved[i]
        dos_BHWK = do[:, :, i * W : S] * inv_BHW1  # dO / l
        dv = dv.at[:, :, :S].add(jnp.einsum("bhts,bhtk->bhsk", p_BHWS, dos_BHWK))
        dp_BHWS = jnp.einsum(
            "bhtk,bhsk->bhts", dos_BHWK, v[:, :, :S], preferred_element_type=jnp.float32
        )
        d_BHW1 = jnp.sum(dos_BHWK * o_BHWK, axis=-1, keepdims=True)
        ds_BHWS = p_BHWS * (dp_BHWS - d_BHW1) * scale
        dq.append(jnp.einsum("bhts,bhsk->bhtk", ds_BHWS, k[:, :, :S].astype(jnp.float32)))
        dk = dk.at[:, :, :S].add(
            jnp.einsum("bhts,bhtk->bhsk", ds_BHWS, q[:, :, i * W : S].astype(jnp.float32))
        )
    dq = jnp.concatenate(dq, axis=2)
    back = (jnp.swapaxes(x, 1, 2) for x in (dq, dk, dv))
    return tuple(x.astype(y.dtype) for x, y in zip(back, (q, k, v), strict=True))


_blocked_attention.defvjp(_blocked_attention_fwd, _blocked_attention_bwd)


def _local_attention(
    q_BTHK: jax.Array, k_BTHK: jax.Array, v_BTHK: jax.Array, window: int, logit_mult: float = 1.0
) -> jax.Array:
    """Causal sliding-window attention by blocks of W = window queries, each attending to its
    own block and the one before (2W keys, masked to the W it may see): 8·W·d FLOPs per token
    for logits and mixing, where the window itself needs 4·W·d (`scaling.flops` counts W)."""
    B, T, H, K = q_BTHK.shape
    W = window
    n = -(-T // W)

    def blocks(x_BTHK: jax.Array) -> jax.Array:
        x = jnp.pad(x_BTHK, ((0, 0), (0, n * W - T), (0, 0), (0, 0)))
        return x.reshape(B, n, W, H, K)

    def with_previous(x_BNWHK: jax.Array) -> jax.Array:
        prev = jnp.pad(x_BNWHK, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]
        return jnp.concatenate([prev, x_BNWHK], axis=2)  # keys of blocks n-1 and n: [B,n,2W,H,K]

    q_BNWHK = blocks(q_BTHK)
    k_BNSHK, v_BNSHK = with_previous(blocks(k_BTHK)), with_previous(blocks(v_BTHK))
    scores_BHNWS = jnp.einsum(
        "bnqhk,bnshk->bhnqs", q_BNWHK, k_BNSHK, preferred_element_type=jnp.float32
    ) / math.sqrt(K)
    if logit_mult != 1.0:
        scores_BHNWS = scores_BHNWS * logit_mult
    # Query i of block b is at b·W + i, key j at (b-1)·W + j: it sees j in (i, i + W], and no
    # key before position 0 (block 0's "previous" block is padding).
    i, j = jnp.arange(W)[:, None], jnp.arange(2 * W)[None, :]
    first = (jnp.arange(n) == 0)[:, None, None]
    mask_NWS = ((j > i) & (j <= i + W))[None] & (~first | (j >= W)[None])
    scores_BHNWS = jnp.where(mask_NWS, scores_BHNWS, jnp.finfo(jnp.float32).min)
    probs_BHNWS = jax.nn.softmax(scores_BHNWS, axis=-1).astype(v_BTHK.dtype)
    y_BNWHK = jnp.einsum("bhnqs,bnshk->bnqhk", probs_BHNWS, v_BNSHK)
    return y_BNWHK.reshape(B, n * W, H, K)[:, :T]


# --- FAVOR+ (`performer`) --------------------------------------------------------------------
@functools.cache
def feature_projection(layer: int, n_features: int, head_dim: int) -> np.ndarray:
    """float32 [n_features, head_dim]: FAVOR+'s orthogonal random features (blocks of Haar
    orthogonal rows, each rescaled to the norm of a Gaussian vector), shared by a layer's heads.

    A constant drawn from (FEATURE_SEED, layer) — fixed for training, the same for every init
    seed, not a parameter (not in N, not trained) and not model state: the forward pass embeds
    it as a constant, so the model's state is its parameters alone.
    """
    rng = np.random.default_rng([FEATURE_SEED, layer, n_features, head_dim])
    rows = []
    for _ in range(-(-n_features // head_dim)):
        q, r = np.linalg.qr(rng.standard_normal((head_dim, head_dim)))
        rows.append((q * np.sign(np.diag(r))).T)  # sign fix: Haar-distributed
    norms = np.linalg.norm(rng.standard_normal((n_features, head_dim)), axis=1)
    w = (np.concatenate(rows)[:n_features] * norms[:, None]).astype(np.float32)
    w.setflags(write=False)
    return w


def favor_features(
    x_BTHK: jax.Array, w_MK: jax.Array, *, query: bool, logit_mult: float = 1.0
) -> jax.Array:
    """Positive random features phi(x) = exp(w·x - |x|²/2) of x / K^(1/4), so that
    E[phi(q)·phi(k)] = exp(q·k / sqrt(K)), float32 [B,T,H,M].

    For range, a factor exp(±|w_j|²/4) moves between the query's and the key's feature j (the
    product is unchanged), and each query's features are divided by their largest (a factor
    that cancels in the normalized attention): queries lie in (0, 1], keys below
    exp(|w_j|²/4) ~ exp(K/4), finite in float32 for head_dim up to ~300.
    The constant 1/sqrt(M) cancels too and is left out. With `logit_mult` (muP) != 1, x is
    also scaled by sqrt(logit_mult), so the kernel is exp(logit_mult · q·k / sqrt(K)).
    """
    K = x_BTHK.shape[-1]
    x = x_BTHK.astype(jnp.float32) * K**-0.25
    if logit_mult != 1.0:
        x = x * math.sqrt(logit_mult)
    proj_BTHM = jnp.einsum("bthk,mk->bthm", x, w_MK)
    quarter_w2_M = 0.25 * jnp.sum(jnp.square(w_MK), axis=-1)
    e = proj_BTHM - 0.5 * jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    if query:
        e = e + quarter_w2_M
        e = e - jax.lax.stop_gradient(jnp.max(e, axis=-1, keepdims=True))
    else:
        e = e - quarter_w2_M
    return jnp.exp(e)


def favor_attention(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHK: jax.Array,
    w_MK: jax.Array,
    *,
    causal: bool = True,
    logit_mult: float = 1.0,
) -> jax.Array:
    """FAVOR+ linear attention (Choromanski et al. 2021): softmax attention's weights
    exp(q·k/sqrt(K)) replaced by phi(q)·phi(k), so y_t = phi(q_t)·S_t / phi(q_t)·z_t with
    S_t = sum_{s<=t} phi(k_s) v_sᵀ and z_t = sum_{s<=t} phi(k_s) — O(T·M·K), no T×T matrix.

    The normalizer rides along as a column of ones appended to v. Causal prefix sums run by
    chunks of FAVOR_CHUNK tokens: the masked quadratic form inside a chunk, the sum of earlier
    chunks' states across. Bidirectional: one sum over all keys. float32 throughout.
    """
    B, T, H, K = q_BTHK.shape
    pq_BTHM = favor_features(q_BTHK, w_MK, query=True, logit_mult=logit_mult)
    pk_BTHM = favor_features(k_BTHK, w_MK, query=False, logit_mult=logit_mult)
    ones = jnp.ones((B, T, H, 1), jnp.float32)
    v_BTHJ = jnp.concatenate([v_BTHK.astype(jnp.float32), ones], axis=-1)  # J = K + 1
    if not causal:
        s_BHMJ = jnp.einsum("bthm,bthj->bhmj", pk_BTHM, v_BTHJ)
        o_BTHJ = jnp.einsum("bthm,bhmj->bthj", pq_BTHM, s_BHMJ)
    else:
        C = min(FAVOR_CHUNK, T)
        n = -(-T // C)

        def chunks(x_BTHX: jax.Array) -> jax.Array:
            x = jnp.pad(x_BTHX, ((0, 0), (0, n * C - T), (0, 0), (0, 0)))
            return x.reshape(B, n, C, H, x.shape[-1])

        pq, pk, v = chunks(pq_BTHM), chunks(pk_BTHM), chunks(v_BTHJ)
        a_BNHCS = jnp.einsum("bnchm,bnshm->bnhcs", pq, pk) * jnp.tril(jnp.ones((C, C)))
        o_BNCHJ = jnp.einsum("bnhcs,bnshj->bnchj", a_BNHCS, v)
        if n > 1:
            s_BNHMJ = jnp.einsum("bnshm,bnshj->bnhmj", pk, v)  # each chunk's own state
            earlier = jnp.pad(s_BNHMJ, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]
            prefix_BNHMJ = jax.lax.associative_scan(jnp.add, earlier, axis=1)
            o_BNCHJ = o_BNCHJ + jnp.einsum("bnchm,bnhmj->bnchj", pq, prefix_BNHMJ)
        o_BTHJ = o_BNCHJ.reshape(B, n * C, H, K + 1)[:, :T]
    y_BTHK = o_BTHJ[..., :K] / (o_BTHJ[..., K:] + jnp.finfo(jnp.float32).tiny)
    return y_BTHK.astype(v_BTHK.dtype)


class Attention(nnx.Module):
    """Multi-head self-attention with one fused QKV projection: softmax (full or windowed) or
    FAVOR+ (`performer`), causal unless called with causal=False."""

    def __init__(self, shape: ModelShape, layer: int, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        d, H, K = shape.d_model, shape.n_heads, shape.head_dim
        self.n_heads, self.head_dim = H, K
        self.rotary = shape.rotary
        self.compute_dtype = compute_dtype
        self.window = shape.attention_window
        self.n_features = shape.features
        self.layer = layer
        self.logit_mult = multiplier(shape, "attention.logit_scale")
        bias = shape.biases
        self.w_qkv = _normal(rngs, (d, 3, H, K), _hidden_std(shape, "d_model"))
        self.b_qkv = nnx.Param(jnp.zeros((3, H, K), jnp.float32)) if bias else None
        self.w_out = _normal(rngs, (H, K, d), _hidden_std(shape, "d_model", branch_out=True))
        self.b_out = nnx.Param(jnp.zeros((d,), jnp.float32)) if bias else None
        self.q_norm = Norm(K, shape.norm) if shape.qk_norm else None
        self.k_norm = Norm(K, shape.norm) if shape.qk_norm else None

    def __call__(
        self, x_BTD: jax.Array, *, causal: bool = True, taps: dict | None = None
    ) -> jax.Array:
        cd = self.compute_dtype
        d, _, H, K = self.w_qkv.shape
        qkv_BTCHK = linear(x_BTD, self.w_qkv[...].astype(cd).reshape(d, 3 * H * K))
        qkv_BTCHK = qkv_BTCHK.reshape(*x_BTD.shape[:2], 3, H, K)
        b_CHK = None if self.b_qkv is None else self.b_qkv[...].astype(cd)
        q_BTHK, k_BTHK, v_BTHK = split_qkv(qkv_BTCHK, b_CHK)
        if self.q_norm is not None:
            q_BTHK, k_BTHK = self.q_norm(q_BTHK), self.k_norm(k_BTHK)
        if self.rotary:
            q_BTHK, k_BTHK = rotary(q_BTHK), rotary(k_BTHK)
        mult = self.logit_mult
        if taps is not None:  # the logits softmax attention sees (FAVOR+ approximates exp of)
            s = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BTHK, preferred_element_type=jnp.float32)
            taps[f"attn_logits.{self.layer}"] = rms(s / math.sqrt(self.head_dim) * mult)
        if self.n_features is not None:
            w_MK = jnp.asarray(feature_projection(self.layer, self.n_features, self.head_dim))
            y_BTHK = favor_attention(q_BTHK, k_BTHK, v_BTHK, w_MK, causal=causal, logit_mult=mult)
        else:
            y_BTHK = softmax_attention(
                q_BTHK, k_BTHK, v_BTHK, causal=causal, window=self.window, logit_mult=mult
            )
        B, T, H, K = y_BTHK.shape
        w_out = self.w_out[...].astype(cd).reshape(H * K, -1)
        y_BTD = linear(y_BTHK.reshape(B, T, H * K), w_out)
        if self.b_out is not None:
            y_BTD = y_BTD + self.b_out[...].astype(cd)
        return y_BTD


class MLP(nnx.Module):
    """GELU MLP (`gpt2`, with biases) or SwiGLU MLP (`llama`, three matrices, no biases)."""

    def __init__(self, shape: ModelShape, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        d, f = shape.d_model, shape.d_ff
        self.swiglu = shape.swiglu
        self.compute_dtype = compute_dtype
        in_std = _hidden_std(shape, "d_model")
        out_std = _hidden_std(shape, "d_ff", branch_out=True)
        if self.swiglu:
            self.w_in = _normal(rngs, (d, 2, f), in_std)  # gate and up projections, fused
            self.b_in = None
        else:
            self.w_in = _normal(rngs, (d, f), in_std)
            self.b_in = nnx.Param(jnp.zeros((f,), jnp.float32))
        self.w_out = _normal(rngs, (f, d), out_std)
        self.b_out = None if self.swiglu else nnx.Param(jnp.zeros((d,), jnp.float32))

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cd = self.compute_dtype
        if self.swiglu:
            d, _, f = self.w_in.shape
            h_BTF = swiglu(linear(x_BTD, self.w_in[...].astype(cd).reshape(d, 2 * f)))
        else:
            h_BTF = linear(x_BTD, self.w_in[...].astype(cd)) + self.b_in[...].astype(cd)
            h_BTF = gelu_tanh(h_BTF)
        y_BTD = linear(h_BTF, self.w_out[...].astype(cd))
        if self.b_out is not None:
            y_BTD = y_BTD + self.b_out[...].astype(cd)
        return y_BTD


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); `palm`'s parallel
    block: x + attn(norm(x)) + mlp(norm(x)) with one norm. Under `mup-depth` each branch is
    multiplied by sqrt(base_n_layers / n_layers) before it is added."""

    def __init__(self, shape: ModelShape, layer: int, *, rngs: nnx.Rngs, compute_dtype: jnp.dtype):
        self.layer = layer
        self.branch_mult = multiplier(shape, "branch.forward")
        self.parallel = shape.parallel
        self.norm_attn = Norm(shape.d_model, shape.norm)
        self.attn = Attention(shape, layer, rngs=rngs, compute_dtype=compute_dtype)
        self.norm_mlp = None if self.parallel else Norm(shape.d_model, shape.norm)
        self.mlp = MLP(shape, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(
        self, x_BTD: jax.Array, *, causal: bool = True, taps: dict | None = None
    ) -> jax.Array:
        r = self.branch_mult
        if self.parallel:
            h_BTD = self.norm_attn(x_BTD)
            branch_BTD = self.attn(h_BTD, causal=causal, taps=taps) + self.mlp(h_BTD)
            x_BTD = x_BTD + (branch_BTD if r == 1.0 else branch_BTD * r)
        else:
            a_BTD = self.attn(self.norm_attn(x_BTD), causal=causal, taps=taps)
            x_BTD = x_BTD + (a_BTD if r == 1.0 else a_BTD * r)
            m_BTD = self.mlp(self.norm_mlp(x_BTD))
            x_BTD = x_BTD + (m_BTD if r == 1.0 else m_BTD * r)
        if taps is not None:
            taps[f"block.{self.layer}"] = rms(x_BTD)
        return x_BTD


class Transformer(nnx.Module):
    """Language model: `model(tokens_BT int32) -> logits_BTV float32`; causal unless called
    with causal=False (bidirectional, for masked-token objectives). With a dict `taps`, the
    RMS of the embeddings (`embed`), each layer's attention logits (`attn_logits.i`), each
    block's output (`block.i`) and the logits (`logits`) are written into it.

    `scan_layers=True` runs the blocks as one `jax.lax.scan` over their stacked parameters:
    one compiled block instead of n_layers, the same parameters (the state tree does not
    change, so checkpoints and packed states are the same) and the same values. It is off by
    default because on a CPU it does not pay (`benchmarks/layer_scan.py`, 2 cores: steps 7%
    slower at 4 layers, 22-24% at 16-32; compilation shorter only from ~16 layers, 32 -> 19 s at
    32, which pays for runs of fewer than ~30 steps). Calls with `taps` and `performer` models
    (each layer has its own feature projection) run the blocks one by one."""

    def __init__(
        self,
        shape: ModelShape,
        *,
        rngs: nnx.Rngs,
        compute_dtype=jnp.float32,
        scan_layers: bool = False,
    ):
        self.shape = shape
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.scan_layers = bool(scan_layers)
        d, V = shape.d_model, shape.vocab_size
        self.embed = _normal(rngs, (V, d), INIT_STD)
        self.pos_embed = None if shape.rotary else _normal(rngs, (shape.context, d), INIT_STD)
        self.blocks = nnx.List(
            [
                Block(shape, layer, rngs=rngs, compute_dtype=self.compute_dtype)
                for layer in range(shape.n_layers)
            ]
        )
        self.norm_final = Norm(d, shape.norm)
        self.head = None if shape.tied_embeddings else _normal(rngs, (d, V), INIT_STD)
        self.logit_mult = multiplier(shape, "readout.forward")

    def __call__(
        self, tokens_BT: jax.Array, *, causal: bool = True, taps: dict | None = None
    ) -> jax.Array:
        x_BTD = self.hidden(tokens_BT, causal=causal, taps=taps)
        logits_BTV = linear(x_BTD, self.readout_weight(), jnp.float32)
        if self.logit_mult != 1.0:
            logits_BTV = logits_BTV * self.logit_mult
        if taps is not None:
            taps["logits"] = rms(logits_BTV)
        return logits_BTV

    def readout_weight(self) -> jax.Array:
        """The [d_model, vocab] matrix of the logits (the embedding's transpose when tied), in
        the compute dtype; the logits are `logit_mult` times hidden · this."""
        w_DV = self.embed[...].T if self.head is None else self.head[...]
        return w_DV.astype(self.compute_dtype)

    def hidden(
        self, tokens_BT: jax.Array, *, causal: bool = True, taps: dict | None = None
    ) -> jax.Array:
        """The final normed hidden states [B, T, d_model] the logits are read out from."""
        seq_len = tokens_BT.shape[1]
        if seq_len > self.shape.context:
            raise ValueError(f"sequence length {seq_len} exceeds context {self.shape.context}")
        cd = self.compute_dtype
        x_BTD = jnp.take(self.embed[...], tokens_BT, axis=0)
        if self.pos_embed is not None:
            x_BTD = add_positions(x_BTD, self.pos_embed[...][:seq_len])
        x_BTD = x_BTD.astype(cd)
        if taps is not None:
            taps["embed"] = rms(x_BTD)
        if self.scan_layers and taps is None and self.shape.features is None:
            x_BTD = self._scanned_blocks(x_BTD, causal)
        else:
            for block in self.blocks:
                x_BTD = block(x_BTD, causal=causal, taps=taps)
        return self.norm_final(x_BTD)

    def _scanned_blocks(self, x_BTD: jax.Array, causal: bool) -> jax.Array:
        """The blocks as one scan: block 0's structure with each layer's state in turn (blocks
        differ only in their layer index, which taps and FAVOR+ read, never here)."""
        graphdef, _ = nnx.split(self.blocks[0])
        layers = jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.state(b) for b in self.blocks))

        def block(x: jax.Array, state: nnx.State) -> tuple[jax.Array, None]:
            return nnx.merge(graphdef, state)(x, causal=causal), None

        return jax.lax.scan(block, x_BTD, layers)[0]


def make_model(
    shape: ModelShape, seed: int, compute_dtype=jnp.float32, *, scan_layers: bool = False
) -> Transformer:
    """The model for `shape` with parameters drawn from `seed` alone (deterministic init);
    `scan_layers`: see `Transformer`."""
    return Transformer(
        shape, rngs=nnx.Rngs(params=seed), compute_dtype=compute_dtype, scan_layers=scan_layers
    )


def param_count(model: nnx.Module) -> int:
    """The number of trainable parameters actually instantiated in `model`."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
