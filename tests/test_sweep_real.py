"""The sweep with the real train(): tiny models on a synthetic corpus, two workers.

A 6-run sweep (3 learning rates, the largest of which diverges, x 2 seeds) is SIGKILLed while
runs are in progress and relaunched: finished runs keep their files byte for byte, interrupted
runs resume from their checkpoints (the metrics rows before it are the very rows written before
the kill), and every result equals that of an uninterrupted run; the diverged runs are recorded
as diverged and left out of `load_results` unless asked for.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.io import read_json, read_jsonl
from scaling.sweep.results import load_results
from scaling.sweep.store import RunStore

SWEEP = """
[base.model]
context = 32
vocab_size = 64
[base.data]
source = "synthetic:markov?vocab=64&branching=4&tokens=200000&doc=1024&seed=3"
[base.optim]
warmup_steps = 5
[base.train]
batch_size = 16
[base.eval]
n_evals = 4
eval_sequences = 32
eval_batch_size = 32
[base.checkpoint]
every_steps = 15
[base.guards]
min_steps = 5
[design]
kind = "grid"
shapes = [{d_model = 32, n_layers = 1, n_heads = 2}]
tokens = [61440]
[axes]
"optim.lr" = [3e-3, 1e-2, 300.0]
"train.init_seed" = [0, 1]
"""
STEPS = 120  # 61440 tokens / (16 x 32)


RUNNER_FILES = ("lease.json", "worker.log")  # the runner's own, not the run's results


def fingerprints(run_dir: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(run_dir)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in RUNNER_FILES
    }


def sweep_cli(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaling.cli.main",
            "sweep",
            "run",
            str(spec),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def checkpoint_step(run_dir: Path) -> int:
    steps = [int(p.name) for p in (run_dir / "checkpoint").glob("*") if p.name.isdigit()]
    return max(steps, default=0)


@pytest.mark.slow  # ~2-4 min on 2 cores; the fake-train runner tests cover the same logic fast
def test_real_sweep_killed_and_relaunched(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    out = tmp_path / "sweep"
    store = RunStore(out)
    proc = sweep_cli(spec, out)
    deadline = time.time() + 240
    victims: list[str] = []
    while time.time() < deadline and proc.poll() is None:
        ids = store.run_ids()
        done = [r for r in ids if store.state(r) in ("done", "diverged")]
        live = [r for r in ids if store.state(r) == "running" and checkpoint_step(store.run_dir(r))]
        if len(done) >= 2 and live:
            victims = live
            break
        time.sleep(0.01)
    if not victims:
        proc.kill()
        pytest.fail("no run in progress to interrupt:\n" + proc.communicate()[0].decode())
    before = {r: fingerprints(store.run_dir(r)) for r in done}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the workers die with their runner (PR_SET_PDEATHSIG)
    kept_rows = {}
    victims = [v for v in victims if store.state(v) == "running"]  # (one may just have ended)
    assert victims
    for v in victims:
        ck = checkpoint_step(store.run_dir(v))
        assert 0 < ck < STEPS
        kept_rows[v] = [
            r for r in read_jsonl(store.run_dir(v) / "metrics.jsonl") if r["step"] <= ck
        ]

    relaunch = sweep_cli(spec, out)
    log = relaunch.communicate(timeout=240)[0].decode()
    assert relaunch.returncode == 0, log
    assert set(store.run_ids()) == set(store.planned_run_ids()) and len(store.run_ids()) == 6
    for r in done:  # finished runs were not run again: not a byte, not an mtime changed
        assert fingerprints(store.run_dir(r)) == before[r]
        assert f" {r} " not in log
    for v in victims:  # resumed: the rows up to its checkpoint are the ones written before
        assert f"resume {v}" in log
        rows = read_jsonl(store.run_dir(v) / "metrics.jsonl")
        assert rows[: len(kept_rows[v])] == kept_rows[v]
        assert rows[-1]["step"] == STEPS

    states = {r: store.state(r) for r in store.run_ids()}
    diverged = {r for r, s in states.items() if s == "diverged"}
    assert len(diverged) == 2 and set(states.values()) == {"done", "diverged"}
    df = load_results(out)
    assert not diverged & set(df["run_id"]) and len(set(df["run_id"])) == 4
    with_div = load_results(out, include_diverged=True)
    assert set(with_div["run_id"]) == set(store.run_ids())

    # Every result equals an uninterrupted run's: train an interrupted run from scratch and
    # compare (the other runs ran without interruption in the first place).
    final = load_results(out, view="final").set_index("run_id")
    reference = _train_from_scratch(store, victims[:1], tmp_path / "ref")
    for v in victims[:1]:
        assert math.isclose(final.loc[v, "eval_loss"], reference[v], rel_tol=0, abs_tol=1e-6)


def _train_from_scratch(store: RunStore, run_ids: list[str], root: Path) -> dict[str, float]:
    """Final eval loss of each run trained without interruption (in a worker like the sweep's)."""
    code = (
        "import json, sys\n"
        "from scaling.train.runtime import prepare_process\n"
        "prepare_process(reexec=False)\n"
        "from scaling.train import train\n"
        "from scaling.train.config import RunConfig\n"
        "out = {}\n"
        "for run_id, path, dest in json.loads(sys.argv[1]):\n"
        "    cfg = RunConfig.from_dict(json.load(open(path))['config'])\n"
        "    out[run_id] = train(cfg, dest).final['eval_loss']\n"
        "print(json.dumps(out))\n"
    )
    import json

    jobs = [[r, str(store.run_dir(r) / "run.json"), str(root / r)] for r in run_ids]
    env = {**os.environ, "SCALING_CPU_DEVICES": "1"}  # as each of the sweep's 2 workers had
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(jobs)], env=env, capture_output=True, check=True
    )
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    for r in run_ids:
        assert read_json(root / r / "status.json")["state"] == "done"
    return result


WSD_SWEEP = """
[base.model]
context = 32
vocab_size = 64
[base.data]
source = "synthetic:markov?vocab=64&branching=4&tokens=200000&doc=1024&seed=3"
[base.train]
batch_size = 16
[base.eval]
n_evals = 4
eval_sequences = 32
eval_batch_size = 32
[design]
kind = "grid"
shapes = [{d_model = 32, n_layers = 1, n_heads = 2}]
tokens = [51200]
[wsd]
cooldown_fraction = 0.2
branch_fractions = [0.5, 1.0]
"""


@pytest.mark.slow
def test_real_wsd_branches_equal_from_scratch_wsd_runs(tmp_path):
    spec = tmp_path / "wsd.toml"
    spec.write_text(WSD_SWEEP)
    out = tmp_path / "sweep"
    proc = sweep_cli(spec, out)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    store = RunStore(out)
    branches = [
        r for r in store.planned_run_ids() if store.read_run(r)["point"]["wsd"] == "cooldown"
    ]
    assert len(branches) == 2
    final = load_results(out, view="final").set_index("run_id")
    assert final.loc[branches, "annealed"].all()
    reference = _train_from_scratch(store, branches, tmp_path / "ref")
    for b in branches:  # a cooldown branched from the stable run == the same WSD run from scratch
        assert math.isclose(final.loc[b, "eval_loss"], reference[b], rel_tol=0, abs_tol=1e-6)
