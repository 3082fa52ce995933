"""Schedules' shapes, the weight-decay mask, and the step's AdamW against optax's own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from scaling.model.shape import ModelShape
from scaling.model.transformer import make_model
from scaling.train.config import RunConfig
from scaling.train.optim import (
    clip_by_global_norm,
    decay_mask,
    global_norm,
    lr_at,
    make_optimizer,
)


def cfg(**optim) -> RunConfig:
    return RunConfig.from_dict(
        {"optim": {"lr": 1.0, "min_lr_ratio": 0.1, **optim}, "train": {"steps": 1000}}
    )


def test_warmup_ramps_linearly_to_the_peak():
    c = cfg(schedule="warmup_cosine", warmup_steps=100)
    lrs = [lr_at(c, s) for s in range(100)]
    np.testing.assert_allclose(lrs, (np.arange(100) + 1) / 100)
    assert lr_at(c, 100) == pytest.approx(1.0, abs=1e-3)
    assert (
        c.with_overrides(["optim.warmup_steps=none", "optim.warmup_fraction=0.1"]).warmup_steps
        == 100
    )


def test_cosine_ends_at_min_lr_ratio_and_is_monotone():
    c = cfg(schedule="warmup_cosine", warmup_steps=10)
    lrs = np.array([lr_at(c, s) for s in range(10, 1000)])
    assert np.all(np.diff(lrs) <= 1e-12)
    assert lrs[-1] == pytest.approx(0.1)
    mid = lr_at(c, 10 + (1000 - 10) // 2)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5, abs=0.01)  # halfway down the cosine


def test_linear_and_constant():
    lin = cfg(schedule="warmup_linear", warmup_steps=0)
    assert lr_at(lin, 999) == pytest.approx(0.1)
    assert lr_at(lin, 499) == pytest.approx(0.55, abs=1e-3)
    const = cfg(schedule="constant", warmup_steps=5)
    assert [lr_at(const, s) for s in (5, 500, 999)] == [1.0, 1.0, 1.0]


def test_wsd_is_stable_then_decays_over_the_decay_fraction():
    c = cfg(schedule="wsd", warmup_steps=50, decay_fraction=0.2)
    lrs = np.array([lr_at(c, s) for s in range(1000)])
    assert np.all(lrs[50:800] == 1.0)  # stable until the last 20%
    assert lrs[800] < 1.0 and np.all(np.diff(lrs[800:]) < 0)
    assert lrs[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(np.diff(lrs[800:]), -0.9 / 200)  # a linear decay


def paths_and_mask(shape: ModelShape) -> dict[str, bool]:
    _, params = nnx.split(nnx.eval_shape(lambda: make_model(shape, 0)), nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    out = {}
    for path, v in flat:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        out["/".join(n for n in names if n not in (".value", "value"))] = bool(v)
    return out


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_weight_decay_mask_excludes_norms_biases_and_embeddings(variant):
    shape = ModelShape(
        d_model=32,
        n_layers=2,
        n_heads=2,
        context=16,
        variant=variant,
        tied_embeddings=False,
        qk_norm=True,
    )
    mask = paths_and_mask(shape)
    decayed = {p for p, v in mask.items() if v}
    kept = set(mask) - decayed
    assert any("embed" in p for p in kept) and not any("embed" in p for p in decayed)
    assert all("norm" not in p for p in decayed)
    assert any("norm" in p for p in kept)
    if variant == "gpt2":
        assert any(p.endswith(("b_qkv", "bias", "b_out", "b_in")) for p in kept)
    # every decayed leaf is a projection matrix of attention or MLP, or the untied head
    assert decayed and all(p.split("/")[-1].startswith("w_") or p == "head" for p in decayed)
    assert "head" in decayed
    assert sum("w_" in p for p in decayed) == sum("w_" in p for p in mask)


def test_gradient_clipping_bounds_the_global_norm():
    """With eps=1 Adam's first update is g / (|g| + 1): about g itself once g is clipped."""
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)

    def first_update(clip: float) -> float:
        c = RunConfig.from_dict({"optim": {"grad_clip": clip, "eps": 1.0, "weight_decay": 0.0}})
        tx = make_optimizer(c)
        updates, _ = tx.update(grads, tx.init(params), params)
        return float(optax.tree.norm(updates))

    assert first_update(1e-3) == pytest.approx(1e-3, rel=1e-2)
    assert first_update(0.0) == pytest.approx(10 / 11 * 4, rel=1e-4)  # 16 entries of 10/11


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_by_global_norm_is_optax_s_in_one_reduction(max_norm: float):
    """`global_norm` (one reduction over all leaves, in float32) is the exact norm and optax's
    leaf-by-leaf one (which sums a bfloat16 leaf in bfloat16); the clip built on it gives
    optax.clip_by_global_norm's updates, clipped or not; its state is optax's (EmptyState), so
    checkpoints carry over."""
    keys = jax.random.split(jax.random.key(0), 3)
    tree = {
        "w": jax.random.normal(keys[0], (33, 7)),
        "b": {"x": jax.random.normal(keys[1], (5,)).astype(jnp.bfloat16)},
        "s": jax.random.normal(keys[2], ()),
    }
    exact = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree)))
    assert float(global_norm(tree)) == pytest.approx(exact, rel=1e-6)  # bfloat16 leaf in f32
    assert float(global_norm(tree)) == pytest.approx(float(optax.tree.norm(tree)), rel=1e-4)
    assert jax.jit(global_norm).lower(tree).as_text().count("stablehlo.reduce") == 1  # not 3
    ours, theirs = clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    assert ours.init(tree) == theirs.init(tree) == optax.EmptyState()
    got, _ = ours.update(tree, ours.init(tree))
    want, _ = theirs.update(tree, theirs.init(tree))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32),
            np.asarray(b, np.float32),
            rtol=1e-2 if a.dtype == jnp.bfloat16 else 1e-5,
        )
    clipped = float(global_norm(got))
    assert clipped == pytest.approx(min(max_norm, float(global_norm(tree))), rel=1e-2)
