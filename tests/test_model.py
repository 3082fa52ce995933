"""The Transformer family: exact parameter counts, shapes, causality, rotary, dtypes, purity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import flops
from scaling.errors import ConfigError
from scaling.model.shape import ModelShape
from scaling.model.transformer import make_model, param_count, rotary

# Both variants; tied and untied; with and without QK-norm; odd vocab, mlp rounding, 1 head.
SHAPES = [
    ModelShape(d_model=32, n_layers=2, n_heads=4, vocab_size=61, context=16, variant="gpt2"),
    ModelShape(
        d_model=48, n_layers=3, n_heads=3, vocab_size=100, context=24, tied_embeddings=False
    ),
    ModelShape(d_model=32, n_layers=1, n_heads=2, context=8, variant="gpt2", qk_norm=True),
    ModelShape(d_model=40, n_layers=2, n_heads=5, vocab_size=77, context=16, variant="llama"),
    ModelShape(
        d_model=64,
        n_layers=2,
        n_heads=4,
        context=32,
        variant="llama",
        tied_embeddings=False,
        qk_norm=True,
        mlp_multiple_of=32,
    ),
    ModelShape(d_model=16, n_layers=3, n_heads=1, context=8, variant="llama", mlp_ratio=3.0),
    ModelShape(
        d_model=24,
        n_layers=2,
        n_heads=2,
        vocab_size=50,
        context=8,
        variant="gpt2",
        tied_embeddings=False,
        qk_norm=True,
        mlp_ratio=2.5,
    ),
]

# One compiled program per model structure: far faster than running the model op by op.
_forward = nnx.jit(lambda model, tokens_BT: model(tokens_BT))

# Tests that run the model share d_model/n_heads/context so XLA compiles are reused.
SMALL = {
    v: ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant=v, qk_norm=True)
    for v in ("gpt2", "llama")
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s.variant}-d{s.d_model}L{s.n_layers}")
def test_flops_param_count_equals_instantiated_model(shape: ModelShape) -> None:
    # eval_shape builds the model abstractly (every parameter's shape, no random draws), which
    # counts exactly what make_model creates at a fraction of the time; one concrete check below.
    counts = flops.param_counts(shape)
    assert param_count(nnx.eval_shape(lambda: make_model(shape, seed=0))) == counts.N_total
    assert counts.N_total == counts.N_embedding + counts.N_nonembedding


def test_param_count_of_a_concrete_model() -> None:
    shape = SMALL["llama"].replace(tied_embeddings=False)
    assert param_count(make_model(shape, seed=0)) == flops.param_counts(shape).N_total


def test_output_shape_dtype_and_shorter_sequences() -> None:
    shape = SMALL["gpt2"]
    model = make_model(shape, seed=0)
    tokens = jnp.zeros((3, shape.context), jnp.int32)
    logits = _forward(model, tokens)
    assert logits.shape == (3, shape.context, shape.vocab_size)
    assert logits.dtype == jnp.float32
    assert _forward(model, tokens[:, :5]).shape == (3, 5, shape.vocab_size)
    with pytest.raises(ValueError, match="exceeds context"):
        model(jnp.zeros((1, shape.context + 1), jnp.int32))


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_causal_future_tokens_do_not_change_earlier_logits(variant: str) -> None:
    shape = SMALL[variant]
    model = make_model(shape, seed=1)
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, shape.vocab_size)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % shape.vocab_size)
    a, b = _forward(model, tokens), _forward(model, changed)
    np.testing.assert_array_equal(np.asarray(a[:, :9]), np.asarray(b[:, :9]))
    assert float(jnp.abs(a[:, 9:] - b[:, 9:]).max()) > 1e-4  # later positions do see it


def test_rotary_identity_at_zero_norm_preserving_and_relative() -> None:
    x = jax.random.normal(jax.random.key(0), (1, 12, 2, 8))
    r = rotary(x)
    np.testing.assert_allclose(r[:, 0], x[:, 0], rtol=1e-6)  # position 0: no rotation
    np.testing.assert_allclose(jnp.linalg.norm(r, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    assert float(jnp.abs(r[:, 1:] - x[:, 1:]).max()) > 1e-3
    # The same q and k placed at positions (m, n) give a score depending only on m - n.
    q, k = jax.random.normal(jax.random.key(1), (2, 8))
    seq_q = jnp.broadcast_to(q, (1, 12, 1, 8))
    seq_k = jnp.broadcast_to(k, (1, 12, 1, 8))
    rq, rk = rotary(seq_q)[0, :, 0], rotary(seq_k)[0, :, 0]
    np.testing.assert_allclose(rq[5] @ rk[2], rq[10] @ rk[7], rtol=1e-4)
    np.testing.assert_allclose(rq[3] @ rk[3], q @ k, rtol=1e-4)
    assert abs(float(rq[5] @ rk[2] - q @ k)) > 1e-3


def test_llama_is_position_aware_without_position_embeddings() -> None:
    # With one layer and no position signal, the last position's output would be invariant to
    # permuting the earlier tokens; rotary positions must break that invariance.
    shape = SMALL["llama"].replace(n_layers=1)
    model = make_model(shape, seed=0)
    assert model.pos_embed is None
    a = _forward(model, jnp.array([[1, 2, 3, 4]], jnp.int32))[0, -1]
    b = _forward(model, jnp.array([[2, 1, 3, 4]], jnp.int32))[0, -1]
    assert float(jnp.abs(a - b).max()) > 1e-5


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_bfloat16_compute_runs_close_to_float32_with_float32_params(variant: str) -> None:
    shape = SMALL[variant]
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, shape.vocab_size)
    model16 = make_model(shape, seed=3, compute_dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(model16, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    out16 = _forward(model16, tokens)
    out32 = _forward(make_model(shape, seed=3), tokens)
    assert out16.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out16)))
    assert float(jnp.abs(out16 - out32).max()) < 0.05


def test_init_deterministic_in_seed_and_residual_scaling() -> None:
    shape = SMALL["gpt2"]
    a = jax.tree.leaves(nnx.state(make_model(shape, seed=5), nnx.Param))
    b = jax.tree.leaves(nnx.state(make_model(shape, seed=5), nnx.Param))
    c = jax.tree.leaves(nnx.state(make_model(shape, seed=6), nnx.Param))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    model = make_model(SMALL["gpt2"].replace(n_layers=8), seed=0)
    std_in = float(jnp.std(model.blocks[0].mlp.w_in[...]))
    std_out = float(jnp.std(model.blocks[0].mlp.w_out[...]))
    assert std_in == pytest.approx(0.02, rel=0.05)
    assert std_out == pytest.approx(0.02 / 4.0, rel=0.05)  # 0.02 / sqrt(2 * n_layers)


def test_pure_forward_over_split_state_jits_and_vmaps() -> None:
    shape = SMALL["llama"]
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, shape.vocab_size)
    graphdef, state0 = nnx.split(make_model(shape, seed=0))
    _, state1 = nnx.split(make_model(shape, seed=1))

    @jax.jit
    def forward(state, tokens_BT):
        return nnx.merge(graphdef, state)(tokens_BT)

    out0, out1 = forward(state0, tokens), forward(state1, tokens)
    np.testing.assert_allclose(
        out0, _forward(make_model(shape, seed=0), tokens), rtol=1e-5, atol=1e-6
    )
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), state0, state1)
    out_K = jax.jit(jax.vmap(forward, in_axes=(0, None)))(stacked, tokens)
    np.testing.assert_allclose(out_K[0], out0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_K[1], out1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"d_model": 30, "n_heads": 4}, "n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"variant": "bert"}, "variant"),
        ({"qk_norm": "yes"}, "qk_norm"),
        ({"mlp_ratio": "4"}, "mlp_ratio"),
        ({"mlp_ratio": float("nan")}, "mlp_ratio"),
    ],
)
def test_shape_rejects_bad_values_naming_the_field(changes: dict, field: str) -> None:
    base = {"d_model": 32, "n_layers": 2, "n_heads": 4}
    with pytest.raises(ConfigError) as err:
        ModelShape(**{**base, **changes})
    assert err.value.field == field


def test_shape_round_trips_through_dict_with_qk_norm() -> None:
    shape = SHAPES[4]
    assert ModelShape.from_dict(shape.to_dict()) == shape
    assert shape.to_dict()["qk_norm"] is True


@pytest.mark.parametrize("T", [64, 128, 256, 96])
def test_block_causal_attention_equals_the_masked_matrix(T: int, monkeypatch) -> None:
    """Causal attention by query blocks (each against the keys it may see) = one masked T×T."""
    from scaling.model import transformer

    assert transformer.causal_blocks(T) > 1  # the blocked path is the one under test
    B, H, K = 2, 2, 16
    kq, kk, kv = jax.random.split(jax.random.key(T), 3)
    q, k, v = (jax.random.normal(key, (B, T, H, K)) for key in (kq, kk, kv))
    blocked = transformer.softmax_attention(q, k, v, causal=True, logit_mult=0.7)
    # causal: the first half of the outputs ignores the second half of the keys and values
    k2, v2 = k.at[:, T // 2 :].set(0.0), v.at[:, T // 2 :].set(9.0)
    cut = transformer.softmax_attention(q, k2, v2, causal=True, logit_mult=0.7)
    np.testing.assert_array_equal(np.asarray(cut[:, : T // 2]), np.asarray(blocked[:, : T // 2]))
    monkeypatch.setattr(transformer, "CAUSAL_BLOCKS", 1)
    assert transformer.causal_blocks(T) == 1
    full = transformer.softmax_attention(q, k, v, causal=True, logit_mult=0.7)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(full), rtol=0, atol=2e-6)


@pytest.mark.parametrize("T", [128, 96])
def test_block_causal_attention_gradient_equals_the_masked_matrix(T: int, monkeypatch) -> None:
    """The written-out backward pass of blocked attention = autodiff of one masked T×T softmax."""
    from scaling.model import transformer

    B, H, K = 2, 2, 16
    kq, kk, kv, kg = jax.random.split(jax.random.key(T + 1), 4)
    q, k, v, g = (jax.random.normal(key, (B, T, H, K)) for key in (kq, kk, kv, kg))

    def loss(q, k, v):
        return jnp.sum(g * transformer.softmax_attention(q, k, v, causal=True, logit_mult=0.7))

    blocked = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    monkeypatch.setattr(transformer, "CAUSAL_BLOCKS", 1)
    full = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", blocked, full, strict=True):
        assert float(jnp.max(jnp.abs(b))) > 0.1, name  # a gradient that can be wrong
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=5e-6, err_msg=name)


@pytest.mark.parametrize("causal", [True, False])
def test_fused_attention_computes_softmax_attention(causal: bool) -> None:
    """The GPU path (`jax.nn.dot_product_attention`, run here as its XLA reference) computes
    what the model's own attention computes, values and gradients, with the logit multiplier."""
    import math

    from scaling.model import transformer

    B, T, H, K = 2, 128, 2, 16
    kq, kk, kv, kg = jax.random.split(jax.random.key(7), 4)
    q, k, v, g = (jax.random.normal(key, (B, T, H, K)) for key in (kq, kk, kv, kg))

    def own(q, k, v):
        return jnp.sum(g * transformer.softmax_attention(q, k, v, causal=causal, logit_mult=0.7))

    def fused(q, k, v):
        y = transformer.fused_attention(q, k, v, causal, 0.7 / math.sqrt(K), "xla")
        return jnp.sum(g * y)

    assert own(q, k, v) != 0.0
    np.testing.assert_allclose(float(fused(q, k, v)), float(own(q, k, v)), rtol=1e-5)
    for name, a, b in zip(
        "qkv",
        jax.grad(fused, argnums=(0, 1, 2))(q, k, v),
        jax.grad(own, argnums=(0, 1, 2))(q, k, v),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=5e-6, err_msg=name)


