"""Sweep packing: runs of one shape trained together in one job give each run the results it
gets alone; a killed pack resumes every member once from its own checkpoint and never reruns a
finished one; --dry-run lists the packs; the pack size rule and its validation.

The kill and executor tests use fake train functions (tests/sweep_fake_train.py,
tests/sweep_fake_packed.py) so they test the runner, not the model; the first test runs the
real train() and train_packed() through the local executor.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_fake_packed import fake_packed_dies_once, fake_train_packed
from sweep_fake_train import fake_train
from tiny import TOKENS_PER_STEP, fake_grid, synthetic_grid

from scaling.errors import ConfigError
from scaling.io import read_json, read_jsonl
from scaling.sweep.designs import plan
from scaling.sweep.executor_options import ExecutorOptions, parse_executor
from scaling.sweep.packing import (
    PAYS,
    PackPolicy,
    form_packs,
    member_bytes,
    pack_policy,
    record_measurements,
)
from scaling.sweep.results import load_results
from scaling.sweep.runner import run_sweep
from scaling.sweep.spec import load_spec
from scaling.sweep.store import RunStore
from scaling.train import RunConfig

TESTS = Path(__file__).parent
HAVE_SUBMITIT = importlib.util.find_spec("submitit") is not None


REAL_SWEEP = synthetic_grid("1280, 2560", "3e-3, 1e-2")  # 4 runs of one shape: 10 and 20 steps
TOL = 1e-5  # float32: a vmapped step may sum in another order (test_train_packed.py)
LOSSES = ("train_loss", "eval_loss", "eval_loss_se")


@pytest.fixture(autouse=True)
def fakes_importable(monkeypatch):
    """Spawned and submitit workers find the fake train functions. The user's cache (CPU peak,
    compiled steps, generated data) is shared as by the other sweep tests: none of it changes a
    result, and measuring the CPU peak again would cost a minute on a busy 2-core machine."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    spec = tmp_path / name
    spec.write_text(text)
    return spec


def comparable(df):
    cols = ["wall_time", "tokens_per_s", "mfu"]
    return df.drop(columns=cols).sort_values(["run_id", "step"]).reset_index(drop=True)


def test_packed_sweep_gives_each_run_its_unpacked_results(tmp_path):
    """The unpacked sweep trains each run with train() in a worker; here train() runs in this
    process (the same function, without 4 more worker start-ups) as the reference."""
    from scaling.train import train

    spec = write(tmp_path, REAL_SWEEP)
    lines: list[str] = []
    packed = run_sweep(spec, tmp_path / "packed", pack_size=4, poll_s=0.05, log=lines.append)
    assert packed.counts() == {"done": 4}
    assert sum("(pack of 4)" in line for line in lines) == 4, lines  # one job for the 4 runs
    store = RunStore(tmp_path / "packed")
    runs = plan(load_spec(spec))
    for r in runs:
        got = read_jsonl(store.run_dir(r.run_id) / "metrics.jsonl")
        want = train(r.config, tmp_path / "alone" / r.run_id).rows
        assert read_json(store.run_dir(r.run_id) / "status.json")["pack_size"] == 4
        assert [x["step"] for x in got] == [x["step"] for x in want]
        assert got[-1]["step"] == r.config.total_steps  # 10-step runs left the pack at 10
        for x, y in zip(got, want, strict=True):
            for key in (*LOSSES, "lr", "tokens", "flops_attention"):
                assert x[key] == pytest.approx(y[key], abs=TOL), (r.run_id, x["step"], key)
    assert len(load_results(tmp_path / "packed")) == sum(
        len(read_jsonl(store.run_dir(r.run_id) / "metrics.jsonl")) for r in runs
    )


def fingerprints(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(run_dir)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("lease.json", "worker.log")
    }


