"""The readout's chunked cross-entropy (`scaling.model.readout`): the values and gradients of
the plain form, in any number of chunks, without its [tokens, vocabulary] arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.model.readout import CHUNK_BYTES, logsumexp, readout_cross_entropy, token_chunks
from scaling.model.shape import ModelShape
from scaling.train import step as train_step_module
from scaling.train.step import init_params, loss_fn, token_losses


def _plain(x_ND, w_DV, targets_N, scale_N, logit_mult, z_loss):
    logits = jnp.einsum("nd,dv->nv", x_ND, w_DV, preferred_element_type=jnp.float32)
    logits = logits * logit_mult
    lse = jax.nn.logsumexp(logits, axis=-1)
    ce = lse - jnp.take_along_axis(logits, targets_N[:, None], axis=-1)[:, 0]
    return jnp.sum(scale_N * (ce + z_loss * lse**2)), jnp.sum(scale_N * ce)


def _problem(N=96, D=16, V=40, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((N, D)), dtype)
    w = jnp.asarray(0.5 * rng.standard_normal((D, V)), dtype)
    targets = jnp.asarray(rng.integers(0, V, N), jnp.int32)
    weights = rng.integers(0, 3, N).astype(np.float32)
    return x, w, targets, jnp.asarray(weights / weights.sum())


@pytest.mark.parametrize("n_chunks", [1, 4, 12])
@pytest.mark.parametrize(("logit_mult", "z_loss"), [(1.0, 0.0), (0.25, 1e-2)])
def test_values_and_gradients_match_the_plain_form(n_chunks, logit_mult, z_loss):
    x, w, targets, scale = _problem()

    def chunked(x, w):
        return readout_cross_entropy(
            x, w, targets, scale, logit_mult=logit_mult, z_loss=z_loss, n_chunks=n_chunks
        )

    def plain(x, w):
        return _plain(x, w, targets, scale, logit_mult, z_loss)

    (obj, ce), grads = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(x, w)
    (want_obj, want_ce), want = jax.value_and_grad(plain, argnums=(0, 1), has_aux=True)(x, w)
    np.testing.assert_allclose(float(obj), float(want_obj), rtol=1e-6)
    np.testing.assert_allclose(float(ce), float(want_ce), rtol=1e-6)
    assert z_loss == 0 or float(obj) > float(ce) + 1e-4  # the z-loss term is in the objective
    for got, ref in zip(grads, want, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-5, atol=1e-7)


def test_bfloat16_operands_give_gradients_in_their_dtype_close_to_float32():
    x, w, targets, scale = _problem(dtype=jnp.bfloat16)

    def objective(x, w):
        return readout_cross_entropy(x, w, targets, scale, n_chunks=4)[0]

    gx, gw = jax.grad(objective, argnums=(0, 1))(x, w)
    assert (gx.dtype, gw.dtype) == (jnp.bfloat16, jnp.bfloat16)
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    want = jax.grad(lambda x, w: _plain(x, w, targets, scale, 1.0, 0.0)[0], argnums=(0, 1))(
        x32, w32
    )
    for got, ref in zip((gx, gw), want, strict=True):
        err = np.linalg.norm(np.asarray(got, np.float32) - ref) / np.linalg.norm(ref)
        assert err < 2e-2


def test_the_one_pass_logsumexp_is_the_two_pass_one():
    rng = np.random.default_rng(2)
    for scale, shape in [(1.0, (64, 512)), (40.0, (8, 8192)), (1e3, (5, 7))]:
        x = jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)
        want = jax.nn.logsumexp(x, axis=-1)
        np.testing.assert_allclose(jax.jit(logsumexp)(x), want, rtol=1e-6)
    inf = jnp.inf
    edges = jnp.asarray([[-inf, 0.0, -inf], [-inf, -inf, -inf], [1.0, 1.0, 1.0], [88.0, 0, -90]])
    np.testing.assert_allclose(jax.jit(logsumexp)(edges), [0.0, -inf, 1 + np.log(3), 88.0])


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """`jax.default_backend()` says "gpu" (traces are cached without it: cleared both ways)."""
    jax.clear_caches()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    yield
    monkeypatch.undo()
    jax.clear_caches()


def test_the_gpu_readout_reads_the_logits_in_one_pass_to_the_same_values(request):
    x, w, targets, scale = _problem()

    def chunked(x, w):
        return readout_cross_entropy(x, w, targets, scale, z_loss=1e-2, n_chunks=4)

    def variadic_reduces() -> int:
        return jax.jit(chunked).lower(x, w).as_text().count(":2 = stablehlo.reduce(")

    cpu = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(x, w)
    assert variadic_reduces() == 0
    request.getfixturevalue("as_on_a_gpu")
    assert variadic_reduces() == 1
    gpu = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(x, w)
    for got, want in zip(jax.tree.leaves(gpu), jax.tree.leaves(cpu), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-8)


def test_bfloat16_operands_ask_for_bfloat16_logits():
    """bfloat16 operands ask for bfloat16 logits (as `linear` does, and PyTorch under autocast):
    on a GPU they are written and read at half the bytes. The log-softmax is float32 either way,
    and XLA may keep the product in float32 (the CPU's does): the value is within rounding."""
    x, w, targets, scale = _problem(N=256, V=512, dtype=jnp.bfloat16)

    def chunked(x, w):
        return readout_cross_entropy(x, w, targets, scale, n_chunks=4)[0]

    lowered = jax.jit(chunked).lower(x, w).as_text()
    products = [line for line in lowered.splitlines() if "dot_general" in line]
    assert len(products) == 1 and products[0].endswith("-> tensor<64x512xbf16>"), products
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    assert "-> tensor<64x512xf32>" in jax.jit(chunked).lower(x32, w32).as_text()

    def plain(x, w, logits_dtype):
        logits = jnp.einsum("nd,dv->nv", x, w, preferred_element_type=jnp.float32)
        logits = logits.astype(logits_dtype).astype(jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        return jnp.sum(scale * (lse - jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]))

    got = float(jax.jit(chunked)(x, w))
    rounded, exact = (float(plain(x, w, dt)) for dt in (jnp.bfloat16, jnp.float32))
    assert abs(rounded - exact) > 1e-5 * exact  # the two differ here, by more than float32 sums
    assert min(abs(got - rounded), abs(got - exact)) < 1e-6 * exact
    grads = jax.grad(chunked, argnums=(0, 1))(x, w)
    want = jax.grad(plain, argnums=(0, 1))(x, w, jnp.bfloat16)
    for g, ref in zip(grads, want, strict=True):
        g, ref = np.asarray(g, np.float32), np.asarray(ref, np.float32)
        assert np.linalg.norm(g - ref) < 1e-2 * np.linalg.norm(ref)


def test_the_cross_entropy_output_carries_no_gradient():
    x, w, targets, scale = _problem()
    gx = jax.grad(lambda x: readout_cross_entropy(x, w, targets, scale)[1])(x)
    assert not np.any(np.asarray(gx))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_vmapped_members_match_each_alone(backend, request):
    if backend == "gpu":  # the one-pass log-partition, under vmap as in a pack
        request.getfixturevalue("as_on_a_gpu")
    members = [_problem(seed=k) for k in range(3)]
    stacked = [jnp.stack(parts) for parts in zip(*members, strict=True)]

    def grads(x, w, targets, scale):
        return jax.grad(
            lambda x, w: readout_cross_entropy(x, w, targets, scale, n_chunks=4)[0], (0, 1)
        )(x, w)

    packed = jax.vmap(grads)(*stacked)
    for k, problem in enumerate(members):
        for got, ref in zip(packed, grads(*problem), strict=True):
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref), rtol=1e-5, atol=1e-7)