def test_fused_attention_only_on_a_gpu_that_compiles_it(monkeypatch) -> None:
    """On a CPU, in float32, or where cuDNN's kernel does not compile, the model keeps its own
    attention (None: the caller's path), and the probe runs inside a trace without failing."""
    from scaling.model import transformer

    q = jnp.ones((1, 64, 2, 16), jnp.bfloat16)
    assert transformer.fused_attention(q, q, q, True, 0.25) is None  # a CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert transformer.fused_attention(q.astype(jnp.float32), q, q, True, 0.25) is None
    transformer.cudnn_attention_available.cache_clear()
    try:  # a "GPU" whose cuDNN cannot compile the kernel: probed inside the trace, then None
        out = jax.jit(lambda q: transformer.softmax_attention(q, q, q, causal=True))(q)
        assert not transformer.cudnn_attention_available()
    finally:
        transformer.cudnn_attention_available.cache_clear()
    assert out.shape == q.shape and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


@pytest.mark.parametrize(("k", "m"), [(8, 24), (24, 8)])
def test_linear_gradient_equals_the_matmul_gradient(k: int, m: int) -> None:
    """`linear` writes its weight gradient out in either orientation; both equal autodiff of @."""
    from scaling.model.transformer import linear

    kx, kw, kg = jax.random.split(jax.random.key(k), 3)
    x, w = jax.random.normal(kx, (3, 5, k)), jax.random.normal(kw, (k, m))
    g = jax.random.normal(kg, (3, 5, m))
    ours = jax.grad(lambda x, w: jnp.sum(g * linear(x, w)), argnums=(0, 1))(x, w)
    plain = jax.grad(lambda x, w: jnp.sum(g * (x @ w)), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(np.asarray(linear(x, w)), np.asarray(x @ w), rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_bfloat16_products_are_float32_sums_rounded_once() -> None:
    """`linear` on bfloat16 asks for bfloat16 products (`product_dtype`, which a GPU writes at
    half the bytes) and gets float32 accumulation rounded once: forward, dx and dW over 4096
    tokens agree with the float32 products rounded to bfloat16 in all but a few elements, and
    those by one bfloat16 step (float32 summation order); bfloat16 sums would miss by many."""
    from scaling.model.ops import product_dtype
    from scaling.model.transformer import linear

    bf, f32 = jnp.bfloat16, jnp.float32
    kx, kw, kg = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (4, 1024, 48)).astype(bf)
    w = jax.random.normal(kw, (48, 96)).astype(bf)
    g = jax.random.normal(kg, (4, 1024, 96)).astype(bf)
    assert product_dtype(x, bf) == bf and product_dtype(x, f32) == f32
    assert product_dtype(x.astype(f32), f32) == f32

    y, pull = jax.vjp(linear, x, w)
    dx, dw = pull(g)
    assert y.dtype == dx.dtype == dw.dtype == bf

    def assert_rounded_float32_sums(got: jax.Array, a: jax.Array, b: jax.Array, spec: str):
        want = np.asarray(jnp.einsum(spec, a, b, preferred_element_type=f32).astype(bf), np.float64)
        got = np.asarray(got, np.float64)
        step = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(want), 1e-30))) - 7)  # bf16 spacing
        assert np.mean(got != want) < 1e-3
        slack = 1e-5 * np.abs(want).max()  # float32 summation order, under cancellation
        assert np.all(np.abs(got - want) <= step + slack)

    assert_rounded_float32_sums(y, x, w, "btk,km->btm")
    assert_rounded_float32_sums(dx, g, w, "btm,km->btk")
    assert_rounded_float32_sums(dw, x, g, "btk,btm->km")
    # a float32 result of bfloat16 operands (the readout's logits) is not rounded
    logits = linear(x, w, f32)
    assert logits.dtype == f32
    want = jnp.einsum("btk,km->btm", x, w, preferred_element_type=f32)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-6)
