"""Executors as the runner sees them: something that starts jobs and says when each ended. A
job trains one run, or a pack of runs of one shape (scaling.sweep.packing) in one program.

The runner (scaling.sweep.runner) owns the loop: which runs are ready, in what order, what a
finished job means for the store. A launcher only starts and watches jobs:
- `local` (scaling.sweep.runner.LocalLauncher): spawned processes on this machine; the runner
  claims each run before starting it and heartbeats the lease;
- `slurm` (scaling.sweep.executor_slurm): a submitit job array per batch of ready jobs;
- `ray` (scaling.sweep.executor_ray): one Ray task per job.
Remote jobs call `scaling.sweep.task.claim_and_train`: they claim their runs themselves, so the
store's leases, not the launcher, decide who trains what.
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
    """How a job ended: `error` says why if it ended without ending its runs (died, cancelled,
    lost); `result` is what `claim_and_train` returned, when it returned."""

    error: str | None = None
    result: dict | None = None

    def run_results(self) -> dict[str, dict]:
        """`result` per run id: {claimed, state, ...} (a single run's or each pack member's)."""
        if self.result is None:
            return {}
        runs = self.result.get("runs", [self.result])
        return {r["run_id"]: r for r in runs if isinstance(r, dict) and "run_id" in r}


@dataclass(frozen=True)
class Launch:
    """A job to start: its runs (one, or a pack), the runner's lease on each (local) or None
    (the job claims them), and the failed runs among them that may be claimed (retry_failed)."""

    run_ids: tuple[str, ...]
    leases: tuple[Lease | None, ...]
    allow_failed: frozenset[str] = frozenset()

    @property
    def target(self) -> str | list[str]:
        """What `claim_and_train` is called with: a run id, or the list of a pack's."""
        return self.run_ids[0] if len(self.run_ids) == 1 else list(self.run_ids)

    @property
    def retry(self) -> bool | list[str]:
        """`claim_and_train`'s allow_failed for this job."""
        if len(self.run_ids) == 1:
            return self.run_ids[0] in self.allow_failed
        return sorted(self.allow_failed)


class Launcher(Protocol):
    name: str
    claims_in_task: bool  # the job claims its runs (remote) rather than the runner (local)
    capacity: int | None  # jobs at once (None: as many as are ready)
    resubmits: int  # times the runner starts a run again after its job died (0: engine's own)

    def start(self, launches: list[Launch]) -> list[Any]: ...

    def poll(self, job: Any) -> JobEnd | None: ...

    def stop(self, job: Any) -> None: ...

    def close(self) -> None: ...


def make_launcher(
    options: ExecutorOptions,
    store: RunStore,
    *,
    train_fn: Any,
    heartbeat_s: float,
    pack_train_fn: Any = None,
) -> Launcher:
    """The launcher for `options.kind`; slurm and ray import their engine only here."""
    fns = {"train_fn": train_fn, "pack_train_fn": pack_train_fn}
    if options.kind == "local":
        from scaling.sweep.runner import LocalLauncher

        return LocalLauncher(store, options.workers, **fns)
    if options.kind == "slurm":
        from scaling.sweep.executor_slurm import SlurmLauncher

        return SlurmLauncher(options, store, heartbeat_s=heartbeat_s, **fns)
    if options.kind == "ray":
        from scaling.sweep.executor_ray import RayLauncher

        return RayLauncher(options, store, heartbeat_s=heartbeat_s, **fns)
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
