"""Defaulted config fields (train.objective, model.window, model.n_features) are sweep axes, and
an mlm IsoFLOP budget (and the C columns of its results) counts bidirectional attention."""

from __future__ import annotations

import pytest
from sweep_fake_train import fake_train

from scaling import flops
from scaling.errors import ConfigError
from scaling.sweep.designs import plan
from scaling.sweep.results import load_results
from scaling.sweep.runner import prepare_sweep_dir
from scaling.sweep.spec import parse_spec

BASE = {
    "model": {"n_heads": 2, "context": 16, "vocab_size": 64},
    "train": {"batch_size": 4},
}
SHAPES = [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 2}]
GRID = {"kind": "grid", "shapes": SHAPES, "tokens": [1280]}
ISOFLOP = {
    "kind": "isoflop",
    "budgets": [3e11],
    "sizes_per_budget": 3,
    "spread": 2.0,
    "prior_coefficient": 1.0,  # the same sizes for both objectives
    "prior_exponent": 0.4,
}

CAUSAL_AND_MLM_ISOFLOP = {  # the same budget planned for both objectives
    "base": {"model": {"context": 64, "vocab_size": 64}, "train": {"batch_size": 16}},
    "design": ISOFLOP,
    "axes": {"train.objective": ["causal", "mlm"]},
    "convention": "attention",
}


@pytest.mark.parametrize(
    ("key", "values", "read"),
    [
        ("train.objective", ["causal", "mlm", "span"], lambda r: r.config.train.objective),
        ("model.window", [4, 8], lambda r: r.shape.window),
        ("model.n_features", [8, 16], lambda r: r.shape.n_features),
    ],
)
def test_fields_left_out_of_to_dict_at_their_default_are_axes(key, values, read):
    base = {**BASE, "model": {**BASE["model"], "variant": _variant_for(key)}}
    runs = plan(parse_spec({"base": base, "design": GRID, "axes": {key: values}}))
    assert [read(r) for r in runs] == values * len(SHAPES)
    assert len({r.run_id for r in runs}) == len(runs)


def _variant_for(key: str) -> str:
    return {"model.window": "local", "model.n_features": "performer"}.get(key, "gpt2")


def test_an_unknown_axis_key_is_refused_naming_the_defaulted_fields_it_allows():
    with pytest.raises(ConfigError) as e:
        plan(parse_spec({"base": BASE, "design": GRID, "axes": {"train.objetive": ["mlm"]}}))
    assert e.value.field == "axes.train.objetive"
    assert "train.objective" in e.value.allowed


def test_mlm_budgets_count_bidirectional_attention():
    runs = plan(parse_spec(CAUSAL_AND_MLM_ISOFLOP))
    assert {r.config.train.objective for r in runs} == {"causal", "mlm"}
    tokens = {}
    for r in runs:
        objective = r.config.train.objective
        achieved = flops.training_flops(r.shape, r.tokens, "attention", causal=objective != "mlm")
        assert abs(achieved / ISOFLOP["budgets"][0] - 1) <= 0.5 / r.config.total_steps
        tokens[objective, r.shape] = r.tokens
    # mlm pays for the full T x T scores: a shape both plan trains on fewer tokens under mlm
    shared = {s for o, s in tokens if o == "mlm"} & {s for o, s in tokens if o == "causal"}
    assert shared
    for shape in shared:
        assert tokens["mlm", shape] < tokens["causal", shape]


def test_results_count_mlm_runs_bidirectionally(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0")
    spec = parse_spec(
        {"base": BASE, "design": GRID, "axes": {"train.objective": ["causal", "mlm"]}}
    )
    runs = plan(spec)
    store = prepare_sweep_dir(spec, runs, tmp_path / "out")
    for r in runs:
        fake_train(r.config, store.run_dir(r.run_id))
    df = load_results(tmp_path / "out")
    df["train.objective"] = df["train.objective"].fillna("causal")  # a default left out of ids
    assert set(df["train.objective"]) == {"causal", "mlm"}
    for r in runs:
        rows = df[df["run_id"] == r.run_id]
        causal = r.config.train.objective != "mlm"
        for conv in flops.CONVENTIONS:
            want = [flops.training_flops(r.shape, d, conv, causal=causal) for d in rows["D"]]
            assert rows[f"C_{conv}"].tolist() == want
    mlm = df[df["train.objective"] == "mlm"]
    causal = df[df["train.objective"] == "causal"]
    assert (mlm["C_attention"].to_numpy() > causal["C_attention"].to_numpy()).all()


def test_shipped_objectives_sweep_plans_every_objective_at_every_budget():
    from pathlib import Path

    from scaling.data.objectives import objective_vocab_size
    from scaling.sweep.spec import load_spec

    path = Path(__file__).resolve().parent.parent / "sweeps" / "objectives.toml"
    header = path.read_text().split("\n\n")[0]
    assert "Measures:" in header and "Takes:" in header and "nats per PREDICTED token" in header
    spec = load_spec(path)
    runs = plan(spec)
    budgets = {r.point["budget"] for r in runs}
    assert len(budgets) == 3
    for objective in ("causal", "mlm", "span"):
        mine = [r for r in runs if r.config.train.objective == objective]
        assert {r.point["budget"] for r in mine} == budgets and len(mine) >= 3 * len(budgets)
        for r in mine:
            assert r.shape.vocab_size >= objective_vocab_size(objective, 256, r.shape.context)
            achieved = flops.training_flops(
                r.shape, r.tokens, spec.convention, causal=objective != "mlm"
            )
            assert abs(achieved / r.point["budget"] - 1) <= 0.05


def test_plan_table_counts_mlm_runs_bidirectionally():
    from scaling.sweep.plan_table import Throughput, format_plan

    runs = plan(parse_spec(CAUSAL_AND_MLM_ISOFLOP))
    table = format_plan(runs, "attention", Throughput(1e11, 0.5, "test"), workers=1)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1 : len(runs) + 1]}
    for r in runs:
        achieved = float(rows[r.run_id][-4])  # ... budget achieved est pack axes
        # every run, mlm included, is planned on its budget to within one step's rounding
        assert abs(achieved - 1) <= 0.5 / r.config.total_steps + 5e-5, (r.run_id, achieved)
