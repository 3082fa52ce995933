"""One run trained by several processes (jax.distributed): the launch decision, and a real
2-process run on this machine.

The 2-process test starts two Python processes (each with 2 XLA host CPU devices, so the mesh
spans 4 devices in 2 processes) that join through jax.distributed with a localhost
coordinator (CPU collectives: gloo, jax's default), and one single-process, single-device
reference. Tolerance: train and eval losses (~3-4 nats, float32) agree within TOL = 1e-5
absolute, as in test_train_mesh: only the order of float32 sums differs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import ONE_SHAPE, fake_grid

from scaling.errors import ConfigError
from scaling.train.distributed import LaunchPlan, initialize, plan_launch

TOL = 1e-5
MODEL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 64, "context": 16}
CONFIG = {
    "model": MODEL,
    "data": {"source": "synthetic:markov?vocab=64&branching=4&tokens=50000&doc=512&seed=5"},
    "optim": {"lr": 1e-2, "warmup_steps": 3},
    "train": {"batch_size": 8, "steps": 20},
    "eval": {"steps": [5, 12, 20], "eval_sequences": 16, "eval_batch_size": 16},
    "checkpoint": {"every_steps": 10, "every_seconds": 0.0},
}

BATCH_SCRIPT = r"""
import json, sys
from scaling.train import RunConfig, distributed, loop
plan = distributed.initialize()
import jax
import jax.numpy as jnp
import numpy as np
from scaling.data import train_batch
from scaling.train.mesh import make_mesh

# This process's shards of one global batch: which rows, and whether they hold those rows;
# then a jitted reduction over the whole (global) batch, through the CPU collectives.
config = RunConfig.from_dict(json.loads(sys.argv[1]))
tokens = loop.load_data(config).train
batch = train_batch(tokens, seed=config.data.data_seed, step=3, batch_size=8, context=16)
run_mesh = make_mesh(config.mesh, 8)
arr = run_mesh.put(batch, run_mesh.batch())
total = jax.jit(lambda x: jnp.sum(x * x), out_shardings=run_mesh.replicated())(arr)
out = {"how": plan.how, "process": jax.process_index(), "global_shape": list(arr.shape),
       "sum": int(total), "expected": int((batch.astype(np.int64) ** 2).sum())}
out["shards"] = [
    [s.index[0].start, s.index[0].stop, bool((np.asarray(s.data) == batch[s.index]).all())]
    for s in arr.addressable_shards
]
print("RESULT " + json.dumps(out), flush=True)
"""
CLOCK_CONFIG = {**CONFIG, "checkpoint": {"every_steps": 0, "every_seconds": 1e-6}}

SCRIPT = r"""
import json, sys
from pathlib import Path
from scaling.io import read_jsonl
from scaling.train import RunConfig, distributed, loop, train

jobs = json.loads(sys.argv[1])
plan = distributed.initialize()  # from SCALING_* (train() would do it too; here: report it)
import jax
import time

class FrozenClock:
    @staticmethod
    def perf_counter():
        return 0.0

out = {"how": plan.how, "process": jax.process_index(), "processes": jax.process_count(),
       "devices": jax.device_count(), "local_devices": jax.local_device_count(), "runs": {}}

real_check = loop.check_loss
out["guard_inputs"] = guard_inputs = {}
for name, cfg, run_dir, crash_at in jobs:
    guard_inputs[name] = []
    def check(guards, state, step, loss, crash_at=crash_at, seen=guard_inputs[name]):
        seen.append([step, loss])  # what this process's guard judges
        if crash_at and step == crash_at:
            raise RuntimeError("simulated crash")
        return real_check(guards, state, step, loss)
    loop.check_loss = check
    # "clock": process 1's clock stands still, so only process 0 sees checkpoints come due
    # (every_seconds); without agreeing on them, process 0 would save alone and hang.
    loop.time = FrozenClock if name == "clock" and jax.process_index() == 1 else time
    try:
        out["runs"][name] = train(RunConfig.from_dict(cfg), Path(run_dir)).rows
    except RuntimeError as e:
        out["runs"][name] = {"error": str(e), "rows": read_jsonl(Path(run_dir) / "metrics.jsonl")}
