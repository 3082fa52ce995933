"""`scan_layers`: the blocks as one scan give the unrolled model's values, gradients and
parameters, packed too; taps and performer run the blocks one by one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model.shape import ModelShape
from scaling.train.step import init_params, loss_fn

GPT2 = ModelShape(d_model=32, n_layers=3, n_heads=2, vocab_size=61, context=64)  # blocked attn
CASES = {
    "gpt2": (GPT2, True),
    "llama-bidirectional": (
        ModelShape(d_model=32, n_layers=2, n_heads=4, context=16, variant="llama", qk_norm=True),
        False,
    ),
    "palm-mup-depth": (
        ModelShape(
            d_model=32,
            n_layers=2,
            n_heads=2,
            context=16,
            variant="palm",
            parametrization="mup-depth",
            base_d_model=16,
            base_n_layers=1,
        ),
        True,
    ),
    "local": (
        ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="local", window=4),
        True,
    ),
}


def _batch(shape: ModelShape, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (3, shape.context + 1), 0, shape.vocab_size)


@pytest.mark.parametrize(
    "name",
    [
        "gpt2",
        pytest.param("llama-bidirectional", marks=pytest.mark.slow),
        pytest.param("palm-mup-depth", marks=pytest.mark.slow),
        pytest.param("local", marks=pytest.mark.slow),
    ],
)
def test_scanned_blocks_give_the_unrolled_loss_and_gradients(name: str) -> None:
    shape, causal = CASES[name]
    graphdef, params = init_params(shape, 5)
    scanned, same_params = init_params(shape, 5, scan_layers=True)
    assert graphdef != scanned  # the scan is in the graphdef ...
    assert jax.tree.structure(params) == jax.tree.structure(same_params)  # ... not the state
    jax.tree.map(np.testing.assert_array_equal, params, same_params)
    batch = _batch(shape)

    @jax.jit
    def both(p: nnx.State) -> tuple:
        grad = jax.value_and_grad(loss_fn, has_aux=True)
        return grad(p, graphdef, batch, 1e-3, causal), grad(p, scanned, batch, 1e-3, causal)

    ((objective, ce), grads), ((objective_s, ce_s), grads_s) = both(params)
    np.testing.assert_allclose(objective_s, objective, rtol=1e-6)
    np.testing.assert_allclose(ce_s, ce, rtol=1e-6)
    flat, flat_s = jax.tree.leaves(grads), jax.tree.leaves(grads_s)
    assert len(flat) == len(flat_s) and all(float(jnp.abs(g).max()) > 0 for g in flat)
    for g, g_s in zip(flat, flat_s, strict=True):
        np.testing.assert_allclose(g_s, g, rtol=2e-5, atol=2e-7)


def test_scanned_blocks_under_vmap_and_taps_and_performer() -> None:
    """Packed members keep their own losses; taps and performer run the blocks one by one."""
    graphdef, scanned = init_params(GPT2, 0)[0], init_params(GPT2, 0, scan_layers=True)[0]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(init_params(GPT2, k)[1] for k in (1, 2)))
    batch = _batch(GPT2, 1)
    packed = jax.jit(
        lambda ps: [
            jax.vmap(lambda p, g=g: loss_fn(p, g, batch, 0.0)[1])(ps) for g in (graphdef, scanned)
        ]
    )(stacked)
    np.testing.assert_allclose(packed[1], packed[0], rtol=1e-6)
    assert abs(float(packed[0][0] - packed[0][1])) > 1e-4  # two models, two losses

    performer = ModelShape(d_model=32, n_layers=2, n_heads=2, context=16, variant="performer")

    @jax.jit
    def forwards(p: nnx.State, q: nnx.State) -> tuple:
        taps: dict = {}
        tokens = batch[:, :16]
        tapped = nnx.merge(scanned, p)(batch[:, :-1], taps=taps)
        favor = [nnx.merge(init_params(performer, 0, scan_layers=s)[0], q)(tokens) for s in (0, 1)]
        return taps, tapped, nnx.merge(graphdef, p)(batch[:, :-1]), favor

    taps, tapped, unrolled, favor = forwards(
        jax.tree.map(lambda x: x[0], stacked), init_params(performer, 2)[1]
    )
    assert {f"block.{i}" for i in range(GPT2.n_layers)} <= set(taps)
    np.testing.assert_allclose(tapped, unrolled, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(favor[1], favor[0])


def test_scanned_program_holds_one_block() -> None:
    """The point of the scan: the program has one copy of the block, not n_layers."""
    shape = ModelShape(d_model=32, n_layers=6, n_heads=2, vocab_size=61, context=16)
    batch = _batch(shape)
    params = init_params(shape, 0)[1]

    def dots(scan: bool) -> int:
        graphdef = init_params(shape, 0, scan_layers=scan)[0]
        hlo = jax.jit(lambda p: loss_fn(p, graphdef, batch, 0.0)[0]).lower(params).as_text()
        return hlo.count("dot_general")

    unrolled, scanned = dots(False), dots(True)
    assert scanned < unrolled / 3, (scanned, unrolled)
