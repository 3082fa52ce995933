"""Architecture variants (palm, performer, local): exact counts, FAVOR+ accuracy, windows,
causality both ways, the ladder, validation, and FLOP conventions against XLA's count."""

from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import flops
from scaling.errors import ConfigError
from scaling.model.ladder import shape_for_params
from scaling.model.shape import ModelShape
from scaling.model.transformer import (
    FAVOR_CHUNK,
    causal_blocks,
    favor_attention,
    favor_features,
    feature_projection,
    make_model,
    param_count,
    softmax_attention,
)

NEW = ("palm", "performer", "local")
SHAPES = [
    ModelShape(d_model=32, n_layers=2, n_heads=4, vocab_size=61, context=16, variant="palm"),
    ModelShape(
        d_model=48,
        n_layers=3,
        n_heads=3,
        context=24,
        variant="palm",
        tied_embeddings=False,
        qk_norm=True,
        mlp_multiple_of=16,
    ),
    ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="performer"),
    ModelShape(
        d_model=40,
        n_layers=1,
        n_heads=5,
        context=8,
        variant="performer",
        n_features=7,
        qk_norm=True,
    ),
    ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="local", window=4),
    ModelShape(
        d_model=16, n_layers=3, n_heads=1, vocab_size=50, context=8, variant="local", mlp_ratio=3.0
    ),
]
# Runnable models share one structure per variant, so each forward compiles once.
SMALL = {
    "palm": ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="palm"),
    "performer": ModelShape(
        d_model=32, n_layers=2, n_heads=2, context=16, variant="performer", n_features=32
    ),
    "local": ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="local", window=4),
}
_forward = nnx.jit(
    lambda model, tokens_BT, causal: model(tokens_BT, causal=causal), static_argnums=2
)


def _params(model: nnx.Module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


# --- parameter counts ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s.variant}-d{s.d_model}L{s.n_layers}")
def test_param_count_equals_instantiated_model(shape: ModelShape) -> None:
    counts = flops.param_counts(shape)
    assert param_count(nnx.eval_shape(lambda: make_model(shape, seed=0))) == counts.N_total
    assert counts.N_total == counts.N_embedding + counts.N_nonembedding == counts.N_chinchilla


def test_palm_and_the_others_by_hand() -> None:
    # palm: 4d² attention + 3·d·f SwiGLU + ONE bias-free LayerNorm (d) per layer; final norm d;
    # rotary (no position table), tied embeddings V·d.
    shape = SMALL["palm"]
    d, f = 32, shape.d_ff
    assert f == round(8 / 3 * d)
    counts = flops.param_counts(shape)
    assert counts.N_nonembedding == 2 * (4 * d * d + 3 * d * f + d) + d
    assert counts.N_embedding == 256 * d
    # performer and local have exactly llama's parameters: the projection is not a parameter.
    for v in ("performer", "local"):
        llama = SMALL[v].to_dict() | {"variant": "llama"}
        llama.pop("window", None), llama.pop("n_features", None)
        assert counts_of(SMALL[v]) == counts_of(ModelShape(**llama))


def counts_of(shape: ModelShape) -> flops.ParamCounts:
    return flops.param_counts(shape)


# --- FAVOR+ ----------------------------------------------------------------------------------
def _rel_err(y: jax.Array, ref: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(y - ref)) / jnp.mean(jnp.square(ref)))


# Measured (q, k ~ N(0, 0.5²), head_dim 32, so logits q·k/sqrt(K) have std 0.25; T = 128; mean
# of 4 projections): relative RMS error of the attention output vs exact softmax attention
# 0.52 (16 features), 0.35 (64), 0.20 (256), 0.11 (1024): the Monte-Carlo 1/sqrt(M) rate.
FAVOR_ERROR_BOUNDS = {16: 0.8, 64: 0.5, 256: 0.3, 1024: 0.16}


def test_favor_approximates_softmax_attention_better_with_more_features() -> None:
    B, T, H, K = 4, 128, 2, 32
    kq, kk, kv = jax.random.split(jax.random.key(1), 3)
    q = 0.5 * jax.random.normal(kq, (B, T, H, K))
    k = 0.5 * jax.random.normal(kk, (B, T, H, K))
    v = jax.random.normal(kv, (B, T, H, K))

    @partial(jax.jit, static_argnums=1)
    def mean_error(w_PMK: jax.Array, causal: bool) -> jax.Array:  # over P projections
        ref = softmax_attention(q, k, v, causal=causal)
        return jnp.mean(
            jax.vmap(lambda w: _rel_err(favor_attention(q, k, v, w, causal=causal), ref))(w_PMK)
        )

    def projections(m: int) -> jax.Array:
        return jnp.stack([jnp.asarray(feature_projection(layer, m, K)) for layer in range(4)])

    errs = [float(mean_error(projections(m), True)) for m in FAVOR_ERROR_BOUNDS]
    assert all(b < a for a, b in itertools.pairwise(errs)), errs
    assert errs[0] / errs[-1] > 3.0, errs  # 1/sqrt(M) would give 8
    for (m, bound), err in zip(FAVOR_ERROR_BOUNDS.items(), errs, strict=True):
        assert err < bound, (m, err)
    assert float(mean_error(projections(256), False)) < 0.4  # bidirectional: measured 0.27


