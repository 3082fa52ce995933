"""The `ray` executor: one Ray task per job (a run, or a pack of runs), with CPU/GPU requests,
on an existing cluster (`ray_address`) or on a local one started for the sweep.

Each task calls `claim_and_train` on the sweep folder, which every node must see at the same
path (shared storage). A task whose worker process or node died is retried by Ray (up to
`retries` times); the retry claims the run again and resumes it from its checkpoint. Errors
inside training are not retried: they mark the run failed, as with the local executor.
"""

from __future__ import annotations

from typing import Any

from scaling.errors import ConfigError
from scaling.sweep.executor_options import ExecutorOptions
from scaling.sweep.launchers import JobEnd, Launch, import_engine
from scaling.sweep.store import RunStore
from scaling.sweep.task import PackTrainFn, TrainFn, claim_and_train, sweep_path


class RayLauncher:
    name = "ray"
    claims_in_task = True
    resubmits = 0  # Ray retries a task whose worker died (max_retries)

    def __init__(
        self,
        options: ExecutorOptions,
        store: RunStore,
        *,
        train_fn: TrainFn | None,
        heartbeat_s: float,
        pack_train_fn: PackTrainFn | None = None,
    ):
        self.ray = import_engine("ray", "ray")
        self.started_ray = False
        if not self.ray.is_initialized():
            try:
                self.ray.init(
                    address=options.ray_address,
                    include_dashboard=False,
                    logging_level="warning",
                    log_to_driver=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as e:
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ConfigError(
                    "executor.ray_address", options.ray_address, f"a reachable Ray cluster ({why})"
                ) from e
            self.started_ray = True
        self.capacity = options.max_parallel
        resources: dict[str, Any] = {
            "num_cpus": options.cpus_per_job,
            "num_gpus": options.gpus_per_job,
        }
        if options.mem_gb is not None:
            resources["memory"] = int(options.mem_gb * 2**30)
        self.remote = self.ray.remote(claim_and_train).options(
            **resources, max_retries=options.retries, retry_exceptions=False, name="scaling-run"
        )
        self.kwargs = {
            "train_fn": train_fn,
            "pack_train_fn": pack_train_fn,
            "heartbeat_s": heartbeat_s,
            "stale_after_s": store.stale_after_s,
            "cpu_devices": None if options.gpus_per_job else options.cpus_per_job,
        }
        self.sweep_dir = sweep_path(store.root)

    def start(self, launches: list[Launch]) -> list[Any]:
        return [
            self.remote.remote(self.sweep_dir, x.target, allow_failed=x.retry, **self.kwargs)
            for x in launches
        ]

    def poll(self, ref: Any) -> JobEnd | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return JobEnd(result=self.ray.get(ref))
        except self.ray.exceptions.RayError as e:  # worker/node died past its retries, cancelled
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return JobEnd(error=f"ray task failed: {type(e).__name__}: {first[:300]}")

    def stop(self, ref: Any) -> None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_ray:
            self.ray.shutdown()