def test_chunks_divide_the_tokens_and_hold_their_limit():
    for n_tokens, vocab, d_model in [(8192, 256, 64), (8192, 32768, 128), (16384, 50304, 768)]:
        n = token_chunks(n_tokens, vocab, d_model)
        chunk = n_tokens // n
        assert n_tokens % n == 0
        assert chunk * vocab * 4 <= max(CHUNK_BYTES, 16 * d_model * vocab)
        assert n == 1 or 2 * chunk * vocab * 4 > max(CHUNK_BYTES, 16 * d_model * vocab)
    assert token_chunks(8192, 256, 64) == 1  # a byte vocabulary: one chunk, no loop
    assert token_chunks(8192, 32768, 128) == 16  # 512 tokens = 64 MiB of logits
    assert token_chunks(7, 10**9, 1) == 7  # 7 tokens do not fit: chunks of one (a divisor)
    assert token_chunks(7, 10**5, 1) == 1


def test_the_gradient_program_holds_no_full_logits():
    N, D, V = 4096, 32, 8192  # float32 logits: 134 MB
    x, w, targets, scale = _problem(N, D, V)

    def temp_bytes(objective):
        grad = jax.jit(jax.grad(objective, argnums=(0, 1)))
        return grad.lower(x, w).compile().memory_analysis().temp_size_in_bytes

    plain = temp_bytes(lambda x, w: _plain(x, w, targets, scale, 1.0, 0.0)[0])
    chunked = temp_bytes(lambda x, w: readout_cross_entropy(x, w, targets, scale, n_chunks=8)[0])
    assert plain > N * V * 4  # at least one full float32 [tokens, vocabulary] array
    assert chunked < plain / 4


@pytest.mark.parametrize("objective_batch", [False, True])
def test_the_training_loss_is_the_models_own_cross_entropy(objective_batch):
    """loss_fn (chunked readout) against token_losses (the model's own logits), z-loss on."""
    shape = ModelShape(d_model=32, n_layers=1, n_heads=2, vocab_size=64, context=16)
    graphdef, params = init_params(shape, 0)
    rng = np.random.default_rng(1)
    batch = jnp.asarray(rng.integers(0, 64, (3, 17)), jnp.int32)
    if objective_batch:
        weights = jnp.asarray(rng.integers(0, 2, (3, 16)), jnp.float32)
        batch = {"inputs": batch[:, :-1], "targets": batch[:, 1:], "weights": weights}
    z = 1e-3
    mean = train_step_module._mean

    def reference(p):
        ce_BT, lse_BT = token_losses(graphdef, p, batch)
        ce = mean(ce_BT, batch)
        return ce + z * mean(jnp.square(lse_BT), batch), ce

    (obj, ce), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, graphdef, batch, z)
    (want_obj, want_ce), want = jax.value_and_grad(reference, has_aux=True)(params)
    np.testing.assert_allclose([float(obj), float(ce)], [float(want_obj), float(want_ce)], 1e-6)
    for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-7)
