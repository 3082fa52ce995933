"""Designs and plans: deterministic run ids, axes crossed with the design, whole-step token
counts, WSD segments and branches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaling import flops
from scaling.cli.main import main
from scaling.errors import ConfigError
from scaling.sweep.designs import plan, run_id_for
from scaling.sweep.spec import load_spec, parse_spec

BASE = {
    "model": {"n_heads": 2, "context": 16, "vocab_size": 64},
    "train": {"batch_size": 4},
}
SHAPES = [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 2}]


def grid(**design):
    return {"base": BASE, "design": {"kind": "grid", "shapes": SHAPES, **design}}


def test_plan_is_deterministic_and_ids_are_unique():
    raw = {
        **grid(tokens=[1280, 2560]),
        "axes": {"optim.lr": [1e-3, 3e-3], "train.init_seed": [0, 1]},
    }
    a, b = plan(parse_spec(raw)), plan(parse_spec(raw))
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == len(a) == 2 * 2 * 2 * 2
    assert all(len(r.run_id) == 12 and int(r.run_id, 16) >= 0 for r in a)
    # design points outer, axes inner: the first four runs share a shape and a length
    assert {(r.shape.d_model, r.tokens) for r in a[:4]} == {(16, 1280)}
    assert {(r.config.optim.lr, r.config.train.init_seed) for r in a[:4]} == {
        (1e-3, 0),
        (1e-3, 1),
        (3e-3, 0),
        (3e-3, 1),
    }


def test_run_id_changes_with_the_result_not_with_checkpoint_cadence():
    run = plan(parse_spec(grid(tokens=[1280])))[0]
    d = run.config.to_dict()
    from scaling.train.config import RunConfig

    d["checkpoint"]["every_steps"] = 7
    assert run_id_for(RunConfig.from_dict(d)) == run.run_id
    d["optim"]["lr"] = 0.123
    assert run_id_for(RunConfig.from_dict(d)) != run.run_id


def test_tokens_are_whole_steps_and_tokens_per_param_uses_the_count():
    runs = plan(parse_spec(grid(tokens=[1300])))
    assert {r.config.total_steps for r in runs} == {20}  # round(1300 / (4 * 16))
    runs = plan(parse_spec(grid(tokens_per_param=[2.0])))
    for r in runs:
        n = flops.param_counts(r.shape).N_nonembedding
        assert abs(r.tokens - 2.0 * n) <= r.config.tokens_per_step / 2


def test_variant_axis_changes_the_model():
    raw = {**grid(tokens=[1280]), "axes": {"model.variant": ["gpt2", "llama"]}}
    runs = plan(parse_spec(raw))
    assert [r.shape.variant for r in runs] == ["gpt2", "llama", "gpt2", "llama"]


def test_wsd_segments_and_branches():
    raw = {**grid(tokens=[6400]), "wsd": {"cooldown_fraction": 0.2, "branch_fractions": [0.5, 1.0]}}
    runs = plan(parse_spec(raw))  # 100 steps per design run: branches of 50 and 100 steps
    by_id = {r.run_id: r for r in runs}
    for d_model in (16, 32):
        mine = [r for r in runs if r.shape.d_model == d_model]
        stable = [r for r in mine if r.point["wsd"] == "stable"]
        cool = [r for r in mine if r.point["wsd"] == "cooldown"]
        assert [s.config.total_steps for s in stable] == [40, 80]
        assert [c.config.total_steps for c in cool] == [50, 100]
        assert stable[0].point["init_from"] is None
        assert stable[1].point["init_from"] == stable[0].run_id
        for c, s in zip(cool, stable, strict=True):
            assert c.point["init_from"] == s.run_id and c.point["branch_step"] == 40 * (
                c.config.total_steps // 50
            )
            assert c.config.optim.schedule == "wsd" and c.config.optim.decay_fraction == 0.2
        warmups = {r.config.warmup_steps for r in mine}
        assert warmups == {5}  # one explicit warmup (5% of the longest run) for all
        assert all(s.config.optim.schedule == "constant" for s in stable)
    # every run comes after the run it starts from
    order = [r.run_id for r in runs]
    for r in runs:
        if r.point["init_from"]:
            assert order.index(r.point["init_from"]) < order.index(r.run_id)
            assert r.point["init_from"] in by_id


REPO = Path(__file__).resolve().parent.parent


def test_dry_run_of_isoflop_cpu_hits_each_budget_within_5_percent(tmp_path, capsys):
    out = tmp_path / "never"
    assert (
        main(
            ["sweep", "run", str(REPO / "sweeps/isoflop_cpu.toml"), "--dry-run", "--out", str(out)]
        )
        == 0
    )
    assert not out.exists()  # a dry run writes nothing
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    rows = [line.split() for line in lines[1:] if re.fullmatch(r"[0-9a-f]{12} .*", line)]
    assert len(rows) >= 12
    budget_col, achieved_col = header.index("budget") + 3, header.index("achieved") + 3
    budgets = set()
    for row in rows:  # the shape column is 4 words ("gpt2 d32 L4 H1")
        budgets.add(float(row[budget_col]))
        assert abs(float(row[achieved_col]) - 1) <= 0.05, row
    assert len(budgets) >= 3
    spec = load_spec(REPO / "sweeps/isoflop_cpu.toml")
    for run in plan(spec):  # exact, from the plan itself
        achieved = flops.training_flops(run.shape, run.tokens, spec.convention)
        assert abs(achieved / run.point["budget"] - 1) <= 0.5 / run.config.total_steps <= 0.05


def test_isoflop_sizes_bracket_the_prior_optimum_and_grow():
    raw = {
        "base": {"model": {"context": 64, "vocab_size": 64}, "train": {"batch_size": 16}},
        "design": {
            "kind": "isoflop",
            "budgets": [3e11, 1e12],
            "sizes_per_budget": 4,
            "spread": 3.0,
        },
    }
    runs = plan(parse_spec(raw))
    for budget in (3e11, 1e12):
        mine = [r for r in runs if r.point["budget"] == budget]
        n = [flops.param_counts(r.shape).N_nonembedding for r in mine]
        n_opt = mine[0].point["N_opt_prior"]
        assert len(mine) == 4 and n == sorted(n) and n[0] < n_opt < n[-1]
        assert n[-1] / n[0] == pytest.approx(9.0, rel=0.3)  # x/÷ 3 around the optimum
        # the prior: at N_opt, C / FLOPs-per-token is 20 N (Chinchilla's rule)
        tokens = [flops.tokens_for_flops(r.shape, budget, "attention") for r in mine]
        ratios = [t / m for t, m in zip(tokens, n, strict=True)]
        assert ratios[0] > 20 > ratios[-1]


def test_budget_too_small_names_the_smallest_budget_that_works():
    raw = {
        "base": {"model": {"context": 64, "vocab_size": 64}, "train": {"batch_size": 16}},
        "design": {"kind": "isoflop", "budgets": [1e8, 1e12], "sizes_per_budget": 3},
    }
    with pytest.raises(ConfigError) as e:
        plan(parse_spec(raw))
    assert e.value.field == "design.budgets" and e.value.value == 1e8
    smallest = float(re.search(r"at least about ([0-9.e+]+) FLOPs", e.value.allowed).group(1))
    assert 1e8 < smallest < 1e12
    raw["design"]["budgets"] = [smallest * 1.001]
    assert len(plan(parse_spec(raw))) == 3  # that budget plans


@pytest.mark.parametrize("name", ["tiny", "isoflop_cpu", "chinchilla_gpu"])
def test_shipped_sweeps_plan_and_say_what_they_measure_and_take(name):
    path = REPO / "sweeps" / f"{name}.toml"
    header = path.read_text().split("\n\n")[0]
    assert "Measures:" in header and "Takes:" in header
    runs = plan(load_spec(path))
    assert len(runs) >= 6 and len({r.run_id for r in runs}) == len(runs)


def test_wsd_refuses_an_axis_it_sets():
    raw = {**grid(tokens=[6400]), "wsd": {}, "axes": {"optim.schedule": ["constant", "wsd"]}}
    with pytest.raises(ConfigError) as e:
        plan(parse_spec(raw))
    assert e.value.field == "axes.optim.schedule"
