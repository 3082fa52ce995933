"""Divergence guards, and the metrics file's truncation on resume."""

from __future__ import annotations

import json
import math

from scaling.io import read_jsonl
from scaling.train import metrics
from scaling.train.config import GuardsConfig
from scaling.train.guards import GuardState, check_loss

CFG = GuardsConfig(spike_factor=3.0, min_steps=5, ema_decay=0.5, max_loss=100.0)


def test_non_finite_loss_diverges():
    for bad in (math.nan, math.inf):
        assert "non-finite" in check_loss(CFG, GuardState(), 7, bad)


def test_spike_past_factor_of_the_best_smoothed_loss_diverges_after_min_steps():
    state = GuardState()
    for step, loss in enumerate([5.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.0], start=1):
        assert check_loss(CFG, state, step, loss) is None
    assert check_loss(CFG, state, 8, 2.5) is None  # a bump below 3x the best
    why = check_loss(CFG, state, 9, 10.0)
    assert why and "spike" in why and "step 9" in why


def test_no_spike_verdict_before_min_steps_but_max_loss_always():
    state = GuardState()
    assert check_loss(CFG, state, 1, 1.0) is None
    assert check_loss(CFG, state, 2, 50.0) is None  # early: only max_loss applies
    assert "max_loss" in check_loss(CFG, state, 3, 1e3)


def test_guard_state_round_trips_through_json():
    state = GuardState()
    for s, loss in enumerate([3.0, 2.0, 1.0], start=1):
        check_loss(CFG, state, s, loss)
    again = GuardState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert GuardState.from_dict(GuardState().to_dict()).best == math.inf


def test_truncate_rows_keeps_rows_up_to_the_step_atomically(tmp_path):
    for step in (1, 5, 10, 20):
        metrics.append_row(tmp_path, {"step": step, "eval_loss": 1.0 / step})
    with open(tmp_path / metrics.METRICS_FILE, "a") as f:
        f.write('{"step": 30, "eval_lo')  # a torn last line from a killed writer
    kept = metrics.truncate_rows(tmp_path, 10)
    assert [r["step"] for r in kept] == [1, 5, 10]
    assert [r["step"] for r in read_jsonl(tmp_path / metrics.METRICS_FILE)] == [1, 5, 10]
    assert (tmp_path / metrics.METRICS_FILE).read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [metrics.METRICS_FILE]


def test_metrics_row_has_every_flops_convention_and_no_nan():
    from scaling.model.shape import ModelShape

    row = metrics.metrics_row(
        ModelShape(d_model=32, n_layers=2, n_heads=2), step=3, tokens=300, eval_loss=math.nan
    )
    assert row["eval_loss"] is None
    assert {"flops_kaplan", "flops_attention", "flops_chinchilla"} <= set(row)
    assert row["flops_kaplan"] < row["flops_attention"]
    json.dumps(row, allow_nan=False)
