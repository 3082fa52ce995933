"""One run trained by several processes (hosts): whether and how to call
`jax.distributed.initialize`, and the few helpers the loop needs once it has been called.

`plan_launch()` decides from the environment (and explicit settings), without importing jax:
- `SCALING_DISTRIBUTED=off`: never (one process, as always).
- explicit settings, from `scaling train --coordinator/--num-processes/--process-id` or
  `SCALING_COORDINATOR_ADDRESS`, `SCALING_NUM_PROCESSES`, `SCALING_PROCESS_ID`: initialize
  with them (`num_processes = 1`: one process, nothing to call).
- a SLURM job step of several tasks (`srun -n N`, SLURM_STEP_NUM_TASKS > 1): initialize with
  JAX's SLURM detection (coordinator = the step's first node, port from the job id; count and
  rank from SLURM_NTASKS / SLURM_PROCID). A batch script's own process (no `srun`) is one
  process even in a multi-node allocation.
- a multi-host Cloud TPU slice seen in the environment (TPU_WORKER_HOSTNAMES or
  TPU_PROCESS_ADDRESSES listing several hosts), or `SCALING_DISTRIBUTED=on`: `initialize()`
  without arguments, as JAX documents for TPU pods (JAX finds the rest: TPU metadata, GKE,
  Open MPI, SLURM).
- otherwise one process: nothing is called and nothing changes.

`initialize()` must run before anything else uses jax in the process (JAX's rule); it is
idempotent. After it, the global device list spans every process; process 0 writes the run's
files, and every process takes part in each collective (steps, evaluations, checkpoints).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scaling.errors import ConfigError

MODES = ("auto", "on", "off")
ENV_MODE = "SCALING_DISTRIBUTED"
ENV_COORDINATOR = "SCALING_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SCALING_NUM_PROCESSES"
ENV_PROCESS_ID = "SCALING_PROCESS_ID"


@dataclass(frozen=True)
class LaunchPlan:
    """How this process was launched: `single` (nothing to do), `explicit`, `slurm` or `auto`
    (jax.distributed.initialize with `kwargs`), and why, in words."""

    how: str
    why: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def multiprocess(self) -> bool:
        return self.how != "single"


SINGLE = LaunchPlan("single", "one process")
_done: LaunchPlan | None = None  # the plan initialize() carried out in this process


def plan_launch(
    environ: Mapping[str, str] | None = None,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> LaunchPlan:
    """Decide whether (and with what) to call jax.distributed.initialize; imports no jax.
    Explicit arguments win over the SCALING_* variables of `environ` (default os.environ)."""
    env = os.environ if environ is None else environ
    mode = env.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(ENV_MODE, mode, " | ".join(MODES))
    if mode == "off":
        return SINGLE
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(env, ENV_NUM_PROCESSES, minimum=1)
    if process_id is None:
        process_id = _env_int(env, ENV_PROCESS_ID, minimum=0)
    slurm_tasks = _slurm_step_tasks(env)
    if coordinator is not None or num_processes is not None or process_id is not None:
        return _explicit(env, coordinator, num_processes, process_id, slurm_tasks)
    if slurm_tasks > 1:
        return _slurm(env, slurm_tasks)
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if "," in hosts:
        return LaunchPlan("auto", f"a TPU slice of {hosts.count(',') + 1} hosts")
    if mode == "on":
        return LaunchPlan("auto", f"{ENV_MODE}=on (JAX detects the cluster)")
    return SINGLE


def _explicit(
    env: Mapping[str, str],
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    slurm_tasks: int,
) -> LaunchPlan:
    if num_processes is not None and (isinstance(num_processes, bool) or num_processes < 1):
        raise ConfigError("num_processes", num_processes, "an integer >= 1")
    if num_processes == 1:
        return SINGLE
    kwargs: dict[str, Any] = {}
    if slurm_tasks > 1:  # SLURM fills in what was not given
        kwargs["cluster_detection_method"] = "slurm"
    elif coordinator is None or num_processes is None or process_id is None:
        missing = [
            name
            for name, v in (
                ("coordinator address", coordinator),
                ("num_processes", num_processes),
                ("process_id", process_id),
            )
            if v is None
        ]
        raise ConfigError(
            "distributed",
            ", ".join(missing) + " missing",
            "all three of coordinator address (host:port), num_processes and process_id "
            f"(flags --coordinator/--num-processes/--process-id or {ENV_COORDINATOR}, "
            f"{ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}) outside a SLURM job step",
        )
    if coordinator is not None:
        if ":" not in coordinator:
            raise ConfigError("coordinator", coordinator, "host:port, e.g. node001:12345")
        kwargs["coordinator_address"] = coordinator
    if num_processes is not None:
        kwargs["num_processes"] = num_processes
    if process_id is not None:
        if num_processes is not None and not 0 <= process_id < num_processes:
            raise ConfigError("process_id", process_id, f"0 .. {num_processes - 1}")
        kwargs["process_id"] = process_id
    n = num_processes or slurm_tasks
    return LaunchPlan("explicit", f"{n} processes (explicit settings)", kwargs)


def _slurm(env: Mapping[str, str], tasks: int) -> LaunchPlan:
    """JAX's SLURM detection, plus every GPU of the node when the step has one task per node
    (JAX otherwise gives each task only the GPU of its local rank)."""
    kwargs: dict[str, Any] = {"cluster_detection_method": "slurm"}
    nodes = _env_int(env, "SLURM_STEP_NUM_NODES", minimum=1) or 1
    gpus = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if tasks == nodes and len(gpus) > 1:
        kwargs["local_device_ids"] = list(range(len(gpus)))
    return LaunchPlan("slurm", f"a SLURM job step of {tasks} tasks on {nodes} node(s)", kwargs)


def _slurm_step_tasks(env: Mapping[str, str]) -> int:
    v = env.get("SLURM_STEP_NUM_TASKS", "")
    return int(v) if v.strip().isdigit() else 0


def _env_int(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        v = int(raw)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise ConfigError(name, raw, f"an integer >= {minimum}")
    return v


def initialize(plan: LaunchPlan | None = None) -> LaunchPlan:
    """Carry out `plan` (default: `plan_launch()`) once per process; returns the plan.
    A multi-process plan in a process whose jax has already started is refused: JAX must be
    initialized for several processes before anything else uses it."""
    global _done
    plan = plan_launch() if plan is None else plan
    if _done is not None or not plan.multiprocess:
        return _done or plan
    if _jax_backends_started():
        raise ConfigError(
            "launch",
            plan.why,
            "jax.distributed.initialize() before any other use of jax in the process "
            "(start the training process with `scaling train`, or call "
            "scaling.train.distributed.initialize() first)",
        )
    import jax

    jax.distributed.initialize(**plan.kwargs)
    _done = plan
    return plan


def _jax_backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def process_count() -> int:
    """Processes training this run: jax.process_count() once jax.distributed is up, else 1
    (without starting jax)."""
    if _done is None and not _client_exists():
        return 1
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0, or the only process)."""
    if process_count() == 1:
        return True
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the run gets here (no-op for one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's `flag`, on every process (for decisions that depend on local clocks)."""
    if process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))


def _client_exists() -> bool:
    """jax.distributed initialized by someone else (e.g. a user's own script)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import distributed as jax_distributed

        return jax_distributed.global_state.client is not None
    except (ImportError, AttributeError):
        return False