def test_favor_kernel_is_unbiased_and_projection_fixed() -> None:
    # Mean over independent projections of phi(x)·phi(y)/M -> exp(q·k/sqrt(K)) (unstabilized
    # features, float64), within 4 standard errors.
    K, M = 16, 32
    rng = np.random.default_rng(0)
    q, k = 0.5 * rng.standard_normal(K), 0.5 * rng.standard_normal(K)
    x, y = q * K**-0.25, k * K**-0.25
    est = []
    for layer in range(200):
        w = feature_projection(layer, M, K).astype(np.float64)
        est.append(np.mean(np.exp(w @ x - x @ x / 2) * np.exp(w @ y - y @ y / 2)))
    se = np.std(est) / math.sqrt(len(est))
    assert abs(np.mean(est) - math.exp(q @ k / math.sqrt(K))) < 4 * se
    # Orthogonal blocks: rows within a block of K are orthogonal; the draw is deterministic.
    w = feature_projection(0, M, K)
    gram = w[:K] @ w[:K].T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-4)
    np.testing.assert_array_equal(w, feature_projection(0, M, K))
    assert not np.array_equal(w, feature_projection(1, M, K))


def test_favor_chunked_prefix_sums_equal_the_quadratic_form() -> None:
    # T not a multiple of the chunk, several chunks: the chunked causal kernel equals the
    # explicit masked T×T form of the same features.
    B, T, H, K, M = 2, 2 * FAVOR_CHUNK + 22, 2, 8, 24
    kq, kk, kv = jax.random.split(jax.random.key(2), 3)
    q, k = jax.random.normal(kq, (B, T, H, K)), jax.random.normal(kk, (B, T, H, K))
    v = jax.random.normal(kv, (B, T, H, K))
    w = jnp.asarray(feature_projection(0, M, K))
    pq, pk = favor_features(q, w, query=True), favor_features(k, w, query=False)
    a_BHTS = jnp.einsum("bthm,bshm->bhts", pq, pk) * jnp.tril(jnp.ones((T, T)))
    ref = (
        jnp.einsum("bhts,bshk->bthk", a_BHTS, v) / jnp.sum(a_BHTS, -1).transpose(0, 2, 1)[..., None]
    )
    np.testing.assert_allclose(favor_attention(q, k, v, w), ref, rtol=2e-4, atol=2e-5)


# --- local -----------------------------------------------------------------------------------
def test_local_window_at_least_context_is_exactly_full_attention() -> None:
    base = SMALL["local"].to_dict() | {"variant": "llama"}
    del base["window"]
    llama = ModelShape(**base)
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 256)
    full = make_model(llama, seed=3)
    ref = _forward(full, tokens, True)
    for window in (16, 1000):
        local = make_model(SMALL["local"].replace(window=window), seed=3)
        assert all(np.array_equal(a, b) for a, b in zip(_params(local), _params(full), strict=True))
        np.testing.assert_array_equal(np.asarray(_forward(local, tokens, True)), np.asarray(ref))
    # A smaller window does change the logits.
    small = _forward(make_model(SMALL["local"], seed=3), tokens, True)
    assert float(jnp.abs(small - ref).max()) > 1e-4


@pytest.mark.parametrize(("window", "causal"), [(1, True), (5, True), (40, True), (5, False)])
def test_local_blocks_equal_the_band_masked_matrix(window: int, causal: bool) -> None:
    B, T, H, K = 2, 37, 2, 8
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q, k = jax.random.normal(kq, (B, T, H, K)), jax.random.normal(kk, (B, T, H, K))
    v = jax.random.normal(kv, (B, T, H, K))
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = (np.abs(t - s) < window) & ((s <= t) if causal else True)
    scores = jnp.einsum("bthk,bshk->bhts", q, k) / math.sqrt(K)
    probs = jax.nn.softmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
    ref = jnp.einsum("bhts,bshk->bthk", probs, v)
    got = jax.jit(partial(softmax_attention, causal=causal, window=window))(q, k, v)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6)


