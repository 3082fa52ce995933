"""Sharded training on 4 CPU devices (XLA host devices, in a subprocess): data parallel, FSDP
and both give the losses of one device, and a checkpoint written on 4 devices resumes on 1.

Tolerance: train and eval losses (~3-4 nats, float32) agree within TOL = 1e-5 absolute.
Splitting the batch and the parameters changes only the order of float32 sums: measured
differences were <= 2e-7 after 20 AdamW steps (TOL leaves 50x room). The two subprocess tests
compile 5 runs: ~4 min on 2 heavily loaded cores, hence `slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from host_devices import run_on_host_devices

from scaling.train.mesh import axis_sizes, default_batch_split, fsdp_spec

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
MESHES = {
    "one": {"data": 1, "fsdp": 1},
    "data4": {"data": 4, "fsdp": 1},
    "fsdp4": {"data": 1, "fsdp": 4},
}
CRASHED_MESH = {"data": 2, "fsdp": 2}  # crashes after its checkpoint; resumed on one device

SCRIPT = r"""
import json, sys
from pathlib import Path
import jax
from scaling.io import read_jsonl
from scaling.train import RunConfig, train
from scaling.train import loop, mesh

jobs = json.loads(sys.argv[1])
out = {"devices": jax.device_count(), "runs": {}, "sharded_leaves": {}}
real_state = mesh.RunMesh.state
seen = []
def recording_state(self, tree):
    shardings = real_state(self, tree)
    seen.append(sum(any(a is not None for a in s.spec) for s in jax.tree.leaves(shardings)))
    return shardings
mesh.RunMesh.state = recording_state
real_check = loop.check_loss
for name, config, run_dir, crash_at in jobs:
    def check(guards, state, step, loss, crash_at=crash_at):
        if crash_at and step == crash_at:
            raise RuntimeError("simulated crash")
        return real_check(guards, state, step, loss)
    loop.check_loss = check
    seen.clear()
    try:
        out["runs"][name] = train(RunConfig.from_dict(config), Path(run_dir)).rows
    except RuntimeError as e:
        out["runs"][name] = {"error": str(e), "rows": read_jsonl(Path(run_dir) / "metrics.jsonl")}
    out["sharded_leaves"][name] = seen[0] if seen else None
print("RESULT " + json.dumps(out))
"""


def run_jobs(jobs: list, devices: int, cache: Path) -> dict:
    return run_on_host_devices(SCRIPT, devices, cache, json.dumps(jobs))


def config(mesh: dict) -> dict:
    return {**CONFIG, "mesh": mesh}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    cache = root / "cache"
    jobs = [[n, config(m), str(root / n), None] for n, m in MESHES.items()]
    jobs.append(["crashed", config(CRASHED_MESH), str(root / "resumed"), 15])
    four = run_jobs(jobs, 4, cache)
    one = run_jobs([["resumed", config({}), str(root / "resumed"), None]], 1, cache)
    return four, one


def losses(rows: list[dict]) -> list[tuple[int, float, float]]:
    return [(r["step"], r["train_loss"], r["eval_loss"]) for r in rows]


def assert_close(rows, reference):
    assert [r[0] for r in rows] == [r[0] for r in reference]
    for (step, train_a, eval_a), (_, train_b, eval_b) in zip(rows, reference, strict=True):
        assert abs(train_a - train_b) <= TOL, (step, train_a, train_b)
        assert abs(eval_a - eval_b) <= TOL, (step, eval_a, eval_b)


@pytest.mark.slow
def test_data_parallel_and_fsdp_give_the_losses_of_one_device(results):
    four, _ = results
    assert four["devices"] == 4
    reference = losses(four["runs"]["one"])
    assert [r[0] for r in reference] == [5, 12, 20] and reference[-1][2] < reference[0][2]
    for name in ("data4", "fsdp4"):
        assert_close(losses(four["runs"][name]), reference)
    crashed = four["runs"]["crashed"]  # data 2 x fsdp 2, up to its crash at step 15
    assert_close(losses(crashed["rows"]), reference[:2])
    n_leaves = four["sharded_leaves"]
    assert n_leaves["one"] == 0 and n_leaves["data4"] == 0  # replicated parameters
    assert n_leaves["fsdp4"] > 0 and n_leaves["crashed"] > 0  # split over fsdp


@pytest.mark.slow
def test_checkpoint_written_on_4_devices_resumes_on_1(results):
    four, one = results
    assert four["runs"]["crashed"]["error"] == "simulated crash"  # after its checkpoint at 10
    assert one["devices"] == 1
    rows = one["runs"]["resumed"]
    assert [r["step"] for r in rows] == [5, 12, 20]
    assert_close(losses(rows), losses(four["runs"]["one"]))


def test_axis_sizes_and_fsdp_specs():
    assert axis_sizes("all", 1, 8) == (8, 1)
    assert axis_sizes(2, "all", 8) == (2, 4)
    assert axis_sizes("all", 4, 8) == (2, 4)
    from scaling.errors import ConfigError

    with pytest.raises(ConfigError, match="devices"):
        axis_sizes(4, 4, 8)
    with pytest.raises(ConfigError, match=r"mesh\.fsdp"):
        axis_sizes("all", "all", 8)
    with pytest.raises(ConfigError, match=r"mesh\.data"):
        axis_sizes(0, 1, 8)
    assert tuple(fsdp_spec((64, 32), 4)) == ("fsdp", None)
    assert tuple(fsdp_spec((3, 2, 16), 4)) == (None, None, "fsdp")
    assert tuple(fsdp_spec((3,), 4)) == ()
    assert tuple(fsdp_spec((64, 32), 1)) == ()


def test_mesh_setting_is_validated_and_not_part_of_a_runs_identity():
    from scaling.errors import ConfigError
    from scaling.sweep.designs import run_id_for
    from scaling.train.config import RunConfig

    base = RunConfig()
    assert "mesh" not in base.to_dict()  # the default: config.json and run ids as before
    sharded = base.with_overrides(["mesh.fsdp=4", "mesh.data=all"])
    assert (sharded.mesh.data, sharded.mesh.fsdp) == ("all", 4)
    assert RunConfig.from_dict(sharded.to_dict()) == sharded
    assert run_id_for(sharded) == run_id_for(base)
    for bad, field in ((["mesh.fsdp=0"], "mesh.fsdp"), (["mesh.data=two"], "mesh.data")):
        with pytest.raises(ConfigError) as e:
            base.with_overrides(bad)
        assert e.value.field == field


def test_default_batch_split_keeps_two_sequences_a_cpu_device():
    # All devices when they divide the batch, else one; on CPUs at least 2 sequences a device.
    assert default_batch_split(8, 2, "cpu") == 2
    assert default_batch_split(7, 2, "cpu") == 1
    assert default_batch_split(2, 2, "cpu") == 1
    assert default_batch_split(8, 8, "cpu") == 4
    assert default_batch_split(6, 6, "cpu") == 3
    assert default_batch_split(1, 1, "cpu") == 1
    assert default_batch_split(2, 2, "gpu") == 2  # the size-1 slowdown is XLA's CPU backend's
    assert default_batch_split(12, 8, "gpu") == 1
