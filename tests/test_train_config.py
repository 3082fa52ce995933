"""RunConfig: defaults, TOML/dict round trips, overrides, errors naming field, value, allowed."""

from __future__ import annotations

import itertools
import json

import pytest

from scaling.errors import ConfigError
from scaling.train.config import DEFAULT_STEPS, SCHEDULES, RunConfig, eval_steps, parse_literal


def test_defaults_are_valid_and_canonical_dict_round_trips():
    c = RunConfig()
    d = c.to_dict()
    assert set(d) == {"model", "data", "optim", "train", "eval", "checkpoint", "guards"}
    assert d["data"]["source"] == "builtin:python-stdlib"
    assert c.total_steps == DEFAULT_STEPS
    json.dumps(d)  # JSON-able
    assert RunConfig.from_dict(d) == c
    assert RunConfig.from_dict(json.loads(json.dumps(d))).to_dict() == d


def test_from_toml_fills_defaults_and_coerces(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text(
        "[model]\nd_model = 64\nn_layers = 2\nn_heads = 4\ncontext = 64\n"
        "[optim]\nlr = 1\nschedule = 'wsd'\n[train]\ntokens = 100000\nbatch_size = 8\n"
        "[eval]\nsteps = [1, 5]\n"
    )
    c = RunConfig.from_toml(p)
    assert c.model.d_model == 64 and c.model.vocab_size == 256
    assert isinstance(c.optim.lr, float) and c.optim.lr == 1.0
    assert c.total_steps == -(-100_000 // (8 * 64))  # ceil(tokens / (batch * context))
    assert c.eval.steps == (1, 5)
    assert eval_steps(c) == [1, 5, c.total_steps]


def test_overrides_parse_toml_literals_and_bare_strings():
    c = RunConfig().with_overrides(
        ["optim.lr=3e-3", "train.compute_dtype=bfloat16", "model.qk_norm=true", "eval.steps=[2,4]"]
    )
    assert c.optim.lr == 3e-3
    assert c.train.compute_dtype == "bfloat16"
    assert c.model.qk_norm is True
    assert c.eval.steps == (2, 4)
    assert parse_literal("synthetic:markov?vocab=8") == "synthetic:markov?vocab=8"
    assert parse_literal("none") is None


def test_steps_and_tokens_are_alternatives():
    c = RunConfig().with_overrides(["train.steps=50"])
    assert c.total_steps == 50
    c2 = c.with_overrides(["train.tokens=1000000"])
    assert c2.train.steps is None and c2.total_steps == -(-1_000_000 // c2.tokens_per_step)
    with pytest.raises(ConfigError, match=r"train\.tokens"):
        RunConfig.from_dict({"train": {"steps": 5, "tokens": 100}})


def test_unknown_key_names_it_and_lists_the_allowed_keys():
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides(["optim.learning_rate=1e-3"])
    msg = str(e.value)
    assert "optim.learning_rate" in msg and "optim.lr" in msg and "optim.weight_decay" in msg
    with pytest.raises(ConfigError, match=r"model\.width.*model\.d_model"):
        RunConfig.from_dict({"model": {"width": 3}})
    with pytest.raises(ConfigError, match="sections"):
        RunConfig.from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        RunConfig().with_overrides(["lr=3"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.schedule=cosine", "optim.schedule"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1", "optim.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("train.steps=-3", "train.steps"),
        ("model.d_model=0", "model.d_model"),
        ("model.n_heads=3", "model.n_heads"),
        ("train.compute_dtype=float16", "train.compute_dtype"),
        ("optim.decay_fraction=0", "optim.decay_fraction"),
        ("eval.steps=[0]", "eval.steps"),
        ("guards.spike_factor=1", "guards.spike_factor"),
        ("optim.lr='fast'", "optim.lr"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides([override])
    assert e.value.field == field
    assert "allowed" in str(e.value)


def test_unknown_schedule_lists_the_schedules():
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides(["optim.schedule=cosine"])
    assert all(s in str(e.value) for s in SCHEDULES)


def test_missing_or_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="--config"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(ConfigError, match="TOML"):
        RunConfig.from_toml(bad)


def test_eval_steps_are_log_spaced_and_include_the_last():
    c = RunConfig().with_overrides(["train.steps=1000", "eval.n_evals=10"])
    steps = eval_steps(c)
    assert steps[0] == 1 and steps[-1] == 1000
    assert steps == sorted(set(steps)) and 7 <= len(steps) <= 10
    ratios = [b / a for a, b in itertools.pairwise(steps[3:])]
    assert max(ratios) / min(ratios) < 1.5  # roughly constant ratio: log spacing
    assert eval_steps(c.with_overrides(["eval.n_evals=1"])) == [1000]
