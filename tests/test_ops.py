"""GELU, SwiGLU, the norms, the position add and the q, k, v split with written-out backward
passes (`scaling.model.ops`): the same values and gradients as the formulas differentiated by
JAX, and only their input saved."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.model import ops
from scaling.model.ops import (
    add_positions,
    after,
    gelu_tanh,
    layer_norm,
    rms_norm,
    split_qkv,
    swiglu,
)

EPS = 1e-5


def _reference_layer_norm(x, scale, bias, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps) * scale
    return (y if bias is None else y + bias).astype(x.dtype)


def _reference_rms_norm(x, scale, eps):
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps) * scale
    return y.astype(x.dtype)


def _reference_swiglu(h):
    f = h.shape[-1] // 2
    return jax.nn.silu(h[..., :f]) * h[..., f:]


def _cases():
    rng = np.random.default_rng(0)
    x = jnp.asarray(3 * rng.standard_normal((4, 16, 24)), jnp.float32)
    scale = jnp.asarray(1 + 0.3 * rng.standard_normal(24), jnp.float32)
    bias = jnp.asarray(0.1 * rng.standard_normal(24), jnp.float32)
    pos = jnp.asarray(rng.standard_normal((16, 24)), jnp.float32)
    qkv = x.reshape(4, 16, 3, 2, 4)
    b_qkv = jnp.asarray(rng.standard_normal((3, 2, 4)), jnp.float32)
    return {
        "positions": (add_positions, lambda x, p: x + p, (x, pos)),
        "split_qkv": (lambda x, b: jnp.stack(split_qkv(x, b), axis=2), jnp.add, (qkv, b_qkv)),
        "gelu": (gelu_tanh, lambda x: jax.nn.gelu(x, approximate=True), (x,)),
        "swiglu": (swiglu, _reference_swiglu, (x,)),
        "layernorm": (
            lambda x, s, b: layer_norm(x, s, b, EPS),
            lambda x, s, b: _reference_layer_norm(x, s, b, EPS),
            (x, scale, bias),
        ),
        "layernorm_nobias": (
            lambda x, s: layer_norm(x, s, None, EPS),
            lambda x, s: _reference_layer_norm(x, s, None, EPS),
            (x, scale),
        ),
        "rmsnorm": (
            lambda x, s: rms_norm(x, s, EPS),
            lambda x, s: _reference_rms_norm(x, s, EPS),
            (x, scale),
        ),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_values_and_gradients_match_the_differentiated_formula(name):
    op, reference, args = _cases()[name]
    np.testing.assert_array_equal(op(*args), reference(*args))  # the same operations
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(op(*args).shape), jnp.float32)
    argnums = tuple(range(len(args)))
    grads = jax.grad(lambda *a: jnp.sum(op(*a) * weights), argnums)(*args)
    expected = jax.grad(lambda *a: jnp.sum(reference(*a) * weights), argnums)(*args)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", list(_cases()))
def test_gradients_under_vmap_match_one_by_one(name):
    op, _, args = _cases()[name]
    x = args[0]
    stacked = jnp.stack([x, 0.5 * x, -x])
    loss = lambda x, *rest: jnp.sum(jnp.sin(op(x, *rest)))  # noqa: E731
    together = jax.vmap(jax.grad(loss), in_axes=(0, *[None] * (len(args) - 1)))(stacked, *args[1:])
    for k in range(3):
        np.testing.assert_allclose(
            together[k], jax.grad(loss)(stacked[k], *args[1:]), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("name", list(_cases()))
def test_bfloat16_inputs_keep_their_dtype_and_get_accurate_gradients(name):
    op, reference, (x, *rest) = _cases()[name]
    x16 = x.astype(jnp.bfloat16)
    assert op(x16, *rest).dtype == jnp.bfloat16
    g16 = jax.grad(lambda x: jnp.sum(op(x, *rest).astype(jnp.float32) ** 2))(x16)
    assert g16.dtype == jnp.bfloat16
    # against the float32 formula at the same (rounded) input: bfloat16's output rounding only
    want = jax.grad(lambda x: jnp.sum(reference(x, *rest) ** 2))(x16.astype(jnp.float32))
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(np.asarray(g16, np.float32), want, rtol=0.05, atol=0.02 * scale)


def test_only_the_input_is_saved_for_the_backward_pass():
    x = jnp.ones((64, 32), jnp.float32)
    scale = jnp.ones(32, jnp.float32)

    def saved_shapes(f, *args):
        """The arrays the backward pass keeps: the leaves of the VJP closure (scalars aside)."""
        _, backward = jax.vjp(f, *args)
        return sorted(leaf.shape for leaf in jax.tree.leaves(backward) if leaf.ndim)

    assert saved_shapes(gelu_tanh, x) == [(64, 32)]
    plain_gelu = saved_shapes(lambda x: jax.nn.gelu(x, approximate=True), x)
    assert len(plain_gelu) >= 3  # what the custom VJP avoids
    assert saved_shapes(swiglu, x) == [(64, 32)]
    assert saved_shapes(lambda x: rms_norm(x, scale, EPS), x) == [(32,), (64, 1), (64, 32)]
    assert saved_shapes(lambda x: layer_norm(x, scale, scale, EPS), x) == [
        (32,),
        (64, 1),
        (64, 1),
        (64, 32),
    ]


def test_after_changes_no_value_and_passes_gradients_through():
    anchor = jnp.asarray([[-3.5, 2.0]], jnp.float32)
    x, y = jnp.asarray([1.5, -0.0, 7.0], jnp.bfloat16), jnp.arange(4, dtype=jnp.int32)
    ax, ay = after(anchor, x, y)
    assert (ax.dtype, ay.dtype) == (x.dtype, y.dtype)
    np.testing.assert_array_equal(np.asarray(ax, np.float32), np.asarray(x, np.float32))
    np.testing.assert_array_equal(ay, y)
    dx, da = jax.grad(lambda x, a: jnp.sum(after(a, x)[0] * jnp.arange(3.0)), (0, 1))(
        x.astype(jnp.float32), anchor
    )
    np.testing.assert_array_equal(dx, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(da, jnp.zeros_like(anchor))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU scheduler")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])  # LayerNorm, RMSNorm
def test_norm_backward_work_is_not_kept_alive_across_the_forward_pass(variant, monkeypatch):
    """The norms' backward passes anchor their saved values on the incoming gradient (`after`):
    XLA's CPU scheduler would otherwise form their broadcasts over all tokens during the forward
    pass and keep them until the backward. Measured as the compiled gradient's temporary
    memory. If this fails because both are equal, XLA no longer hoists them and `after` can go."""
    from scaling.model.shape import ModelShape
    from scaling.train.step import init_params, loss_fn

    shape = ModelShape(
        d_model=64, n_layers=2, n_heads=2, vocab_size=61, context=64, variant=variant
    )
    graphdef, params = init_params(shape, 0)
    batch = jax.ShapeDtypeStruct((8, shape.context + 1), jnp.int32)

    def temp_bytes() -> int:
        grad = jax.jit(jax.grad(lambda p, b: loss_fn(p, graphdef, b, 0.0)[0]))
        return grad.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    anchored = temp_bytes()
    monkeypatch.setattr(ops, "after", lambda anchor, *xs: xs)
    assert anchored < 0.96 * temp_bytes()
