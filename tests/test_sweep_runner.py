"""The runner: SIGKILL mid-sweep and relaunch loses nothing and reruns nothing; two runners on
one folder run every run exactly once; failed runs rerun only when asked.

These use a fake train function (tests/sweep_fake_train.py: the real file contract at
milliseconds per step) so they test the runner, not the model; test_sweep_real.py runs the real
train().
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_fake_train import fake_train
from tiny import TOKENS_PER_STEP, fake_grid

from scaling.io import read_json, read_jsonl
from scaling.sweep.results import load_results
from scaling.sweep.runner import run_sweep
from scaling.sweep.store import RunStore

TESTS = Path(__file__).parent


def write_sweep(tmp_path: Path, steps: int = 40, third_lr: str = "1e-2") -> Path:
    spec = tmp_path / "sweep.toml"
    spec.write_text(fake_grid(steps * TOKENS_PER_STEP, f"1e-3, 3e-3, {third_lr}"))
    return spec


def launch_runner(spec: Path, out: Path, step_s: float, workers: int = 1) -> subprocess.Popen:
    code = (
        "import sys; from scaling.sweep.runner import run_sweep; "
        "from sweep_fake_train import fake_train; "
        f"run_sweep({str(spec)!r}, {str(out)!r}, workers={workers}, train_fn=fake_train, "
        "poll_s=0.05)"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS), "FAKE_STEP_S": str(step_s)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


RUNNER_FILES = ("lease.json", "worker.log")  # the runner's own, not the run's results


def file_fingerprints(run_dir: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(run_dir)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in RUNNER_FILES
    }


def comparable(df):
    return df.drop(columns=["wall_time", "tokens_per_s", "mfu"]).sort_values(["run_id", "step"])


def test_sigkill_mid_sweep_then_relaunch_resumes_and_reruns_nothing(tmp_path, monkeypatch):
    spec = write_sweep(tmp_path)
    out = tmp_path / "killed"
    store = RunStore(out)
    proc = launch_runner(spec, out, step_s=0.03)
    deadline = time.time() + 60
    victim = None
    while time.time() < deadline:  # wait for 2 finished runs and one with a checkpoint
        ids = store.run_ids()
        done = [r for r in ids if store.state(r) == "done"]
        running = [
            r
            for r in ids
            if store.state(r) == "running" and (store.read_status(r) or {}).get("step", 0) >= 4
        ]
        if len(done) >= 2 and running:
            victim = running[0]
            break
        time.sleep(0.02)
    assert victim is not None, proc.communicate()[0].decode()
    before = {r: file_fingerprints(store.run_dir(r)) for r in done}
    lease = read_json(store.run_dir(victim) / "lease.json")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for ident in lease["processes"]:  # the worker dies with its runner
        for _ in range(200):
            if not Path(f"/proc/{ident['pid']}").exists() or "Z" in _proc_state(ident["pid"]):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"worker {ident['pid']} outlived its runner")
    killed_at = read_json(store.run_dir(victim) / "checkpoint" / "state.json")["step"]
    assert store.state(victim) == "running" and killed_at > 0

    monkeypatch.setenv("FAKE_STEP_S", "0")
    summary = run_sweep(spec, out, train_fn=fake_train, poll_s=0.05, log=None)
    assert set(summary.states.values()) == {"done"} and len(summary.states) == 6
    assert victim in summary.started and not set(done) & set(summary.started)
    for r in done:  # finished runs untouched: same files, same bytes, same mtimes
        assert file_fingerprints(store.run_dir(r)) == before[r]
    calls = read_jsonl(store.run_dir(victim) / "invocations.jsonl")
    assert [c["start_step"] for c in calls] == [0, killed_at]  # resumed from its checkpoint
    for r in store.run_ids():
        assert len(read_jsonl(store.run_dir(r) / "invocations.jsonl")) == (2 if r == victim else 1)

    clean = tmp_path / "clean"
    run_sweep(spec, clean, train_fn=fake_train, poll_s=0.05, log=None)
    a, b = comparable(load_results(out)), comparable(load_results(clean))
    assert len(a) == 6 * 4
    assert a.reset_index(drop=True).equals(b.reset_index(drop=True))


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_two_runners_at_once_run_every_run_exactly_once(tmp_path):
    spec = write_sweep(tmp_path, steps=12)
    out = tmp_path / "shared"
    procs = [launch_runner(spec, out, step_s=0.02, workers=2) for _ in range(2)]
    logs = [p.communicate(timeout=90)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    store = RunStore(out)
    assert len(store.run_ids()) == 6
    for r in store.run_ids():
        assert store.state(r) == "done"
        assert len(read_jsonl(store.run_dir(r) / "invocations.jsonl")) == 1, r
        assert not (store.run_dir(r) / "lease.json").exists()
    started = [
        line.split()[1] for log in logs for line in log.splitlines() if line.startswith("start ")
    ]
    assert sorted(started) == store.run_ids()  # each run started once, by one of the runners


def test_failed_run_is_recorded_and_rerun_only_with_retry_failed(tmp_path, monkeypatch):
    spec = write_sweep(tmp_path, steps=10, third_lr="0.5")  # lr=0.5 raises in the fake
    out = tmp_path / "s"
    monkeypatch.setenv("FAKE_STEP_S", "0")
    first = run_sweep(spec, out, train_fn=fake_train, workers=2, poll_s=0.05, log=None)
    failed = [r for r, s in first.states.items() if s == "failed"]
    assert len(failed) == 2 and first.counts()["done"] == 4
    status = read_json(RunStore(out).run_dir(failed[0]) / "status.json")
    assert "fake failure" in status["error"] and "Traceback" in status["traceback"]
    again = run_sweep(spec, out, train_fn=fake_train, poll_s=0.05, log=None)
    assert again.started == []  # done runs are results; failed ones wait for the flag
    retry = run_sweep(spec, out, train_fn=fake_train, retry_failed=True, poll_s=0.05, log=None)
    assert sorted(retry.started) == sorted(failed)  # each retried once, not in a loop
    assert retry.counts() == {"done": 4, "failed": 2}


def test_wsd_branches_start_from_their_stable_segment(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0")
    spec = tmp_path / "wsd.toml"
    spec.write_text(
        write_sweep(tmp_path, steps=50).read_text().replace('"optim.lr" = [1e-3, 3e-3, 1e-2]', "")
        + "[wsd]\ncooldown_fraction = 0.2\nbranch_fractions = [0.4, 1.0]\n"
    )
    summary = run_sweep(
        spec, tmp_path / "out", train_fn=fake_train, workers=2, poll_s=0.02, log=None
    )
    assert set(summary.states.values()) == {"done"} and len(summary.states) == 8
    store = RunStore(tmp_path / "out")
    for run_id in store.run_ids():
        point = store.read_run(run_id)["point"]
        calls = read_jsonl(store.run_dir(run_id) / "invocations.jsonl")
        parent = point["init_from"]
        want = store.read_run(parent)["config"]["train"]["steps"] if parent else 0
        assert [c["start_step"] for c in calls] == [want], point
    df = load_results(tmp_path / "out")
    annealed = df[df["annealed"]]
    assert sorted(annealed["step"]) == [20, 20, 50, 50]  # each branch's last evaluation
    assert set(df[df["step"] < 16]["annealed"]) == {False}
