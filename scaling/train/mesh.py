"""One run on several devices: a `data` x `fsdp` device mesh and the shardings of the train step.

The batch is split over both axes (every device computes on its own slice of the batch);
parameters and optimizer state are split over `fsdp`, each array along its largest dimension
that the axis size divides (arrays with none stay replicated). `data` alone is plain data
parallelism; `fsdp` alone is ZeRO-3-style sharding; XLA inserts the all-gathers and
reduce-scatters. The mesh changes how a run is computed, not what: it is not part of a run's
identity, and a checkpoint restores onto any mesh.

One process, one host: a run launched as several processes (a multi-task SLURM job step, a
multi-host TPU slice) is refused until jax.distributed training is implemented.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.errors import ConfigError

AXES = ("data", "fsdp")
ALL = "all"


@dataclass(frozen=True)
class RunMesh:
    """The mesh of one run and the shardings the loop uses."""

    mesh: Any
    data: int
    fsdp: int

    @property
    def size(self) -> int:
        return self.data * self.fsdp

    def replicated(self) -> Any:
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec())

    def batch(self) -> Any:
        """Leading (batch) dimension split over data and fsdp together."""
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(AXES))

    def state(self, tree: Any) -> Any:
        """A pytree of shardings for `tree` (parameters or optimizer state): each array split
        over `fsdp` along its largest dimension the axis divides, else replicated."""
        import jax
        from jax.sharding import NamedSharding

        return jax.tree.map(lambda x: NamedSharding(self.mesh, fsdp_spec(x.shape, self.fsdp)), tree)


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> Any:
    """PartitionSpec putting `fsdp` on the largest dimension it divides (ties: the first)."""
    from jax.sharding import PartitionSpec

    if fsdp == 1:
        return PartitionSpec()
    dims = [i for i, n in enumerate(shape) if n % fsdp == 0 and n >= fsdp]
    if not dims:
        return PartitionSpec()
    best = max(dims, key=lambda i: (shape[i], -i))
    return PartitionSpec(*[("fsdp" if i == best else None) for i in range(len(shape))])


def axis_sizes(data: Any, fsdp: Any, n_devices: int) -> tuple[int, int]:
    """Resolve the configured sizes ("all" = the devices the other axis leaves) against the
    devices there are."""
    for key, v in (("mesh.data", data), ("mesh.fsdp", fsdp)):
        if v != ALL and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(key, v, 'a positive integer or "all"')
    if data == ALL and fsdp == ALL:
        raise ConfigError("mesh.fsdp", fsdp, 'a size when mesh.data = "all" (one axis "all")')
    if data == ALL:
        data = max(1, n_devices // fsdp)
    if fsdp == ALL:
        fsdp = max(1, n_devices // data)
    if data * fsdp > n_devices:
        raise ConfigError(
            "mesh", f"data={data} x fsdp={fsdp}", f"at most the {n_devices} devices there are"
        )
    return data, fsdp


def make_mesh(mesh_config: Any, batch_size: int) -> RunMesh:
    """The run's mesh over the first data x fsdp devices of this process.

    The default (data = "all", fsdp = 1) shards the batch over every device when it divides
    evenly and otherwise uses one device; explicit sizes must divide the batch.
    """
    import jax
    from jax.sharding import Mesh

    devices = jax.local_devices()
    data, fsdp = axis_sizes(mesh_config.data, mesh_config.fsdp, len(devices))
    if batch_size % (data * fsdp):
        if mesh_config.data == ALL and mesh_config.fsdp == 1:
            data = 1
        else:
            raise ConfigError(
                "train.batch_size", batch_size, f"a multiple of data x fsdp = {data * fsdp} (mesh)"
            )
    grid = np.array(devices[: data * fsdp]).reshape(data, fsdp)
    return RunMesh(Mesh(grid, AXES), data, fsdp)


def multihost_environment() -> str | None:
    """Why this process looks like one of several launched to train one run, or None: a SLURM
    job step with several tasks (srun -n N), or a multi-host Cloud TPU slice."""
    ntasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if ntasks and ntasks.isdigit() and int(ntasks) > 1:
        return f"a SLURM job step of {ntasks} tasks"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        return f"a TPU slice of {hosts.count(',') + 1} hosts"
    return None


def refuse_multihost() -> None:
    """One run spans the devices of one process. Several processes started for one run would
    each train all of it and overwrite each other's files, so they are refused up front."""
    why = multihost_environment()
    if why is not None:
        raise ConfigError(
            "launch",
            why,
            "one process per run: training one run across hosts (jax.distributed) is not "
            "implemented yet; use one task per run (see docs/distributed.md)",
        )
