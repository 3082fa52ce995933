"""The pure train step: AdamW at the given rate, jit-able with donated buffers, vmap-able over
stacked runs. One tiny shape and optimizer throughout, so compilations are shared."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling.model.shape import ModelShape
from scaling.train.config import RunConfig
from scaling.train.optim import decay_mask, make_optimizer
from scaling.train.step import eval_step, init_params, loss_fn, make_train_step, train_step

SHAPE = ModelShape(d_model=32, n_layers=2, n_heads=2, vocab_size=16, context=32)
CONFIG = RunConfig.from_dict(
    {"model": SHAPE.to_dict(), "optim": {"grad_clip": 0.0, "weight_decay": 0.3}}
)


@pytest.fixture(scope="module")
def setup():
    graphdef, params = init_params(SHAPE, 0)
    tx = make_optimizer(CONFIG)
    batch = np.random.default_rng(0).integers(0, 16, (8, 33)).astype(np.int32)
    step = jax.jit(partial(train_step, graphdef, tx=tx))
    return graphdef, params, tx, batch, step


def test_init_is_deterministic_in_the_seed():
    _, a = init_params(SHAPE, 3)
    _, b = init_params(SHAPE, 3)
    _, c = init_params(SHAPE, 4)
    same, differ = True, False
    for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c), strict=True):
        same &= bool(np.array_equal(x, y))
        differ |= not np.array_equal(x, z)
    assert same and differ


def test_step_is_adamw_at_the_given_learning_rate(setup):
    """lr * (unit-rate AdamW update) equals optax.adamw at rate lr, weight decay included."""
    graphdef, params, tx, batch, step = setup
    lr = 0.05
    new, _, metrics = step(params, tx.init(params), batch, jnp.float32(lr))
    o = CONFIG.optim
    ref_tx = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=0.3, mask=decay_mask)

    @jax.jit
    def reference(params):
        grads, ce = jax.grad(loss_fn, has_aux=True)(params, graphdef, batch, 0.0)
        updates, _ = ref_tx.update(grads, ref_tx.init(params), params)
        return optax.apply_updates(params, updates), ce

    expected, ce = reference(params)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(metrics["loss"]) == pytest.approx(float(ce))
    assert float(metrics["loss"]) == pytest.approx(math.log(16), abs=0.1)  # near-uniform init


def test_vmap_over_stacked_runs_equals_separate_steps(setup):
    """K same-shape runs (different inits and learning rates) in one vmapped step."""
    graphdef, params0, tx, batch, step = setup
    _, params1 = init_params(SHAPE, 1)
    lrs = jnp.array([1e-3, 3e-2], jnp.float32)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params0, params1)
    opt = jax.vmap(tx.init)(stacked)
    vstep = jax.vmap(partial(train_step, graphdef, tx=tx), in_axes=(0, 0, None, 0))
    new, _, metrics = jax.jit(vstep)(stacked, opt, batch, lrs)
    for k, p in enumerate((params0, params1)):
        single, _, m = step(p, tx.init(p), batch, lrs[k])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(new), strict=True):
            np.testing.assert_allclose(a, b[k], rtol=2e-5, atol=2e-7)
        np.testing.assert_allclose(m["loss"], metrics["loss"][k], rtol=1e-5)


def test_jitted_step_donates_and_lowers_the_loss(setup):
    graphdef, _, tx, batch, _ = setup
    _, params = init_params(SHAPE, 0)
    donating = make_train_step(graphdef, tx)
    opt = tx.init(params)
    evaluate = jax.jit(partial(eval_step, graphdef))
    first = float(evaluate(params, batch).mean())
    old_leaf = jax.tree.leaves(params)[0]
    for _ in range(15):
        params, opt, metrics = donating(params, opt, batch, np.float32(1e-2))
    assert old_leaf.is_deleted()  # params were donated to the step
    assert float(evaluate(params, batch).mean()) < first - 0.5
    assert np.isfinite(float(metrics["grad_norm"]))
