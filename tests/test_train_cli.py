"""`scaling train`: SIGKILL then --resume equals an uninterrupted run; bad input is one line,
exit 2, and nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from scaling.cli.main import main
from scaling.io import read_json, read_jsonl

SOURCE = "synthetic:markov?vocab=16&branching=2&tokens=200000&doc=512&seed=1"
TINY = f"""
[model]
d_model = 32
n_layers = 2
n_heads = 2
vocab_size = 16
context = 32
[data]
source = "{SOURCE}"
[optim]
lr = 1e-2
warmup_steps = 10
[train]
batch_size = 16
steps = 200
[eval]
steps = [1, 10, 50, 120]
eval_sequences = 64
eval_batch_size = 32
[checkpoint]
every_steps = 50
every_seconds = 0.0
"""


@pytest.fixture
def env(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "scaling-cache"
    monkeypatch.setenv("SCALING_CACHE_DIR", str(root))
    monkeypatch.setenv("SCALING_RUNTIME", "off")  # never re-exec the test process
    return {**os.environ, "SCALING_CACHE_DIR": str(root), "SCALING_RUNTIME": "off"}


def scaling_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling.cli.main", "train", "--no-progress", *args]


def finalized_checkpoints(run_dir) -> list[int]:
    ck = run_dir / "checkpoint"
    return sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) if ck.is_dir() else []


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, env):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run(
        scaling_train("--config", str(config), "--out", str(ref)),
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )

    proc = subprocess.Popen(
        scaling_train("--config", str(config), "--out", str(run)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not finalized_checkpoints(run) and time.monotonic() < deadline:
            assert proc.poll() is None, "finished before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    status = read_json(run / "status.json")
    assert status["state"] == "running" and status["step"] < 200  # killed mid-run

    done = subprocess.run(
        scaling_train("--config", str(config), "--out", str(run), "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "done at step 200" in done.stdout
    a, b = read_jsonl(run / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 10, 50, 120, 200]
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "eval_loss", "eval_loss_se", "lr", "tokens", "flops_kaplan"):
            assert x[key] == pytest.approx(y[key], abs=1e-6), (x["step"], key)
    assert read_json(run / "status.json")["state"] == "done"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["train", "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["data.source=text:/no/such/path.txt"], "path not found"),
        (["optim.schedule=cosine_annealing"], "warmup_cosine | warmup_linear"),
        (["optim.nesterov=true"], "optim.lr"),
        (["model.context=100000"], "model.context"),
        (["train.batch_size=0"], "train.batch_size"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, env, capsys, sets, expected):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    argv = ["--config", str(config), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert line.startswith("scaling train: error:") and expected in line
    assert not out.exists()


def test_bad_corpora_and_config_files(tmp_path, env, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    small = tmp_path / "small.txt"  # two documents, a few KB: less than one batch
    small.write_text("def f(x):\n    return x + 1\n" * 200)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[optim]\nfoo = 1\n")
    cases = [
        (["--set", f"data.source=text:{empty}"], "empty"),
        (
            [
                "--set",
                f"data.source=text:{small}",
                "--set",
                "model.context=64",
                "--set",
                "train.batch_size=64",
            ],
            "fewer than one batch",
        ),
        (["--config", str(tmp_path / "missing.toml")], "--config"),
        (["--config", str(bad_toml)], "optim.foo"),
    ]
    for i, (argv, expected) in enumerate(cases):
        out = tmp_path / f"out{i}"
        code, line = run_cli([*argv, "--out", str(out)], capsys)
        assert code == 2 and expected in line, (argv, line)
        assert not out.exists(), argv


def test_out_holding_a_run_needs_resume(tmp_path, env, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "status.json").write_text('{"state": "running"}')
    code, line = run_cli(["--out", str(out)], capsys)
    assert code == 2 and "--resume" in line
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
