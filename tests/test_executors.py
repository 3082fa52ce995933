"""Executors: a sweep through submitit (its local executor, no SLURM) and through Ray (a local
cluster the test starts) gives the same results as the local executor; a Ray worker killed
mid-run is retried and every run is done exactly once; [executor] and flags are validated.

The sweeps use the fake train function (tests/sweep_fake_train.py), so they test the
executors, not the model; one test (slow) runs the real train() through all three.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from executor_fake_train import train_dies_once
from sweep_fake_train import fake_train
from tiny import fake_grid, synthetic_grid

from scaling.errors import ConfigError
from scaling.io import read_jsonl
from scaling.sweep.executor_options import ExecutorOptions, parse_executor, parse_time_min
from scaling.sweep.results import load_results
from scaling.sweep.runner import run_sweep
from scaling.sweep.spec import load_spec
from scaling.sweep.store import RunStore

TESTS = Path(__file__).parent
HAVE_RAY = importlib.util.find_spec("ray") is not None
HAVE_SUBMITIT = importlib.util.find_spec("submitit") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray not installed (scaling[distributed])")
needs_submitit = pytest.mark.skipif(
    not HAVE_SUBMITIT, reason="submitit not installed (scaling[distributed])"
)

SWEEP = fake_grid(768)  # 4 runs of 12 steps


def comparable(df):
    cols = ["wall_time", "tokens_per_s", "mfu"]
    return df.drop(columns=cols).sort_values(["run_id", "step"]).reset_index(drop=True)


def assert_each_run_once(out: Path, n: int) -> RunStore:
    store = RunStore(out)
    assert len(store.run_ids()) == n
    for r in store.run_ids():
        assert store.state(r) == "done"
        assert len(read_jsonl(store.run_dir(r) / "invocations.jsonl")) == 1, r
        assert not (store.run_dir(r) / "lease.json").exists()
    return store


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory):
    """The sweep file, and the environment every worker (local, submitit, Ray) starts with."""
    root = tmp_path_factory.mktemp("executors")
    spec = root / "sweep.toml"
    spec.write_text(SWEEP)
    markers = root / "markers"
    markers.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
        "FAKE_STEP_S": "0.02",
        "DIE_ONCE_MARKER_DIR": str(markers),
        "SCALING_CPU_DEVICES": "1",
    }
    saved = dict(os.environ)
    os.environ.update(env)
    yield root, spec, markers
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def local_results(sweep_env):
    root, spec, _ = sweep_env
    run_sweep(spec, root / "local", workers=2, train_fn=fake_train, poll_s=0.05, log=None)
    assert_each_run_once(root / "local", 4)
    return comparable(load_results(root / "local"))


@pytest.fixture(scope="module")
def ray_cluster(sweep_env):
    """A local Ray cluster (2 CPUs) whose workers see the tests folder and the env above."""
    if not HAVE_RAY:
        pytest.skip("ray not installed (scaling[distributed])")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_submitit
def test_submitit_local_executor_gives_the_local_results(sweep_env, local_results):
    root, spec, _ = sweep_env
    out = root / "submitit"
    options = ExecutorOptions(kind="slurm", cluster="local", time_min=5, retries=1)
    summary = run_sweep(spec, out, executor=options, train_fn=fake_train, poll_s=0.05, log=None)
    assert summary.counts() == {"done": 4} and len(summary.started) == 4
    assert_each_run_once(out, 4)
    assert list((out / "slurm").iterdir())  # submitit's job folders live in the sweep folder
    assert comparable(load_results(out)).equals(local_results)
    again = run_sweep(spec, out, executor=options, train_fn=fake_train, poll_s=0.05, log=None)
    assert again.started == []  # resume: nothing is missing, nothing is submitted


@needs_ray
def test_ray_executor_gives_the_local_results(sweep_env, local_results, ray_cluster):
    root, spec, _ = sweep_env
    out = root / "ray"
    options = ExecutorOptions(kind="ray", cpus_per_job=1, mem_gb=0.1)  # resources requested
    summary = run_sweep(spec, out, executor=options, train_fn=fake_train, poll_s=0.05, log=None)
    assert summary.counts() == {"done": 4}
    store = assert_each_run_once(out, 4)
    pids = {read_jsonl(store.run_dir(r) / "invocations.jsonl")[0]["pid"] for r in store.run_ids()}
    assert os.getpid() not in pids  # trained in Ray's worker processes
    assert comparable(load_results(out)).equals(local_results)


@needs_ray
def test_ray_worker_killed_mid_run_is_retried_and_every_run_done_once(
    sweep_env, local_results, ray_cluster
):
    root, spec, markers = sweep_env
    out = root / "ray-killed"
    from scaling.sweep.designs import plan

    victim = plan(load_spec(spec))[1].run_id
    (markers / "victim").write_text(victim)
    options = ExecutorOptions(kind="ray", cpus_per_job=1, retries=2)
    lines: list[str] = []
    summary = run_sweep(
        spec, out, executor=options, train_fn=train_dies_once, poll_s=0.05, log=lines.append
    )
    assert (markers / f"killed-{victim}").exists()  # the worker did die mid-run
    assert summary.counts() == {"done": 4}, lines
    assert summary.started.count(victim) == 1  # retried by Ray, not resubmitted by the runner
    store = RunStore(out)
    calls = read_jsonl(store.run_dir(victim) / "invocations.jsonl")
    assert len(calls) == 2 and calls[0]["start_step"] == 0 and calls[1]["start_step"] >= 4
    assert calls[0]["pid"] != calls[1]["pid"]  # a new worker process resumed its checkpoint
    for r in store.run_ids():
        assert store.state(r) == "done" and not (store.run_dir(r) / "lease.json").exists()
        if r != victim:
            assert len(read_jsonl(store.run_dir(r) / "invocations.jsonl")) == 1
    assert comparable(load_results(out)).equals(local_results)


@needs_submitit
def test_submitit_job_that_died_is_resubmitted_and_resumes(sweep_env, local_results):
    root, spec, markers = sweep_env
    out = root / "submitit-killed"
    from scaling.sweep.designs import plan

    victim = plan(load_spec(spec))[2].run_id
    (markers / "victim").write_text(victim)
    options = ExecutorOptions(kind="slurm", cluster="local", time_min=5, retries=1)
    lines: list[str] = []
    summary = run_sweep(
        spec, out, executor=options, train_fn=train_dies_once, poll_s=0.05, log=lines.append
    )
    assert (markers / f"killed-{victim}").exists()
    assert summary.counts() == {"done": 4}, lines
    assert summary.started.count(victim) == 2  # the runner submitted it again
    assert any(line.startswith(f"retry {victim}") for line in lines), lines
    calls = read_jsonl(RunStore(out).run_dir(victim) / "invocations.jsonl")
    assert len(calls) == 2 and calls[0]["start_step"] == 0 and calls[1]["start_step"] >= 4
    assert comparable(load_results(out)).equals(local_results)


@needs_submitit
def test_slurm_requeue_hook_releases_the_lease_and_resubmits_the_same_call(tmp_path):
    from scaling.sweep.designs import plan
    from scaling.sweep.executor_slurm import RunJob
    from scaling.sweep.runner import prepare_sweep_dir

    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    run = plan(load_spec(spec))[0]
    store = prepare_sweep_dir(load_spec(spec), [run], tmp_path / "out")
    lease = store.try_claim(run.run_id)  # as the job's own claim (this process)
    assert lease is not None and store.lease_is_live(store.read_lease(run.run_id))
    job = RunJob(heartbeat_s=5.0)
    again = job.checkpoint(str(store.root), run.run_id)  # what submitit calls on timeout
    assert store.read_lease(run.run_id) is None  # the requeued job can claim it at once
    assert again.function is job and again.args == (str(store.root), run.run_id)
    assert store.try_claim(run.run_id) is not None


REAL_SWEEP = synthetic_grid("2560")  # one run of 20 steps


@pytest.mark.slow
@needs_ray
@needs_submitit
def test_real_run_same_losses_through_every_executor(sweep_env, ray_cluster):
    root, _, _ = sweep_env
    spec = root / "real.toml"
    spec.write_text(REAL_SWEEP)
    finals = {}
    for options in (
        ExecutorOptions(),
        ExecutorOptions(kind="slurm", cluster="local", time_min=5),
        ExecutorOptions(kind="ray"),
    ):
        out = root / f"real-{options.kind}"
        summary = run_sweep(spec, out, executor=options, poll_s=0.1, log=None)
        assert summary.counts() == {"done": 1}, RunStore(out).read_status(summary.started[0])
        finals[options.kind] = comparable(load_results(out))
    assert finals["slurm"].equals(finals["local"])
    assert finals["ray"].equals(finals["local"])


# --- options: the [executor] table and flags --------------------------------------------------


def test_executor_table_is_parsed_and_flags_override_it(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        SWEEP
        + '[executor]\nkind = "slurm"\npartition = "gpu"\ntime = "1-02:30"\ngpus_per_job = 1\n'
        + 'slurm_extra = {account = "lab", qos = "high"}\n'
    )
    opts = load_spec(spec).executor
    assert (opts.kind, opts.partition, opts.gpus_per_job) == ("slurm", "gpu", 1)
    assert opts.time_min == 1590  # 1 day, 2 h 30 min
    assert opts.slurm_extra == {"account": "lab", "qos": "high"}
    over = opts.with_overrides(kind="ray", retries=0, partition=None)
    assert (over.kind, over.retries, over.partition) == ("ray", 0, "gpu")
    assert parse_time_min(90) == 90 and parse_time_min("00:00:30") == 1


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"kind": "k8s"}, "executor.kind"),
        ({"gpus_per_job": -1}, "executor.gpus_per_job"),
        ({"cpus_per_job": 0}, "executor.cpus_per_job"),
        ({"time": "25:61"}, "executor.time"),
        ({"time": 0}, "executor.time"),
        ({"retries": True}, "executor.retries"),
        ({"slurm_extra": ["account"]}, "executor.slurm_extra"),
        ({"cluster": "pbs"}, "executor.cluster"),
        ({"parition": "gpu"}, "executor.parition"),
    ],
)
def test_bad_executor_table_names_the_key(table, field):
    with pytest.raises(ConfigError) as e:
        parse_executor(table)
    assert e.value.field == field and "\n" not in str(e.value)


def test_cli_flags_errors_are_one_line(tmp_path, capsys):
    from scaling.cli.main import main

    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    assert main(["sweep", "run", str(spec), "--executor", "ray", "--cpus-per-job", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--cpus-per-job" in err and len(err.splitlines()) == 1


def test_missing_engine_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    with pytest.raises(ConfigError, match=r"pip install scaling\[distributed\]"):
        run_sweep(spec, tmp_path / "out", executor=ExecutorOptions(kind="ray"), log=None)


def test_slurm_without_sbatch_is_refused(tmp_path, monkeypatch):
    if not HAVE_SUBMITIT:
        pytest.skip("submitit not installed (scaling[distributed])")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    with pytest.raises(ConfigError, match="sbatch"):
        run_sweep(spec, tmp_path / "out", executor=ExecutorOptions(kind="slurm"), log=None)
