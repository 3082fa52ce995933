"""Bad sweep files: one ConfigError naming the key and what is allowed; the CLI prints one line,
exits non-zero and writes nothing."""

from __future__ import annotations

import pytest
from tiny import ONE_SHAPE, fake_grid

from scaling.cli.main import main
from scaling.errors import ConfigError
from scaling.sweep.designs import plan
from scaling.sweep.spec import load_spec

GOOD = fake_grid(1280, shapes=ONE_SHAPE)


def spec_file(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def load_and_plan(path):
    return plan(load_spec(path))


BAD = [
    # (replace this, with that, the key the error must name, a word of what is allowed)
    ("[base.model]", "colour = 3\n[base.model]", "colour", "design"),
    ('kind = "grid"', 'kind = "gird"', "design.kind", "isoflop"),
    ("tokens = [1280]", "tokens = [1280]\nbudget = [1e9]", "design.budget", "tokens_per_param"),
    ("tokens = [1280]", "tokens = [0]", "design.tokens", "positive"),
    ("tokens = [1280]", "tokens = [-5]", "design.tokens", "positive"),
    ("tokens = [1280]", "tokens = [64]", "design.tokens", "at least 640"),
    ('"optim.lr" = [1e-3, 3e-3]', '"optim.lr" = []', "axes.optim.lr", "non-empty"),
    ('"optim.lr" = [1e-3, 3e-3]', '"optim.lrr" = [1e-3]', "axes.optim.lrr", "optim.lr"),
    ('"optim.lr" = [1e-3, 3e-3]', '"optim.lr" = [1e-3, -1.0]', "axes.optim.lr", "positive"),
    ('"optim.lr" = [1e-3, 3e-3]', '"model.d_model" = [8]', "axes.model.d_model", "design"),
    ("batch_size = 4", "batch_size = 4\nsteps = 10", "base.train.steps", "design"),
    ("batch_size = 4", "batch_sise = 4", "base.train.batch_sise", "train.batch_size"),
    ("[base.train]", "[base.optimizer]", "base.optimizer", "optim"),
    ("[base.model]", 'convention = "flops"\n[base.model]', "convention", "attention"),
    ("[design]", "[wsd]\ncooldown = 0.2\n[design]", "wsd.cooldown", "cooldown_fraction"),
]


@pytest.mark.parametrize(("old", "new", "key", "allowed"), BAD)
def test_bad_sweep_file_names_the_key_and_what_is_allowed(tmp_path, old, new, key, allowed):
    assert old in GOOD
    path = spec_file(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_and_plan(path)
    assert e.value.field == key
    assert allowed in e.value.allowed
    assert "\n" not in str(e.value)


def test_a_table_that_is_no_key_of_a_sweep_file_is_named_with_the_file(tmp_path):
    path = spec_file(tmp_path, '[sweep]\nname = "x"\n' + GOOD)
    with pytest.raises(ConfigError) as e:
        load_spec(path)
    assert e.value.field == "sweep"
    assert str(e.value).startswith(f"{path}: sweep = ")
    assert "no key 'sweep' here; known: name, description" in str(e.value)


def test_good_sweep_file_plans(tmp_path):
    runs = load_and_plan(spec_file(tmp_path, GOOD))
    assert len(runs) == 2
    assert [r.config.optim.lr for r in runs] == [1e-3, 3e-3]


@pytest.mark.parametrize(("old", "new"), [(o, n) for o, n, _k, _a in BAD[:8]])
def test_cli_bad_sweep_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, old, new):
    path = spec_file(tmp_path, GOOD.replace(old, new, 1))
    out = tmp_path / "out"
    assert main(["sweep", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scaling sweep: error:")
    assert not out.exists()


def test_missing_and_non_toml_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="existing TOML file"):
        load_spec(tmp_path / "nope.toml")
    p = tmp_path / "x.toml"
    p.write_text("[design\nkind=")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_spec(p)


ISOFLOP = """
[base.model]
context = 64
vocab_size = 64
[base.train]
batch_size = 16
[design]
kind = "isoflop"
budgets = [%s, 1e12]
"""


@pytest.mark.parametrize(
    ("budget", "allowed"),
    [("0", "each entry > 0"), ("-1e12", "each entry > 0"), ("1e8", "at least about")],
)
def test_cli_bad_isoflop_budget(tmp_path, capsys, budget, allowed):
    path = spec_file(tmp_path, ISOFLOP % budget)
    out = tmp_path / "out"
    assert main(["sweep", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "design.budgets" in err and allowed in err
    assert not out.exists()


def test_axes_as_nested_tables_and_ladder_options_are_checked(tmp_path):
    nested = GOOD.replace('"optim.lr" = [1e-3, 3e-3]', "[axes.optim]\nlr = [1e-3, 3e-3]")
    assert [r.config.optim.lr for r in load_and_plan(spec_file(tmp_path, nested))] == [1e-3, 3e-3]
    ladder = ISOFLOP % "3e11" + "[design.ladder]\nhead_dims = 16\n"
    with pytest.raises(ConfigError) as e:
        load_and_plan(spec_file(tmp_path, ladder))
    assert e.value.field == "design.ladder.head_dims" and "head_dim" in e.value.allowed
    bad_value = ISOFLOP % "3e11" + '[design.ladder]\nrecipe = "tall"\n'
    with pytest.raises(ConfigError) as e:
        load_and_plan(spec_file(tmp_path, bad_value))
    assert e.value.field == "design.ladder.recipe" and "default" in e.value.allowed
