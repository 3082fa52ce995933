"""One run on several devices: a `data` x `fsdp` device mesh and the shardings of the train step.

The batch is split over both axes (every device computes on its own slice of the batch);
parameters and optimizer state are split over `fsdp`, each array along its largest dimension
that the axis size divides (arrays with none stay replicated). `data` alone is plain data
parallelism; `fsdp` alone is ZeRO-3-style sharding; XLA inserts the all-gathers and
reduce-scatters. The mesh changes how a run is computed, not what: it is not part of a run's
identity, and a checkpoint restores onto any mesh.

Several processes (hosts, after `scaling.train.distributed.initialize`): the mesh spans the
global device list and must use all of it; each process puts only the shards of its own
devices (`RunMesh.put`), cut from the same global batch, so the data order stays a pure function
of (data_seed, step) whatever the number of processes.
"""

from __future__ import annotations

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

    def put(self, tree: Any, sharding: Any) -> Any:
        """Arrays (the same global values on every process) onto `sharding` (one, or a pytree
        of them matching `tree`). One process: jax.device_put. Several: each process builds
        only its addressable shards from its copy (jax.make_array_from_callback), so no
        process needs another's data."""
        import jax

        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)

        def one(x: Any, s: Any) -> Any:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

        if isinstance(sharding, jax.sharding.Sharding):
            return jax.tree.map(lambda x: one(x, sharding), tree)
        return jax.tree.map(one, tree, sharding)


def default_batch_split(batch_size: int, n_devices: int, platform: str) -> int:
    """Devices the default layout splits a batch of `batch_size` over: all `n_devices` when
    they divide it, else one. On CPUs each keeps at least 2 sequences (else the largest
    divisor that does): XLA's CPU backend ran reductions over arrays with an axis of size 1
    ~10x slower (YNNPACK), so batch 2 on 2 host devices stepped ~15% slower than on one."""
    if batch_size % n_devices:
        return 1
    if platform != "cpu":
        return n_devices
    fits = [d for d in range(2, n_devices + 1) if batch_size % d == 0 and batch_size >= 2 * d]
    return max(fits, default=1)


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
    evenly and otherwise uses one device, keeping at least 2 sequences a device on CPUs
    (`default_batch_split`); explicit sizes must divide the batch. With several
    processes the mesh spans all their devices (every process must take part), so the batch
    must divide over all of them.
    """
    import jax
    from jax.sharding import Mesh

    several = jax.process_count() > 1
    devices = jax.devices() if several else jax.local_devices()
    data, fsdp = axis_sizes(mesh_config.data, mesh_config.fsdp, len(devices))
    if several and data * fsdp != len(devices):
        raise ConfigError(
            "mesh",
            f"data={data} x fsdp={fsdp}",
            f"all {len(devices)} devices of the {jax.process_count()} processes (data x fsdp)",
        )
    if mesh_config.data == ALL and mesh_config.fsdp == 1 and not several:
        data = default_batch_split(batch_size, data, devices[0].platform)
    elif batch_size % (data * fsdp):
        raise ConfigError(
            "train.batch_size", batch_size, f"a multiple of data x fsdp = {data * fsdp} (mesh)"
        )
    grid = np.array(devices[: data * fsdp]).reshape(data, fsdp)
    return RunMesh(Mesh(grid, AXES), data, fsdp)
