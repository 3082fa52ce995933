"""The `slurm` executor: each batch of ready jobs (a run, or a pack of runs) is one SLURM job
array, through submitit.

Every job calls `claim_and_train` on the shared sweep folder. A job that times out or is
preempted is requeued by submitit (up to `retries` times) and resumes from its checkpoint; one
whose node died is submitted again by the runner (up to `retries` times). `cluster = "local"`
or `"debug"` runs the same jobs through submitit's local executors, without SLURM.

A job of several tasks (`nodes_per_job` x `tasks_per_node` > 1) trains one run with all of
them (jax.distributed, see scaling.train.distributed): task 0 claims the run and holds its
lease; the other tasks train along once it has, and process 0 alone writes the run's files.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.sweep.executor_options import ExecutorOptions
from scaling.sweep.launchers import JobEnd, Launch, import_engine
from scaling.sweep.store import Lease, RunStore
from scaling.sweep.task import PackTrainFn, TrainFn, claim_and_train, sweep_path

LOG_DIR = "slurm"  # in the sweep folder: submitit's pickles and job logs
RESULT_GRACE_S = 15.0  # a finished job's result file may show up late on a shared file system
MAX_ARRAY = 1000  # jobs per array (SLURM's default MaxArraySize is 1001)


class RunJob:
    """The callable a SLURM job runs (`run_id`: one run, or a pack's list). Its `checkpoint`
    (submitit calls it on timeout or preemption) releases the runs' leases and asks for the
    same call again: the requeued job resumes each run from its checkpoint."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def __call__(self, sweep_dir: str, run_id: str | list[str]) -> dict:
        plan = job_launch_plan()
        if not plan.multiprocess:
            return claim_and_train(sweep_dir, run_id, **self.kwargs)
        return self._train_together(plan, sweep_dir, run_id)

    def _train_together(self, plan: Any, sweep_dir: str, run_id: str | list[str]) -> dict:
        """Every task of the job trains the one run; task 0 claims it (and tells the others
        whether it did: one broadcast), the others follow the claimed run's config."""
        from scaling.train import distributed
        from scaling.train.config import RunConfig

        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        if len(ids) != 1:
            raise ConfigError("executor.pack_size", len(ids), "1 for jobs of several tasks")
        cpu = self.kwargs.get("cpu_devices")
        if cpu and "SCALING_CPU_DEVICES" not in os.environ:
            os.environ["SCALING_CPU_DEVICES"] = str(cpu)
        from scaling.train.runtime import prepare_process

        prepare_process(reexec=False)  # before jax starts, as claim_and_train would
        distributed.initialize(plan)
        import jax

        train_fn = self.kwargs.get("train_fn")
        if train_fn is None:
            from scaling.train import train as train_fn
        if jax.process_index() == 0:
            started: list[bool] = []

            def together(config: Any, run_dir: Any, **kw: Any) -> Any:
                started.append(distributed.agree(True))  # the others start with us
                return train_fn(config, run_dir, **kw)

            try:
                return claim_and_train(sweep_dir, run_id, **{**self.kwargs, "train_fn": together})
            finally:
                if not started:
                    distributed.agree(False)  # not claimed: the others stop too
        result = {"run_id": ids[0], "claimed": False, "process": jax.process_index()}
        if not distributed.agree(False):
            return result
        store = RunStore(sweep_dir)
        config = RunConfig.from_dict(store.read_run(ids[0])["config"])
        train_fn(config, store.run_dir(ids[0]), resume=True, progress=False)
        return {**result, "state": store.state(ids[0])}

    def checkpoint(self, sweep_dir: str, run_id: str | list[str]) -> Any:
        import submitit

        store = RunStore(sweep_dir)
        for r in [run_id] if isinstance(run_id, str) else run_id:
            lease = store.read_lease(r)
            if lease and lease.get("pid") == os.getpid():  # ours: the requeued job may claim it
                store.release(Lease(r, lease["token"], lease["host"], lease["pid"]))
        return submitit.helpers.DelayedSubmission(self, sweep_dir, run_id)


def job_launch_plan() -> Any:
    """How this job's task was launched: SLURM's variables (several tasks in the job step), or
    submitit's local executor's (cluster = "local": tasks on this machine, coordinator on
    localhost); one task: nothing to initialize."""
    from scaling.train.distributed import plan_launch

    plan = plan_launch()
    if plan.multiprocess:
        return plan
    try:
        import submitit

        env = submitit.JobEnvironment()
        n, rank, job_id = env.num_tasks, env.global_rank, env.job_id
    except Exception:  # not inside a submitit job
        return plan
    if n <= 1:
        return plan
    digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
    port = int(digits) % 4096 + 61440  # as JAX picks for SLURM: one port per job
    host = "localhost" if env.cluster == "local" else env.hostnames[0]
    return plan_launch(coordinator=f"{host}:{port}", num_processes=n, process_id=rank)


class SlurmLauncher:
    name = "slurm"
    claims_in_task = True

    def __init__(
        self,
        options: ExecutorOptions,
        store: RunStore,
        *,
        train_fn: TrainFn | None,
        heartbeat_s: float,
        pack_train_fn: PackTrainFn | None = None,
    ):
        submitit = import_engine("submitit", "slurm")
        if options.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "executor.cluster",
                "slurm",
                "a machine with SLURM's sbatch on PATH (cluster = 'local' runs the jobs here)",
            )
        self.options = options
        self.store = store
        self.capacity = options.max_parallel
        self.resubmits = options.retries
        folder = Path(options.log_dir) if options.log_dir else store.root / LOG_DIR
        self.executor = submitit.AutoExecutor(
            folder=str(folder / "%j"),
            cluster=options.cluster,
            slurm_max_num_timeout=options.retries,
        )
        params: dict[str, Any] = {
            "name": f"scaling-{store.root.name}",
            "timeout_min": options.time_min,
            "cpus_per_task": options.cpus_per_job,
            "gpus_per_node": options.gpus_per_job,
            "tasks_per_node": options.tasks_per_node,
            "nodes": options.nodes_per_job,
        }
        if options.mem_gb is not None:
            params["mem_gb"] = options.mem_gb
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.max_parallel:
            params["slurm_array_parallelism"] = options.max_parallel
        if options.slurm_extra:
            params["slurm_additional_parameters"] = dict(options.slurm_extra)
        self.executor.update_parameters(**params)
        self.call = RunJob(
            train_fn=train_fn,
            pack_train_fn=pack_train_fn,
            heartbeat_s=heartbeat_s,
            stale_after_s=store.stale_after_s,
            cpu_devices=None if options.gpus_per_job else options.cpus_per_job,
        )
        self.sweep_dir = sweep_path(store.root)
        self.ended_at: dict[str, float] = {}
        self.grace_s = RESULT_GRACE_S if options.cluster == "slurm" else 1.0

    def start(self, launches: list[Launch]) -> list[Any]:
        """Submit the jobs (runs or packs) as one job array (a single job: one job)."""
        jobs = []
        for i in range(0, len(launches), MAX_ARRAY):  # SLURM caps an array's size
            with self.executor.batch():
                for x in launches[i : i + MAX_ARRAY]:
                    jobs.append(self.executor.submit(self._with_retry(x), self.sweep_dir, x.target))
        return jobs

    def _with_retry(self, launch: Launch) -> RunJob:
        if not launch.allow_failed:
            return self.call
        return RunJob(**{**self.call.kwargs, "allow_failed": launch.retry})

    def poll(self, job: Any) -> JobEnd | None:
        """Non-blocking: a finished job's result once its pickle is there; a job that ended
        without one (killed, node lost) counts as died after RESULT_GRACE_S (file-system lag)."""
        try:
            if not job.done():
                return None
            main = job.task(0) if job.num_tasks > 1 else job  # several tasks: task 0 claims
            if self.options.cluster != "debug" and not main.paths.result_pickle.exists():
                first = self.ended_at.setdefault(job.job_id, time.monotonic())
                if time.monotonic() - first < self.grace_s:
                    return None
                return JobEnd(error=f"slurm job {job.job_id} ended ({job.state}) without a result")
            return JobEnd(result=main.result())
        except Exception as e:  # the job failed (node failure, cancelled, out of memory, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return JobEnd(error=f"slurm job {job.job_id} failed: {first[:300]}")

    def stop(self, job: Any) -> None:
        if not job.done():
            job.cancel(check=False)

    def close(self) -> None:
        pass
