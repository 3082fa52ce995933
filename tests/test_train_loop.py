"""train(): loss approaches a known entropy rate, divergence is a result, a crash resumes exactly.

Tiny models (d_model 32, 2 layers, context 32) on a synthetic Markov chain with a known
entropy rate; every test shares one shape so compilation is paid once per process.
"""

from __future__ import annotations

import json

import pytest
from tiny import MARKOV
from tiny import tiny_config as tiny

from scaling.io import read_json, read_jsonl
from scaling.train import loop as loop_module
from scaling.train import train

pytestmark = pytest.mark.usefixtures("cache_dir")  # tests/conftest.py


def test_validation_loss_approaches_the_entropy_rate_from_above(tmp_path):
    from scaling.data import load_tokens

    H = load_tokens(MARKOV).manifest.entropy_rate
    out = train(tiny(train={"steps": 300}, eval={"n_evals": 8}), tmp_path / "run")
    assert out.state == "done" and out.step == 300
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in out.rows] and rows[-1]["step"] == 300
    for r in rows:  # never below H beyond its standard error
        assert r["eval_loss"] > H - r["eval_loss_se"], (r["step"], r["eval_loss"], H)
    assert rows[0]["eval_loss"] > H + 1.0  # starts far above (near log 16 = 2.77)
    assert rows[-1]["eval_loss"] - H < 0.05  # and ends close to it
    assert rows[-1]["eval_loss_se"] > 0
    for key in ("flops_kaplan", "flops_attention", "flops_chinchilla", "lr", "wall_time"):
        assert rows[-1][key] > 0
    assert rows[-1]["tokens"] == 300 * 16 * 32
    assert rows[-1]["mfu"] > 0 and rows[-1]["tokens_per_s"] > 0 and rows[-1]["peak_source"]
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "done" and status["step"] == 300


def test_huge_learning_rate_ends_diverged_with_metrics_kept(tmp_path):
    cfg = tiny(optim={"lr": 1e4, "warmup_steps": 0}, eval={"steps": [1, 2, 30]})
    out = train(cfg, tmp_path / "run")  # no exception
    assert out.state == "diverged"
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "diverged" and status["reason"]
    assert "traceback" not in status
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows and rows[0]["step"] == 1  # metrics up to the divergence are kept
    assert out.step < 60
    # a diverged run is a result: calling train again returns it without training
    again = train(cfg, tmp_path / "run")
    assert again.state == "diverged" and again.step == out.step


def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = tiny(eval={"steps": [1, 5, 15, 25, 33, 47]}, checkpoint={"every_steps": 20})
    reference = train(cfg, tmp_path / "ref").rows

    real_check = loop_module.check_loss

    def crash_at_38(guards, state, step, loss):
        if step == 38:
            raise RuntimeError("simulated crash")
        return real_check(guards, state, step, loss)

    monkeypatch.setattr(loop_module, "check_loss", crash_at_38)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, tmp_path / "run")
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "failed" and "simulated crash" in status["traceback"]
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 5, 15, 25, 33]  # past the checkpoint at 20
    monkeypatch.setattr(loop_module, "check_loss", real_check)

    resumed = train(cfg, tmp_path / "run")
    assert resumed.state == "done"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for a, b in zip(rows, reference, strict=True):
        for key in ("train_loss", "eval_loss", "eval_loss_se", "lr", "flops_attention"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)


def test_resume_refuses_a_different_config_and_restart_clears(tmp_path):
    cfg = tiny(train={"steps": 12}, eval={"n_evals": 2})
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / "lease.json").write_text("{}")  # someone else's file in the folder
    from scaling.errors import ConfigError

    with pytest.raises(ConfigError, match="run_dir"):
        train(cfg.with_overrides(["optim.lr=0.5"]), tmp_path / "run")
    other = cfg.with_overrides(["optim.lr=0.005"])
    out = train(other, tmp_path / "run", resume=False)
    assert out.state == "done"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optim"]["lr"] == 0.005
    assert (tmp_path / "run" / "lease.json").exists()
