"""The `[executor]` table of a sweep file (and `scaling sweep run` flags): where runs execute.

    [executor]
    kind = "slurm"            # local | slurm | ray
    partition = "gpu"         # slurm
    time = "04:00:00"         # per job: minutes (int) or "[D-]HH:MM[:SS]"
    gpus_per_job = 1
    cpus_per_job = 8
    mem_gb = 64               # slurm --mem; ray: the task's memory resource
    retries = 2               # a job whose process/node died is run again (resumes its checkpoint)
    max_parallel = 32         # jobs at once (slurm: array parallelism; ray: tasks in flight)
    slurm_extra = {account = "my-lab", qos = "normal"}   # more sbatch options
    ray_address = "auto"      # ray: an existing cluster ("auto", "host:6379", "ray://host:10001")
    pack_size = "auto"        # runs of one shape trained together per job: "auto" | K (1: alone)
    nodes_per_job = 1         # slurm: one run over several nodes / processes (jax.distributed);
    tasks_per_node = 1        #   gpus_per_job and cpus_per_job are then per node / per task

None of it changes a run's result (a packed run's losses equal its unpacked ones to float32
rounding), so none of it enters a run's id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from scaling.errors import ConfigError

EXECUTOR_KINDS = ("local", "slurm", "ray")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")  # local/debug: submitit's own, for tests
_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,3}):(\d{2})(?::(\d{2}))?$")


@dataclass(frozen=True)
class ExecutorOptions:
    """Validated executor settings; every field has a default that works on one machine."""

    kind: str = "local"
    workers: int = 1
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_gb: float | None = None
    retries: int = 2
    max_parallel: int | None = None
    slurm_extra: dict[str, str] = field(default_factory=dict)
    cluster: str = "slurm"
    log_dir: str | None = None
    ray_address: str | None = None
    pack_size: int | str = "auto"  # see scaling.sweep.packing
    nodes_per_job: int = 1  # slurm: one run trained by nodes_per_job x tasks_per_node processes
    tasks_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nodes_per_job * self.tasks_per_node == 1:
            return
        if self.kind != "slurm":
            raise ConfigError(
                "executor.tasks_per_node" if self.tasks_per_node > 1 else "executor.nodes_per_job",
                max(self.tasks_per_node, self.nodes_per_job),
                f'1 with kind = "{self.kind}" (several processes per run: kind = "slurm")',
            )
        if self.pack_size != 1:
            raise ConfigError(
                "executor.pack_size",
                self.pack_size,
                "1 when a run spans several processes (nodes_per_job x tasks_per_node > 1)",
            )

    def with_overrides(self, **changes: Any) -> ExecutorOptions:
        """These options with the given keys (spec-file names) replaced; None means unchanged."""
        raw = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **_parse_fields(raw))


KEYS = (
    "kind",
    "workers",
    "partition",
    "time",
    "gpus_per_job",
    "cpus_per_job",
    "mem_gb",
    "retries",
    "max_parallel",
    "slurm_extra",
    "cluster",
    "log_dir",
    "ray_address",
    "pack_size",
    "nodes_per_job",
    "tasks_per_node",
)


def parse_executor(raw: Any) -> ExecutorOptions:
    """Validate an `[executor]` table; each problem is one ConfigError naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError("executor", raw, "a table with keys " + ", ".join(KEYS))
    return ExecutorOptions(**_parse_fields(raw))


def _parse_fields(raw: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in raw.items():
        name = "executor." + key
        if key == "kind":
            if v not in EXECUTOR_KINDS:
                raise ConfigError(name, v, " | ".join(EXECUTOR_KINDS))
            out["kind"] = v
        elif key in ("workers", "cpus_per_job", "max_parallel", "nodes_per_job", "tasks_per_node"):
            out[key] = _int(name, v, minimum=1)
        elif key in ("gpus_per_job", "retries"):
            out[key] = _int(name, v, minimum=0)
        elif key == "time":
            out["time_min"] = parse_time_min(v)
        elif key == "mem_gb":
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ConfigError(name, v, "a positive number of GB")
            if not math.isfinite(v):
                raise ConfigError(name, v, "a finite positive number of GB")
            out["mem_gb"] = float(v)
        elif key in ("partition", "log_dir", "ray_address"):
            if not isinstance(v, str) or not v:
                raise ConfigError(name, v, "a non-empty string")
            out[key] = v
        elif key == "pack_size":
            out["pack_size"] = parse_pack_size(v)
        elif key == "cluster":
            if v not in SUBMITIT_CLUSTERS:
                raise ConfigError(name, v, " | ".join(SUBMITIT_CLUSTERS))
            out["cluster"] = v
        elif key == "slurm_extra":
            ok = isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(x, str | int) and not isinstance(x, bool)
                for k, x in v.items()
            )
            if not ok:
                raise ConfigError(name, v, 'a table of sbatch options, e.g. {account = "lab"}')
            out["slurm_extra"] = {k: str(x) for k, x in v.items()}
        else:
            raise ConfigError(name, v, f"no key {key!r} here; known: {', '.join(KEYS)}")
    return out


def parse_time_min(v: Any) -> int:
    """A job's time limit in whole minutes: an int of minutes or "[D-]HH:MM[:SS]"."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = _TIME.match(v) if isinstance(v, str) else None
    if m:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        total = days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
        if total > 0 and minutes < 60 and seconds < 60:
            return total
    raise ConfigError(
        "executor.time", v, 'positive minutes (int) or "[D-]HH:MM[:SS]", e.g. "04:00:00"'
    )


def parse_pack_size(v: Any, field: str = "executor.pack_size") -> int | str:
    """ "auto" or a positive integer (1: one run per job)."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise ConfigError(field, v, '"auto" or an integer >= 1 (1: one run per job)')


def _int(name: str, v: Any, *, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(name, v, f"an integer >= {minimum}")
    return v
