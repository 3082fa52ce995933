"""The pure train step: jit-able with donated buffers, and vmap-able over stacked runs."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scaling.model.shape import ModelShape
from scaling.train.config import RunConfig
from scaling.train.optim import make_optimizer
from scaling.train.step import eval_step, init_params, make_train_step, train_step

SHAPE = ModelShape(d_model=32, n_layers=2, n_heads=2, vocab_size=16, context=32)


def setup():
    config = RunConfig.from_dict({"model": SHAPE.to_dict()})
    graphdef, params = init_params(SHAPE, 0)
    tx = make_optimizer(config)
    batch = np.random.default_rng(0).integers(0, 16, (8, 33)).astype(np.int32)
    return graphdef, params, tx, batch


def test_init_is_deterministic_in_the_seed():
    _, a = init_params(SHAPE, 3)
    _, b = init_params(SHAPE, 3)
    _, c = init_params(SHAPE, 4)
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c), strict=True)
    same, differ = True, False
    for x, y, z in leaves:
        same &= bool(np.array_equal(x, y))
        differ |= not np.array_equal(x, z)
    assert same and differ


def test_vmap_over_stacked_runs_equals_separate_steps():
    """K same-shape runs (different inits and learning rates) in one vmapped step."""
    graphdef, params0, tx, batch = setup()
    _, params1 = init_params(SHAPE, 1)
    lrs = jnp.array([1e-3, 3e-2], jnp.float32)
    step = partial(train_step, graphdef, tx=tx)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params0, params1)
    opt = jax.vmap(tx.init)(stacked)
    new, _, metrics = jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0)))(stacked, opt, batch, lrs)
    for k, p in enumerate((params0, params1)):
        single, _, m = jax.jit(step)(p, tx.init(p), batch, lrs[k])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(new), strict=True):
            np.testing.assert_allclose(a, b[k], rtol=2e-5, atol=2e-7)
        np.testing.assert_allclose(m["loss"], metrics["loss"][k], rtol=1e-5)


def test_jitted_step_donates_and_lowers_the_loss():
    graphdef, params, tx, batch = setup()
    step = make_train_step(graphdef, tx)
    opt = tx.init(params)
    first = float(jax.jit(partial(eval_step, graphdef))(params, batch).mean())
    old_leaf = jax.tree.leaves(params)[0]
    for _ in range(20):
        params, opt, metrics = step(params, opt, batch, np.float32(1e-2))
    assert old_leaf.is_deleted()  # params were donated to the step
    last = float(jax.jit(partial(eval_step, graphdef))(params, batch).mean())
    assert last < first - 0.5
    assert np.isfinite(float(metrics["grad_norm"]))
