"""Parameterizations: mup / mup-depth at their base shape are sp exactly; the multipliers away
from it (init scales, forward multipliers, Adam learning rates); config fields and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.errors import ConfigError
from scaling.model.parametrization import TABLE, lr_multiplier, multiplier, role
from scaling.model.shape import ModelShape
from scaling.model.transformer import make_model
from scaling.train.config import OptimConfig, RunConfig
from scaling.train.optim import lr_multipliers, make_optimizer
from scaling.train.step import make_train_step

TINY = {"n_heads": 2, "vocab_size": 32, "context": 16}


def _leaves(params):
    return jax.tree_util.tree_flatten_with_path(params)[0]


def _losses(shape: ModelShape, steps: int = 2) -> list[float]:
    config = RunConfig(model=shape, optim=OptimConfig(lr=1e-2, warmup_steps=0))
    graphdef, params = nnx.split(make_model(shape, 7), nnx.Param)
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    step = make_train_step(graphdef, tx)
    tokens = jax.random.randint(jax.random.key(3), (4, shape.context + 1), 0, shape.vocab_size)
    out = []
    for _ in range(steps):
        params, opt_state, m = step(params, opt_state, tokens, np.float32(1e-2))
        out.append(float(m["loss"]))
    return out


@pytest.mark.parametrize(
    ("parametrization", "extra"),
    [
        ("mup", {"variant": "gpt2"}),
        ("mup-depth", {"variant": "llama", "tied_embeddings": False, "qk_norm": True}),
    ],
)
def test_mup_at_its_base_shape_is_sp(parametrization, extra):
    """Same parameters for the same seed (bit for bit) and the same first losses."""
    sp = ModelShape(d_model=32, n_layers=2, **TINY, **extra)
    mu = sp.replace(parametrization=parametrization, base_d_model=32, base_n_layers=2)
    _, ps = nnx.split(make_model(sp, 7), nnx.Param)
    _, pm = nnx.split(make_model(mu, 7), nnx.Param)
    for (path, a), (_, b) in zip(_leaves(ps), _leaves(pm), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)
    assert _losses(sp) == _losses(mu)


@pytest.mark.slow  # ~15 s of eager forwards; gpt2 and llama above cover the shared code
@pytest.mark.parametrize(
    "extra", [{"variant": "palm"}, {"variant": "performer"}, {"variant": "local", "window": 4}]
)
def test_the_other_variants_at_their_base_shape_compute_the_sp_logits(extra):
    sp = ModelShape(d_model=16, n_layers=1, **TINY, **extra)
    mu = sp.replace(parametrization="mup-depth", base_d_model=16, base_n_layers=1)
    tokens = jnp.arange(TINY["context"], dtype=jnp.int32)[None] % TINY["vocab_size"]
    a, b = make_model(sp, 3)(tokens), make_model(mu, 3)(tokens)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_every_multiplier_is_exactly_one_at_the_base_and_under_sp():
    at_base = ModelShape(
        d_model=64,
        n_layers=3,
        **TINY,
        parametrization="mup-depth",
        base_d_model=64,
        base_n_layers=3,
    )
    wide_sp = ModelShape(d_model=256, n_layers=6, **TINY, base_d_model=64, base_n_layers=3)
    for shape in (at_base, wide_sp):
        for rule in TABLE:
            assert multiplier(shape, rule.quantity, "d_ff") == 1.0, rule.quantity


def test_multipliers_away_from_the_base():
    shape = ModelShape(
        d_model=128,
        n_layers=8,
        n_heads=4,
        vocab_size=32,
        context=16,
        parametrization="mup-depth",
        base_d_model=32,
        base_n_layers=2,
    )  # width x4, depth x4, head_dim x4 (heads fixed)
    assert multiplier(shape, "hidden.init_std") == pytest.approx(0.5)
    assert multiplier(shape, "hidden.adam_lr", "d_ff") == pytest.approx(0.25)
    assert multiplier(shape, "readout.forward") == pytest.approx(0.25)
    assert multiplier(shape, "attention.logit_scale") == pytest.approx(0.5)
    assert multiplier(shape, "branch.forward") == pytest.approx(0.5)
    assert multiplier(shape, "block.adam_lr") == pytest.approx(0.5)
    assert multiplier(shape, "embedding.adam_lr") == 1.0
    mup = shape.replace(parametrization="mup")  # no depth rules
    assert multiplier(mup, "branch.forward") == 1.0
    assert multiplier(mup, "block.adam_lr") == 1.0
    assert multiplier(mup, "readout.forward") == pytest.approx(0.25)


def test_roles_and_learning_rate_multipliers_of_every_parameter():
    shape = ModelShape(
        d_model=128,
        n_layers=4,
        n_heads=4,
        vocab_size=32,
        context=16,
        tied_embeddings=False,
        parametrization="mup-depth",
        base_d_model=32,
        base_n_layers=1,
    )
    _, params = nnx.split(nnx.eval_shape(lambda: make_model(shape, 0)), nnx.Param)  # abstract
    mults = lr_multipliers(RunConfig(model=shape), params)
    seen = set()
    for path, m in _leaves(mults):
        name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path[:-1])
        kind, _ = role(name)
        seen.add(kind)
        depth = 0.5 if name.startswith("blocks/") else 1.0  # sqrt(1/4)
        width = 0.25 if kind == "hidden" else 1.0
        assert m == pytest.approx(width * depth), name
        assert m == pytest.approx(lr_multiplier(shape, name))
    assert seen == {"embedding", "hidden", "readout", "vector"}


def test_adam_step_sizes_follow_the_learning_rate_multipliers():
    """Adam's first update is lr x mult x sign(grad): hidden matrices move lr/4 at 4x width,
    embeddings lr (no clipping, no weight decay, eps negligible)."""
    shape = ModelShape(
        d_model=64,
        n_layers=1,
        n_heads=2,
        vocab_size=32,
        context=8,
        parametrization="mup",
        base_d_model=16,
    )
    config = RunConfig(
        model=shape, optim=OptimConfig(lr=1e-2, grad_clip=0.0, weight_decay=0.0, eps=1e-30)
    )
    graphdef, params = nnx.split(make_model(shape, 0), nnx.Param)
    before = jax.tree.map(np.asarray, params)
    tx = make_optimizer(config)
    step = make_train_step(graphdef, tx)
    tokens = jax.random.randint(jax.random.key(1), (4, 9), 0, 32)
    after, _, _ = step(params, tx.init(params), tokens, np.float32(1e-2))
    moved = {
        jax.tree_util.keystr(p): np.abs(np.asarray(a) - b)
        for (p, a), (_, b) in zip(_leaves(after), _leaves(before), strict=True)
    }
    qkv = next(v for k, v in moved.items() if "w_qkv" in k)
    emb = next(v for k, v in moved.items() if k.startswith("['embed']"))
    assert np.max(qkv) == pytest.approx(1e-2 / 4, rel=1e-3)
    assert np.max(emb) == pytest.approx(1e-2, rel=1e-3)


def test_init_scales_and_forward_multipliers_of_a_wide_model():
    base = {"n_heads": 4, "vocab_size": 64, "context": 16, "base_d_model": 16}
    model = make_model(ModelShape(d_model=256, n_layers=2, parametrization="mup", **base), 0)
    sp = make_model(ModelShape(d_model=256, n_layers=2, **base), 0)  # width x16
    std = lambda x: float(jnp.std(x[...]))  # noqa: E731
    assert std(model.blocks[0].attn.w_qkv) == pytest.approx(0.02 / 4, rel=0.02)
    assert std(sp.blocks[0].attn.w_qkv) == pytest.approx(0.02, rel=0.02)
    assert std(model.blocks[0].mlp.w_out) == pytest.approx(0.02 / 2 / 4, rel=0.02)
    assert std(model.embed) == pytest.approx(0.02, rel=0.02)
    assert model.logit_mult == pytest.approx(1 / 16)
    assert model.blocks[0].attn.logit_mult == pytest.approx(0.25)  # sqrt(4/64)
    tokens = jnp.arange(16, dtype=jnp.int32)[None]
    scaled = model(tokens)
    model.logit_mult = 1.0
    np.testing.assert_allclose(np.asarray(scaled) * 16, np.asarray(model(tokens)), rtol=1e-5)


def test_depth_branch_multiplier_and_output_init():
    shape = ModelShape(
        d_model=32,
        n_layers=8,
        **TINY,
        parametrization="mup-depth",
        base_d_model=32,
        base_n_layers=2,
    )
    model = make_model(shape, 0)
    assert model.blocks[3].branch_mult == pytest.approx(0.5)
    # GPT-2's 0.02/sqrt(2 n_layers) frozen at the base depth: 0.02/sqrt(4)
    assert float(jnp.std(model.blocks[0].mlp.w_out[...])) == pytest.approx(0.01, rel=0.05)


def test_config_fields_default_to_sp_and_leave_run_ids_unchanged():
    d = RunConfig().to_dict()
    assert "parametrization" not in d["model"] and "base_d_model" not in d["model"]
    shape = ModelShape(d_model=64, n_layers=2, n_heads=4, parametrization="mup", base_d_model=32)
    md = shape.to_dict()
    assert md["parametrization"] == "mup" and md["base_d_model"] == 32
    assert ModelShape.from_dict(md) == shape
    cfg = RunConfig().with_overrides(["model.parametrization=mup", "model.base_d_model=64"])
    assert cfg.model.parametrization == "mup"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"parametrization": "mup2"}, "parametrization"),
        ({"parametrization": "mup"}, "base_d_model"),
        ({"parametrization": "mup-depth", "base_d_model": 32}, "base_n_layers"),
        ({"parametrization": "mup", "base_d_model": 30}, "base_d_model"),
        ({"base_n_layers": 0}, "base_n_layers"),
    ],
)
def test_bad_parametrization_fields_are_config_errors(changes, field):
    with pytest.raises(ConfigError) as e:
        ModelShape(d_model=64, n_layers=2, n_heads=4, **changes)
    assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"model": {"d_model": 64, "n_layers": 2, "n_heads": 4, **changes}})
    assert e.value.field == "model." + field