def test_killed_pack_resumes_each_member_once_and_packs_only_the_rest(tmp_path, monkeypatch):
    spec = write(tmp_path, fake_grid(40 * TOKENS_PER_STEP, "1e-3, 3e-3, 2.0"))
    out = tmp_path / "killed"
    code = (
        "from scaling.sweep.runner import run_sweep; "
        "from sweep_fake_train import fake_train; from sweep_fake_packed import fake_train_packed; "
        f"run_sweep({str(spec)!r}, {str(out)!r}, train_fn=fake_train, "
        "pack_train_fn=fake_train_packed, pack_size=3, poll_s=0.05)"
    )
    env = {**os.environ, "FAKE_STEP_S": "0.03"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    store = RunStore(out)
    deadline, victims = time.time() + 60, []
    while time.time() < deadline and not victims:  # first pack ended, second one under way
        ids = store.run_ids()
        states = {r: store.state(r) for r in ids}
        ckpt = {r: (store.read_status(r) or {}).get("step", 0) for r in ids}
        if list(states.values()).count("done") == 2:
            victims = [r for r in ids if states[r] == "running" and ckpt[r] >= 4]
            if len(victims) < 2:
                victims = []
        time.sleep(0.02)
    assert len(victims) == 2, proc.communicate()[0].decode()
    finished = [r for r in store.run_ids() if store.state(r) in ("done", "diverged")]
    assert len(finished) == 4  # a pack of 3: 2 done, 1 diverged; and the 2nd pack's diverged
    before = {r: fingerprints(store.run_dir(r)) for r in finished}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # the worker dies with its runner
    killed_at = {
        r: read_json(store.run_dir(r) / "checkpoint" / "state.json")["step"] for r in victims
    }

    monkeypatch.setenv("FAKE_STEP_S", "0")
    summary = run_sweep(
        spec,
        out,
        train_fn=fake_train,
        pack_train_fn=fake_train_packed,
        pack_size=3,
        poll_s=0.05,
        log=None,
    )
    assert summary.counts() == {"done": 4, "diverged": 2}
    assert sorted(summary.started) == sorted(victims)  # finished runs are never rerun
    for r in finished:
        assert fingerprints(store.run_dir(r)) == before[r]
    for r in victims:
        calls = read_jsonl(store.run_dir(r) / "invocations.jsonl")
        assert [c["start_step"] for c in calls] == [0, killed_at[r]]
        packs = read_jsonl(store.run_dir(r) / "packs.jsonl")
        assert len(packs[0]["members"]) == 3 and sorted(packs[1]["members"]) == sorted(victims)
        assert not (store.run_dir(r) / "lease.json").exists()
    for r in finished:
        assert len(read_jsonl(store.run_dir(r) / "invocations.jsonl")) == 1

    clean = tmp_path / "clean"
    run_sweep(spec, clean, train_fn=fake_train, pack_size=1, workers=2, poll_s=0.02, log=None)
    assert comparable(load_results(out)).equals(comparable(load_results(clean)))


@pytest.mark.skipif(not HAVE_SUBMITIT, reason="submitit not installed (scaling[distributed])")
def test_slurm_pack_job_that_died_is_resubmitted_and_each_member_resumes(tmp_path, monkeypatch):
    spec = write(tmp_path, fake_grid(12 * TOKENS_PER_STEP))
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("DIE_ONCE_MARKER_DIR", str(markers))
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    monkeypatch.setenv("SCALING_CPU_DEVICES", "1")
    runs = plan(load_spec(spec))
    victim = runs[0].run_id
    (markers / "victim").write_text(victim)
    options = ExecutorOptions(kind="slurm", cluster="local", time_min=5, retries=1, pack_size=2)
    lines: list[str] = []
    summary = run_sweep(
        spec,
        tmp_path / "out",
        executor=options,
        train_fn=fake_train,
        pack_train_fn=fake_packed_dies_once,
        poll_s=0.05,
        log=lines.append,
    )
    assert (markers / f"killed-{victim}").exists()  # the pack's process did die mid-run
    assert summary.counts() == {"done": 4}, lines
    store = RunStore(tmp_path / "out")
    mates = read_jsonl(store.run_dir(victim) / "packs.jsonl")[0]["members"]
    assert victim in mates and len(mates) == 2
    for r in store.run_ids():
        calls = read_jsonl(store.run_dir(r) / "invocations.jsonl")
        packs = read_jsonl(store.run_dir(r) / "packs.jsonl")
        assert all(len(p["members"]) == 2 for p in packs)  # every job was a pack of 2
        if r in mates:  # resubmitted together; each resumed from its own checkpoint
            assert len(calls) == 2 and calls[0]["start_step"] == 0 < calls[1]["start_step"]
            assert any(line.startswith(f"retry {r}") for line in lines), lines
        else:
            assert len(calls) == 1
        assert not (store.run_dir(r) / "lease.json").exists()
    clean = tmp_path / "clean"
    run_sweep(spec, clean, train_fn=fake_train, pack_size=1, workers=2, poll_s=0.02, log=None)
    assert comparable(load_results(tmp_path / "out")).equals(comparable(load_results(clean)))


def test_dry_run_lists_the_packs(tmp_path, capsys):
    from scaling.cli.main import main

    spec = write(tmp_path, fake_grid(40 * TOKENS_PER_STEP, "1e-3, 3e-3, 1e-2"))
    runs = plan(load_spec(spec))
    dry = ["sweep", "run", str(spec), "--dry-run", "--out", str(tmp_path / "o")]
    assert main([*dry, "--pack-size", "3"]) == 0
    out = capsys.readouterr().out
    pack_lines = [line for line in out.splitlines() if line.startswith("  P")]
    assert len(pack_lines) == 2, out
    by_shape: dict[int, set[str]] = {}
    for r in runs:
        by_shape.setdefault(r.shape.d_model, set()).add(r.run_id)
    for line in pack_lines:  # each pack: K, the shape, an estimate, the runs of one shape
        assert "K=3" in line and "est " in line
        members = set(line.rsplit(": ", 1)[1].split())
        assert members in by_shape.values()
    assert "2 jobs for 6 runs to do, 2 of them packs" in out
    row = next(line for line in out.splitlines() if line.startswith(runs[0].run_id))
    assert " P1 " in row or " P2 " in row
    assert main([*dry, "--pack-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "6 jobs for 6 runs to do, 0 of them packs" in out and "  P1" not in out


def test_pack_estimate_counts_ended_slots_only_where_vmapped(tmp_path):
    from scaling.sweep.plan_table import STARTUP_S, Throughput, pack_seconds, run_flops

    spec = write(tmp_path, REAL_SWEEP)  # one shape, 10 and 20 steps
    runs = sorted(plan(load_spec(spec)), key=lambda r: r.tokens)
    short, long = runs[0], runs[-1]
    assert long.tokens == 2 * short.tokens
    tp = Throughput(peak=1e9, mfu=0.5, source="test")
    f_short, f_long = run_flops(short, "attention"), run_flops(long, "attention")
    vmapped = pack_seconds([short, long], tp) - STARTUP_S
    assert vmapped == pytest.approx(2 * f_long / 5e8)  # the short slot runs to the end
    summed = pack_seconds([short, long], tp, vmapped=False) - STARTUP_S
    assert summed == pytest.approx((f_short + f_long) / 5e8)  # CPUs: an ended member is idle
    assert pack_seconds([short, long], tp, 2.0, vmapped=False) - STARTUP_S == pytest.approx(
        summed / 2
    )


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5"])
def test_bad_pack_size_flag_is_one_line_naming_flag_value_and_allowed(tmp_path, capsys, value):
    from scaling.cli.main import main

    spec = write(tmp_path, fake_grid(640, "1e-3, 3e-3, 1e-2"))
    assert main(["sweep", "run", str(spec), "--dry-run", "--pack-size", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--pack-size" in err and value in err and '"auto" or an integer >= 1' in err


@pytest.mark.parametrize("value", [0, -1, True, "fast", 2.0])
def test_bad_pack_size_in_the_sweep_file_names_the_key(value):
    with pytest.raises(ConfigError) as e:
        parse_executor({"pack_size": value})
    assert e.value.field == "executor.pack_size" and "auto" in str(e.value.allowed)
    with pytest.raises(ConfigError, match=r"executor\.pack_size"):
        ExecutorOptions().with_overrides(pack_size=value)


def test_pack_size_in_the_sweep_file_and_the_flag_overrides_it(tmp_path, capsys):
    from scaling.cli.main import main

    spec = write(tmp_path, fake_grid(640, "1e-3, 3e-3, 1e-2") + "[executor]\npack_size = 3\n")
    assert load_spec(spec).executor.pack_size == 3
    assert parse_executor({"pack_size": "auto"}).pack_size == "auto"
    dry = ["sweep", "run", str(spec), "--dry-run", "--out", str(tmp_path / "o")]
    assert main(dry) == 0
    assert "pack size 3 (set)" in capsys.readouterr().out
    assert main([*dry, "--pack-size", "1"]) == 0
    assert "0 of them packs" in capsys.readouterr().out


# --- which runs share a pack, and how many ---------------------------------------------------


def cfg(**sections) -> RunConfig:
    d = {
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "vocab_size": 64, "context": 16},
        "train": {"batch_size": 4, "steps": 10},
    }
    for name, values in sections.items():
        d[name] = {**d.get(name, {}), **values}
    return RunConfig.from_dict(d)


def test_form_packs_groups_runs_that_can_share_a_step():
    runs = [
        ("a", cfg(optim={"lr": 1e-3})),
        ("b", cfg(model={"d_model": 32})),  # another shape
        ("c", cfg(optim={"lr": 3e-3}, train={"steps": 40})),  # longer
        ("d", cfg(train={"init_seed": 1}, data={"data_seed": 2})),
        ("e", cfg(train={"batch_size": 8})),  # another batch size
        ("f", cfg(train={"objective": "span"})),  # not next-token: alone
        ("g", cfg(optim={"schedule": "constant", "lr": 1e-2}, train={"steps": 40})),
        ("h", cfg(optim={"weight_decay": 0.0})),  # another optimizer constant
    ]
    packs = form_packs(runs, lambda _c: 2)
    assert sorted(map(sorted, packs)) == [["a", "d"], ["b"], ["c", "g"], ["e"], ["f"], ["h"]]
    assert form_packs(runs, lambda _c: 1) == [[r] for r, _ in runs]  # K = 1: as before
    big = form_packs(runs, lambda _c: 16)
    assert sorted(map(sorted, big)) == [["a", "c", "d", "g"], ["b"], ["e"], ["f"], ["h"]]
    # as few packs as K allows, of even sizes, similar lengths together
    seven = [(str(i), cfg(train={"steps": 10 + (i % 2) * 30, "init_seed": i})) for i in range(7)]
    packs = form_packs(seven, lambda _c: 4)
    assert sorted(len(p) for p in packs) == [3, 4]
    assert sorted(packs, key=len)[0] == ["1", "3", "5"]  # the three 40-step runs


def test_auto_rule_packs_only_where_a_measurement_says_it_pays(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    small = cfg()
    cpu = pack_policy(ExecutorOptions())
    assert not cpu.accelerator and cpu.size_for(small) == 1  # CPU, nothing measured: alone
    assert "1 (no packing measurement" in cpu.describe()
    from scaling import flops

    n = flops.param_counts(small.model).N_total
    rows = [
        {"platform": "cpu", "device": "cpu", "N_total": n, "K": 4, "speedup": PAYS + 0.3},
        {"platform": "cpu", "device": "cpu", "N_total": n, "K": 8, "speedup": PAYS + 0.1},
        {"platform": "cpu", "device": "cpu", "N_total": 100 * n, "K": 8, "speedup": 1.05},
    ]
    record_measurements(rows)
    measured = pack_policy(ExecutorOptions())
    assert measured.size_for(small) == 4  # the best measured K at the nearest size
    assert measured.speedup(small, 4) == pytest.approx(PAYS + 0.3)
    assert measured.size_for(cfg(model={"d_model": 256, "n_layers": 4})) == 1  # 1.05x: no
    assert pack_policy(ExecutorOptions(pack_size=2)).size_for(small) == 2  # a set K wins
    gpu = pack_policy(ExecutorOptions(kind="ray", gpus_per_job=1))
    assert gpu.accelerator and gpu.size_for(small) == 16  # no accelerator measurement
    assert pack_policy(ExecutorOptions(), can_pack=False).size_for(small) == 1
    # memory: no more members than fit in half of it
    tight = PackPolicy(8, False, memory_bytes=5 * member_bytes(small))
    assert tight.size_for(small) == 8  # a set K is what the user asked for
    auto = PackPolicy("auto", True, memory_bytes=5 * member_bytes(small))
    assert auto.size_for(small) == 2


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_member_memory_estimate_bounds_what_a_step_stores(variant):
    """`member_bytes` is an upper estimate: parameters, gradients and AdamW moments (16 bytes a
    parameter) plus every array the step keeps for its backward pass (the leaves of its VJP)."""
    import jax
    import numpy as np

    from scaling import flops
    from scaling.train.step import init_params, loss_fn

    config = cfg(
        model={
            "d_model": 128,
            "n_layers": 2,
            "vocab_size": 256,
            "context": 128,
            "variant": variant,
        },
        train={"batch_size": 8},
    )
    graphdef, params = init_params(config.model, 0)
    batch = np.zeros((config.train.batch_size, config.model.context + 1), np.int32)
    _, backward = jax.vjp(lambda p: loss_fn(p, graphdef, batch, 0.0)[0], params)
    stored = sum(leaf.nbytes for leaf in jax.tree.leaves(backward))
    n = flops.param_counts(config.model).N_total
    assert 16 * n + stored <= member_bytes(config)