def test_local_one_layer_sees_only_its_window() -> None:
    shape = SMALL["local"].replace(n_layers=1)
    model = make_model(shape, seed=0)
    tokens = jax.random.randint(jax.random.key(4), (1, 16), 0, 256)
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 256)
    a, b = _forward(model, tokens, True), _forward(model, changed, True)
    moved = np.asarray(jnp.abs(a - b).max(axis=-1))[0] > 0
    assert moved.tolist() == [5 <= t < 5 + shape.window for t in range(16)]


# --- causality, both ways, for every variant -------------------------------------------------
@pytest.mark.parametrize("variant", NEW)
def test_causal_and_bidirectional(variant: str) -> None:
    shape = SMALL[variant]
    model = make_model(shape, seed=1)
    assert param_count(model) == flops.param_counts(shape).N_total  # a concrete model too
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, shape.vocab_size)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % shape.vocab_size)
    a, b = _forward(model, tokens, True), _forward(model, changed, True)
    np.testing.assert_array_equal(np.asarray(a[:, :9]), np.asarray(b[:, :9]))
    assert float(jnp.abs(a[:, 9:] - b[:, 9:]).max()) > 1e-4
    a, b = _forward(model, tokens, False), _forward(model, changed, False)
    assert float(jnp.abs(a[:, :9] - b[:, :9]).max()) > 1e-4  # earlier positions see it


def test_performer_bfloat16_compute_stays_close_to_float32() -> None:
    # FAVOR+ features and sums run in float32 whatever the compute dtype.
    shape = SMALL["performer"]
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, shape.vocab_size)
    out16 = _forward(make_model(shape, seed=3, compute_dtype=jnp.bfloat16), tokens, True)
    out32 = _forward(make_model(shape, seed=3), tokens, True)
    assert out16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out16)))
    assert float(jnp.abs(out16 - out32).max()) < 0.05


