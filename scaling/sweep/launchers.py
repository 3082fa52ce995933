"""Executors as the runner sees them: something that starts runs and says when each ended.

The runner (scaling.sweep.runner) owns the loop: which runs are ready, in what order, what a
finished job means for the store. A launcher only starts and watches jobs:
- `local` (scaling.sweep.runner.LocalLauncher): spawned processes on this machine; the runner
  claims each run before starting it and heartbeats the lease;
- `slurm` (scaling.sweep.executor_slurm): a submitit job array per batch of ready runs;
- `ray` (scaling.sweep.executor_ray): one Ray task per run.
Remote jobs call `scaling.sweep.task.claim_and_train`: they claim the run themselves, so the
store's lease, not the launcher, decides who trains what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from scaling.errors import ConfigError
from scaling.sweep.executor_options import ExecutorOptions
from scaling.sweep.store import Lease, RunStore

DISTRIBUTED_HINT = "pip install scaling[distributed]"


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: `error` says why if it ended without ending its run (died, cancelled,
    lost); `result` is what `claim_and_train` returned, when it returned."""

    error: str | None = None
    result: dict | None = None


@dataclass(frozen=True)
class Launch:
    """A run to start: its id, the runner's lease (local) or None (the job claims it), and
    whether a failed run may be claimed (retry_failed)."""

    run_id: str
    lease: Lease | None
    allow_failed: bool = False


class Launcher(Protocol):
    name: str
    claims_in_task: bool  # the job claims its run (remote) rather than the runner (local)
    capacity: int | None  # runs at once (None: as many as are ready)
    resubmits: int  # times the runner starts a run again after its job died (0: engine's own)

    def start(self, launches: list[Launch]) -> list[Any]: ...

    def poll(self, job: Any) -> JobEnd | None: ...

    def stop(self, job: Any) -> None: ...

    def close(self) -> None: ...


def make_launcher(
    options: ExecutorOptions, store: RunStore, *, train_fn: Any, heartbeat_s: float
) -> Launcher:
    """The launcher for `options.kind`; slurm and ray import their engine only here."""
    if options.kind == "local":
        from scaling.sweep.runner import LocalLauncher

        return LocalLauncher(store, options.workers, train_fn)
    if options.kind == "slurm":
        from scaling.sweep.executor_slurm import SlurmLauncher

        return SlurmLauncher(options, store, train_fn=train_fn, heartbeat_s=heartbeat_s)
    if options.kind == "ray":
        from scaling.sweep.executor_ray import RayLauncher

        return RayLauncher(options, store, train_fn=train_fn, heartbeat_s=heartbeat_s)
    raise ConfigError("executor.kind", options.kind, "local | slurm | ray")


def import_engine(module: str, executor: str) -> Any:
    """Import submitit or ray, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = (str(e).splitlines() or [""])[0]
        raise ConfigError(
            "--executor", executor, f"{module} installed: {DISTRIBUTED_HINT} ({why})"
        ) from e