print("RESULT " + json.dumps(out), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def environment(devices: int, cache: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SCALING_"))}
    return {
        **env,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "SCALING_RUNTIME": "off",
        "SCALING_CACHE_DIR": str(cache),
        "JAX_PLATFORMS": "cpu",
        **extra,
    }


def launch(
    jobs: list | dict, n_processes: int, devices: int, cache: Path, script: str = SCRIPT
) -> list[dict]:
    """Run `script` as `n_processes` processes of one jax.distributed job; their RESULTs."""
    port = free_port()
    procs = []
    for i in range(n_processes):
        extra = {}
        if n_processes > 1:
            extra = {
                "SCALING_COORDINATOR_ADDRESS": f"localhost:{port}",
                "SCALING_NUM_PROCESSES": str(n_processes),
                "SCALING_PROCESS_ID": str(i),
            }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, json.dumps(jobs)],
                env=environment(devices, cache, **extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=400)
            lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
            assert p.returncode == 0 and lines, stdout[-3000:] + stderr[-3000:]
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    cache = root / "cache"
    two = launch(
        [
            ["full", CONFIG, str(root / "full"), None],
            ["clock", CLOCK_CONFIG, str(root / "clock"), None],
            ["crashed", {**CONFIG, "mesh": {"data": 2, "fsdp": 2}}, str(root / "resumed"), 15],
        ],
        n_processes=2,
        devices=2,
        cache=cache,
    )
    (one,) = launch(
        [
            ["one", CONFIG, str(root / "one"), None],
            ["resumed", CONFIG, str(root / "resumed"), None],
        ],
        n_processes=1,
        devices=1,
        cache=cache,
    )
    return two, one, root


def losses(rows: list[dict]) -> list[tuple[int, float, float]]:
    return [(r["step"], r["train_loss"], r["eval_loss"]) for r in rows]


def assert_close(rows, reference):
    assert [r[0] for r in rows] == [r[0] for r in reference]
    for (step, train_a, eval_a), (_, train_b, eval_b) in zip(rows, reference, strict=True):
        assert abs(train_a - train_b) <= TOL, (step, train_a, train_b)
        assert abs(eval_a - eval_b) <= TOL, (step, eval_a, eval_b)


@pytest.mark.slow
def test_two_processes_train_one_run_with_the_losses_of_one_process(results):
    two, one, root = results
    assert [(r["process"], r["processes"], r["how"]) for r in two] == [
        (0, 2, "explicit"),
        (1, 2, "explicit"),
    ]
    assert all(r["devices"] == 4 and r["local_devices"] == 2 for r in two)
    assert one["processes"] == 1 and one["devices"] == 1 and one["how"] == "single"
    reference = losses(one["runs"]["one"])
    assert [r[0] for r in reference] == [5, 12, 20] and reference[-1][2] < reference[0][2]
    for r in two:  # both processes return the run's rows, equal to one process's
        assert_close(losses(r["runs"]["full"]), reference)
    # each process's guard judged bit-identical losses, so they decide alike
    guard_inputs = [r["guard_inputs"]["full"] for r in two]
    assert [s for s, _ in guard_inputs[0]] == list(range(1, 21))
    assert guard_inputs[0] == guard_inputs[1]
    assert two[0]["runs"]["full"][-1]["peak_source"].endswith("x 2 processes")
    # one writer: each evaluation row once, the run done
    rows = [json.loads(x) for x in (root / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 12, 20]
    assert json.loads((root / "full" / "status.json").read_text())["state"] == "done"


@pytest.mark.slow
def test_clock_based_checkpoints_are_process_0s_decision(results):
    two, one, root = results
    reference = losses(one["runs"]["one"])
    for r in two:  # process 1's clock stood still: it followed process 0's saves, no hang
        assert_close(losses(r["runs"]["clock"]), reference)
        steps = [s for s, _ in r["guard_inputs"]["clock"]]
        assert steps == list(range(1, 21))
    assert (root / "clock" / "checkpoint" / "20").is_dir()


def test_each_process_feeds_its_own_rows_of_the_global_batch(tmp_path):
    """Fast: 2 processes join, cut their shards from the same global batch, and a jitted
    reduction over the global array (gloo collectives) sees the whole batch."""
    two = launch(CONFIG, n_processes=2, devices=2, cache=tmp_path, script=BATCH_SCRIPT)
    rows = []
    for i, r in enumerate(two):
        assert (r["how"], r["process"], r["global_shape"]) == ("explicit", i, [8, 17])
        assert all(ok for _, _, ok in r["shards"])  # each shard holds the global batch's rows
        assert r["sum"] == r["expected"]
        rows.append(sorted((start, stop) for start, stop, _ in r["shards"]))
    assert rows[0] == [(0, 2), (2, 4)] and rows[1] == [(4, 6), (6, 8)]  # disjoint, cover 0..8


@pytest.mark.slow
def test_checkpoint_written_by_two_processes_resumes_in_one(results):
    two, one, _ = results
    reference = losses(one["runs"]["one"])
    for r in two:  # data 2 x fsdp 2 over 2 processes, up to its crash at step 15
        crashed = r["runs"]["crashed"]
        assert crashed["error"] == "simulated crash"
        assert_close(losses(crashed["rows"]), reference[:2])
    assert_close(losses(one["runs"]["resumed"]), reference)  # from the checkpoint at step 10


SLURM_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[017-018]",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}


def test_one_process_calls_nothing():
    assert not plan_launch({}).multiprocess
    assert not plan_launch({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "8"}).multiprocess
    assert not plan_launch({"SCALING_NUM_PROCESSES": "1"}).multiprocess
    assert not plan_launch({**SLURM_STEP, "SCALING_DISTRIBUTED": "off"}).multiprocess
    assert not plan_launch({"TPU_WORKER_HOSTNAMES": "t1"}).multiprocess  # one host
    assert initialize(LaunchPlan("single", "one process")).how == "single"


def test_slurm_step_of_several_tasks_uses_jax_slurm_detection(monkeypatch):
    plan = plan_launch(SLURM_STEP)
    assert plan.how == "slurm" and plan.kwargs == {"cluster_detection_method": "slurm"}
    # JAX fills in the rest from the same variables: coordinator, count, rank, local GPU.
    from jax._src.clusters import ClusterEnv

    for k, v in SLURM_STEP.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    address, n, rank, local = ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, "slurm", None
    )
    assert address == f"gpu017:{4242 % 4096 + 65535 - 4096 + 1}"
    assert (n, rank, list(local)) == (4, 3, [1])
    # one task per node with its node's 4 GPUs: every GPU, not just local rank 0's
    one_per_node = {**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "2", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert plan_launch(one_per_node).kwargs["local_device_ids"] == [0, 1, 2, 3]
    assert (
        "local_device_ids" not in plan_launch({**SLURM_STEP, "CUDA_VISIBLE_DEVICES": "0,1"}).kwargs
    )


def test_explicit_settings_tpu_slices_and_bad_values():
    env = {
        "SCALING_COORDINATOR_ADDRESS": "host0:1234",
        "SCALING_NUM_PROCESSES": "2",
        "SCALING_PROCESS_ID": "1",
    }
    kwargs = {"coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1}
    assert plan_launch(env).kwargs == kwargs
    flags = plan_launch({}, coordinator="host0:1234", num_processes=2, process_id=1)
    assert flags.how == "explicit" and flags.kwargs == kwargs
    assert plan_launch(env, process_id=0).kwargs["process_id"] == 0  # flags win
    over_slurm = plan_launch({**SLURM_STEP, "SCALING_COORDINATOR_ADDRESS": "n1:99"})
    assert over_slurm.kwargs == {
        "cluster_detection_method": "slurm",
        "coordinator_address": "n1:99",
    }
    tpu = plan_launch({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"})
    assert tpu.how == "auto" and tpu.kwargs == {}  # initialize() without arguments
    assert plan_launch({"SCALING_DISTRIBUTED": "on"}).how == "auto"
    with pytest.raises(ConfigError, match="process_id missing"):
        plan_launch({}, coordinator="host0:1234", num_processes=2)
    with pytest.raises(ConfigError) as e:
        plan_launch({}, coordinator="host0:1234", num_processes=2, process_id=2)
    assert e.value.field == "process_id"
    with pytest.raises(ConfigError) as e:
        plan_launch({}, coordinator="host0", num_processes=2, process_id=0)
    assert e.value.field == "coordinator"
    with pytest.raises(ConfigError) as e:
        plan_launch({"SCALING_NUM_PROCESSES": "two"})
    assert e.value.field == "SCALING_NUM_PROCESSES"
    with pytest.raises(ConfigError) as e:
        plan_launch({"SCALING_DISTRIBUTED": "maybe"})
    assert e.value.field == "SCALING_DISTRIBUTED"


def test_a_process_already_running_jax_is_refused():
    import jax

    jax.devices()  # jax has started in this process
    plan = LaunchPlan("explicit", "2 processes", {"coordinator_address": "localhost:1"})
    with pytest.raises(ConfigError, match="before any other use of jax"):
        initialize(plan)


SWEEP = fake_grid(768, shapes=ONE_SHAPE)  # 2 runs of 12 steps


@pytest.mark.skipif(
    importlib.util.find_spec("submitit") is None, reason="submitit not installed (distributed)"
)
def test_a_sweep_job_of_two_tasks_trains_each_run_with_both(tmp_path, monkeypatch):
    """submitit's local executor runs each job as 2 tasks (as `srun` would on a cluster): both
    join one jax.distributed job, task 0 alone claims the run, and every run is done once."""
    from distributed_fake_train import train_together

    from scaling.io import read_jsonl
    from scaling.sweep.executor_options import ExecutorOptions
    from scaling.sweep.runner import run_sweep
    from scaling.sweep.store import RunStore

    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    for k, v in environment(1, tmp_path / "cache", FAKE_STEP_S="0.01").items():
        monkeypatch.setenv(k, v)
    options = ExecutorOptions(
        kind="slurm", cluster="local", time_min=5, retries=0, tasks_per_node=2, pack_size=1
    )
    out = tmp_path / "sweep"
    summary = run_sweep(spec, out, executor=options, train_fn=train_together, log=None)
    assert summary.counts() == {"done": 2}
    store = RunStore(out)
    for r in store.run_ids():
        run_dir = store.run_dir(r)
        assert len(read_jsonl(run_dir / "invocations.jsonl")) == 1  # trained once
        joined = [json.loads((run_dir / f"joined-{i}.json").read_text()) for i in (0, 1)]
        assert all(j["ranks"] == [0, 1] and j["devices"] == 2 for j in joined)
        assert joined[0]["pid"] != joined[1]["pid"]
        assert not (run_dir / "lease.json").exists()


def test_several_tasks_per_run_need_slurm_and_no_packing():
    from scaling.sweep.executor_options import ExecutorOptions, parse_executor

    ok = parse_executor({"kind": "slurm", "nodes_per_job": 2, "tasks_per_node": 4, "pack_size": 1})
    assert (ok.nodes_per_job, ok.tasks_per_node) == (2, 4)
    with pytest.raises(ConfigError) as e:
        parse_executor({"kind": "slurm", "tasks_per_node": 2})  # pack_size "auto"
    assert e.value.field == "executor.pack_size"
    with pytest.raises(ConfigError) as e:
        ExecutorOptions(kind="ray", nodes_per_job=2, pack_size=1)
    assert e.value.field == "executor.nodes_per_job"
    with pytest.raises(ConfigError) as e:
        parse_executor({"kind": "slurm", "tasks_per_node": 0})
    assert e.value.field == "executor.tasks_per_node"


def test_scaling_train_refuses_bad_process_settings_in_one_line(tmp_path, capsys):
    from scaling.cli.main import main

    base = ["train", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*base, "--coordinator", "host0", "--num-processes", "2", "--process-id", "0"]) == 2
    assert "coordinator = 'host0' is invalid" in capsys.readouterr().err
    assert main([*base, "--coordinator", "host0:1", "--num-processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "process_id missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written