# --- shapes, validation, ladder --------------------------------------------------------------
def test_variant_fields_defaults_round_trip_and_dict() -> None:
    assert ModelShape(d_model=64, n_layers=1, n_heads=2, variant="local").attention_window == 64
    perf = ModelShape(d_model=64, n_layers=1, n_heads=2, variant="performer")
    assert perf.features == round(32 * math.log(32))
    assert "window" not in perf.to_dict() and "n_features" not in perf.to_dict()
    for shape in SHAPES:
        assert ModelShape.from_dict(shape.to_dict()) == shape
    assert SMALL["local"].to_dict()["window"] == 4
    assert flops.counts_dict(perf)["n_features"] == perf.features


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": 8}, "window"),  # gpt2
        ({"variant": "llama", "window": 8}, "window"),
        ({"variant": "local", "n_features": 8}, "n_features"),
        ({"variant": "local", "window": 0}, "window"),
        ({"variant": "local", "window": 2.5}, "window"),
        ({"variant": "performer", "n_features": True}, "n_features"),
        ({"variant": "palm", "n_heads": 32, "d_model": 96}, "n_heads"),  # odd head_dim
        ({"variant": "reformer"}, "variant"),
    ],
)
def test_variant_fields_are_validated(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ModelShape(**{"d_model": 32, "n_layers": 2, "n_heads": 2, **changes})
    assert err.value.field == field


@pytest.mark.parametrize("variant", NEW)
def test_ladder_builds_new_variants(variant: str) -> None:
    extra = {"window": 32} if variant == "local" else {}
    for target in (3e4, 1e6):
        shape = shape_for_params(target, variant=variant, recipe="narrow-heads", **extra)
        assert shape.variant == variant
        n = flops.param_counts(shape).N_nonembedding
        assert abs(n / target - 1) < 0.10
        if variant == "local":
            assert shape.attention_window == 32
    with pytest.raises(ConfigError) as err:
        shape_for_params(1e6, variant=variant, head_dim=33)
    assert err.value.field == "head_dim"


# --- FLOPs -----------------------------------------------------------------------------------
def test_attention_flops_by_hand() -> None:
    d, L, H, T = 32, 2, 2, 16
    llama = ModelShape(d_model=d, n_layers=L, n_heads=H, context=T, variant="llama")
    n = flops.param_counts(llama).N_nonembedding
    for w in (16, 64):  # window >= context: exactly full attention's counts
        local = llama.replace(variant="local", window=w)
        for c in flops.CONVENTIONS:
            assert flops.forward_flops_per_token(local, c) == flops.forward_flops_per_token(
                llama, c
            )
    w = 4
    local = llama.replace(variant="local", window=w)
    att = flops.forward_flops_per_token(local, "attention")
    assert att == 2 * n + L * 4 * d * w * (1 - w / (2 * T))
    assert flops.attention_flops_per_token(local, "chinchilla") == 4 * d * w + 3 * H * w
    assert flops.attention_flops_per_token(local, "chinchilla", causal=False) == (
        4 * d * (2 * w - 1) + 3 * H * (2 * w - 1)
    )
    # Bidirectional full attention: no causal halving.
    assert flops.forward_flops_per_token(llama, "attention", causal=False) == 2 * n + L * 4 * T * d
    M, J = 24, d // H + 1
    perf = llama.replace(variant="performer", n_features=M)
    assert flops.forward_flops_per_token(perf, "kaplan") == 2 * n
    assert flops.attention_flops_per_token(perf, "attention") == 4 * d * M + 4 * H * M * J
    assert flops.attention_flops_per_token(perf, "chinchilla") == (
        4 * d * M + 4 * H * M * J + 6 * H * M
    )
    palm = llama.replace(variant="palm")
    assert flops.forward_flops_per_token(palm, "chinchilla") == flops.forward_flops_per_token(
        llama, "chinchilla"
    )
    assert flops.flops_per_token(palm, "kaplan") == 6 * flops.param_counts(palm).N_nonembedding


# XLA's cost_analysis (see tests/test_flops.py): multiply-adds count 2, embeddings are a gather,
# ~1 FLOP per elementwise op. `chinchilla` minus its embedding term counts the matmuls the
# model runs, except where a kernel runs more than the algorithm needs, which is stated here:
# `local` (T a multiple of the window) computes 2w keys per query where the count has w, i.e.
# + 4·L·d·w per token; causal `performer` (T a multiple of the 64-token chunk) also computes
# the masked quadratic form inside each chunk, + 2·L·C·H·(M + K + 1) per token; causal full
# attention by n query blocks (`causal_blocks`) computes T·(n+1)/2n keys per query where the
# count has T, i.e. - 4·L·d·T·(n-1)/2n.
XLA_SHAPES = [
    ModelShape(d_model=128, n_layers=2, n_heads=2, context=128, variant="palm"),
    ModelShape(d_model=128, n_layers=2, n_heads=2, context=128, variant="local", window=32),
    ModelShape(d_model=128, n_layers=2, n_heads=2, context=128, variant="performer"),
]
ELEMENTWISE_TOLERANCE = 0.06


def _xla_forward_flops_per_token(shape: ModelShape) -> float:
    graphdef, state = nnx.split(nnx.eval_shape(lambda: make_model(shape, seed=0)))
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    tokens = jax.ShapeDtypeStruct((2, shape.context), jnp.int32)
    cost = forward.lower(state, tokens).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / (2 * shape.context)


def _kernel_extra(shape: ModelShape) -> float:
    d, L, H = shape.d_model, shape.n_layers, shape.n_heads
    if shape.variant == "local":
        return 4 * L * d * shape.attention_window
    if shape.variant == "performer":
        C = min(FAVOR_CHUNK, shape.context)
        return 2 * L * C * H * (shape.features + shape.head_dim + 1)
    T, n = shape.context, causal_blocks(shape.context)
    return -4 * L * d * T * (n - 1) / (2 * n)


@pytest.mark.parametrize("shape", XLA_SHAPES, ids=lambda s: s.variant)
def test_conventions_against_xla_cost_analysis(shape: ModelShape) -> None:
    xla = _xla_forward_flops_per_token(shape)
    d, L, V, H = shape.d_model, shape.n_layers, shape.vocab_size, shape.n_heads
    fwd = {c: flops.forward_flops_per_token(shape, c) for c in flops.CONVENTIONS}
    matmuls = fwd["chinchilla"] - 2 * V * d
    if shape.variant == "performer":
        matmuls -= L * 6 * H * shape.features  # the exponentials chinchilla counts at 3
    else:
        matmuls -= L * 3 * H * flops.attention_keys(shape, "chinchilla")  # softmax
    executed = matmuls + _kernel_extra(shape)
    assert executed <= xla <= executed * (1 + ELEMENTWISE_TOLERANCE), (xla, executed)
    assert fwd["kaplan"] < fwd["attention"] < xla


# --- the shipped architecture sweeps -----------------------------------------------------------
@pytest.mark.parametrize("name", ["architectures.toml", "architectures_gpu.toml"])
def test_architecture_sweeps_plan_every_variant_at_every_budget(name: str) -> None:
    from pathlib import Path

    from scaling.sweep.designs import plan
    from scaling.sweep.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parent.parent / "sweeps" / name)
    runs = plan(spec)
    variants = {"gpt2", "llama", "palm", "performer", "local"}
    budgets = {run.point["budget"] for run in runs}
    for variant in variants:
        mine = [r for r in runs if r.shape.variant == variant]
        assert {r.point["budget"] for r in mine} == budgets
        for run in mine:
            achieved = flops.training_flops(run.shape, run.tokens, spec.convention)
            assert abs(achieved / run.point["budget"] - 1) <= 0.05
    assert {r.shape.variant for r in runs} == variants
