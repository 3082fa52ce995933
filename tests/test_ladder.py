"""Ladders: target N_nonembedding -> shape, within 10%, increasing, with clear refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scaling import flops
from scaling.errors import ConfigError
from scaling.model.ladder import RECIPES, geometric_ladder, shape_for_params


def _n(shape) -> int:
    return flops.param_counts(shape).N_nonembedding


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.parametrize("recipe", ["default", "narrow-heads"])
def test_targets_1e4_to_1e10_within_10_percent_and_increasing(variant: str, recipe: str) -> None:
    sizes = []
    for target in np.geomspace(1e4, 1e10, 31):  # 5 per decade
        shape = shape_for_params(target, variant=variant, recipe=recipe)
        n = _n(shape)
        assert abs(n / target - 1) <= 0.10, (target, shape)
        assert shape.variant == variant
        if shape.d_model >= RECIPES[recipe]["head_dim"]:
            assert shape.head_dim == RECIPES[recipe]["head_dim"]
        sizes.append(n)
    assert all(b > a for a, b in itertools.pairwise(sizes))


def test_head_dim_aspect_and_shape_options_are_used() -> None:
    shape = shape_for_params(
        5e7, variant="llama", head_dim=128, aspect=32, vocab_size=1000, context=64, qk_norm=True
    )
    assert shape.head_dim == 128 and shape.d_model % 128 == 0
    assert (shape.vocab_size, shape.context, shape.qk_norm) == (1000, 64, True)
    assert 16 <= shape.d_model / shape.n_layers <= 64
    wide = shape_for_params(5e7, variant="llama", head_dim=128, aspect=256)
    assert wide.d_model / wide.n_layers > shape.d_model / shape.n_layers


def test_nearest_shape_is_returned_when_target_is_a_shape() -> None:
    exact = shape_for_params(1e6)
    assert shape_for_params(_n(exact)) == exact


def test_target_below_smallest_model_names_field_value_and_minimum() -> None:
    with pytest.raises(ConfigError) as err:
        shape_for_params(1000)
    assert err.value.field == "params"
    assert err.value.value == 1000
    assert "smallest" in err.value.allowed and ">=" in err.value.allowed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_nonembedding": -5}, "params"),
        ({"target_nonembedding": float("nan")}, "params"),
        ({"target_nonembedding": 1e6, "variant": "bert"}, "variant"),
        ({"target_nonembedding": 1e6, "recipe": "huge"}, "recipe"),
        ({"target_nonembedding": 1e6, "head_dim": 0}, "head_dim"),
        ({"target_nonembedding": 1e6, "aspect": -1.0}, "aspect"),
        ({"target_nonembedding": 1e6, "variant": "llama", "head_dim": 33}, "head_dim"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        shape_for_params(**kwargs)
    assert err.value.field == field


def test_geometric_ladder_spacing_and_errors() -> None:
    shapes = geometric_ladder(1e5, 1e8, 7, variant="llama")
    sizes = [_n(s) for s in shapes]
    assert len(shapes) == 7
    targets = np.geomspace(1e5, 1e8, 7)
    assert all(abs(n / t - 1) <= 0.10 for n, t in zip(sizes, targets, strict=True))
    assert all(b > a for a, b in itertools.pairwise(sizes))
    assert [_n(s) for s in geometric_ladder(1e6, 1e6, 1)] == [_n(shape_for_params(1e6))]
    with pytest.raises(ConfigError) as err:
        geometric_ladder(1e6, 1.01e6, 20)
    assert err.value.field == "k"
    with pytest.raises(ConfigError) as err:
        geometric_ladder(1e7, 1e6, 3)
    assert err.value.field == "n_max"
