"""Which runs of a sweep train together in one packed job (`scaling.train.train_packed`), and
how many at most: the pack size.

`[executor] pack_size` (or `scaling sweep run --pack-size`) is "auto" (the default) or an
integer K >= 1; K = 1 trains one run per job, as before packing existed. Runs are packed only
with runs they can share a compiled step with (the fields of `packed.SHARED_FIELDS`: model
shape, batch size, data, optimizer constants, evaluation set); they may differ in seeds,
learning rate, schedule and length. Within a group, runs of similar length go together (a
member that has finished still occupies its slot until the pack ends).

The "auto" rule, per model shape:
1. a packing measurement cached for this machine (`benchmarks/packing.py --record`): the K
   with the best measured aggregate speedup over sequential runs, at the measured model size
   nearest to this one, if that speedup is at least PAYS (below it, on a shared machine, the
   gain is noise); else 1;
2. no measurement: on a CPU, 1 (measured on the 2-core CPU: packing gives 1.01-1.2x the
   aggregate tokens/s of one model, little to win, and K = 1 cannot lose); on an accelerator
   (`gpus_per_job` > 0, or a GPU/TPU on this machine for the local executor), MAX_AUTO for
   models of at most ACCELERATOR_MAX_N parameters (small models are launch-bound there), 1 above;
3. either way at most as many members as fit in half the memory (estimated per member by
   `member_bytes`: this host's for the local executor on a CPU, else `mem_gb` where set).
A set K is used as given; in every case the job checks its pack against its own device's
memory (`device_chunks`) and trains a pack that does not fit as smaller packs, one after
another. Packing never changes a run's id or files: each member resumes alone or in a pack.
"""

from __future__ import annotations

import glob
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scaling.io import atomic_write_json, canonical_json, read_json

AUTO = "auto"
MAX_AUTO = 16  # the largest pack "auto" forms (the target: 16 packed small models)
PAYS = 1.2  # measured speedup needed before "auto" packs
ACCELERATOR_MAX_N = 1e8  # without a measurement, "auto" packs models up to this N_total
MEMORY_FRACTION = 0.5  # of the memory a pack may plan to use
NO_CAP = 1 << 30  # memory_cap where the memory is unknown
MEASUREMENTS_FILE = "packing.json"  # in scaling.train.throughput.cache_dir()


def pack_key(config: Any) -> str | None:
    """Runs with equal keys can share a pack; None: a run trained alone (not a next-token
    objective, or an explicit device mesh)."""
    from scaling.train.packed import SHARED_FIELDS

    d = config.to_dict()
    if d["train"].get("objective", "causal") != "causal" or "mesh" in d:
        return None
    shared = {}
    for key in SHARED_FIELDS:
        section, _, name = key.partition(".")
        shared[key] = d[section].get(name) if name else d[section]
    return canonical_json(shared)


def member_bytes(config: Any) -> float:
    """A rough upper estimate of one member's memory in a pack: float32 parameters, gradients
    and two AdamW moments (16 bytes a parameter, x1.25 for temporaries), plus activations kept
    for the backward pass (per token and layer ~16 d_model + 2 heads x context floats, and the
    logits)."""
    from scaling import flops

    s = config.model
    n = flops.param_counts(s).N_total
    tokens = config.train.batch_size * s.context
    per_token = s.n_layers * (16 * s.d_model + 2 * s.n_heads * s.context) + 3 * s.vocab_size
    return 20.0 * n + 4.0 * tokens * per_token


def memory_cap(config: Any, available_bytes: float | None) -> int:
    """How many members of this config fit in MEMORY_FRACTION of `available_bytes`."""
    if not available_bytes or available_bytes <= 0:
        return NO_CAP
    return max(1, int(MEMORY_FRACTION * available_bytes // member_bytes(config)))


def host_memory_bytes() -> float | None:
    """MemAvailable of this machine (Linux), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def local_accelerator() -> bool:
    """Whether the local executor's workers will see a GPU or TPU, judged without starting JAX
    here (that would take the device's memory from the workers): JAX_PLATFORMS if set, else
    NVIDIA or TPU device files."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms:
        return any(p in platforms for p in ("cuda", "gpu", "tpu", "rocm"))
    return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/accel*"))


# --- measurements --------------------------------------------------------------------------
def machine_key(platform_name: str, device_kind: str) -> str:
    """Measurements are kept per CPU host, or per accelerator kind."""
    if platform_name == "cpu":
        return f"cpu:{platform.node()}"
    return f"accelerator:{device_kind}"


def _measurements_path() -> Any:
    from scaling.train.throughput import cache_dir

    return cache_dir() / MEASUREMENTS_FILE


def record_measurements(rows: list[dict]) -> None:
    """Cache benchmark rows (benchmarks/packing.py: device platform and kind, N_total, K,
    speedup) for the "auto" rule; a new measurement of a (machine, N_total, K) replaces the old."""
    path = _measurements_path()
    try:
        entries = read_json(path)
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict):
        entries = {}
    for r in rows:
        key = machine_key(r["platform"], r["device"])
        mine = [
            e
            for e in entries.get(key, [])
            if (e.get("N_total"), e.get("K")) != (r["N_total"], r["K"])
        ]
        mine.append({"N_total": r["N_total"], "K": r["K"], "speedup": r["speedup"]})
        entries[key] = mine
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entries)


def load_measurements(accelerator: bool) -> list[dict]:
    """This machine's cached packing measurements (CPU: this host's; accelerator: any kind's)."""
    try:
        entries = read_json(_measurements_path())
    except (OSError, ValueError):
        return []
    if not isinstance(entries, dict):
        return []
    if accelerator:
        keys = [k for k in entries if k.startswith("accelerator:")]
    else:
        keys = [machine_key("cpu", "")]
    return [e for k in keys for e in entries.get(k, []) if isinstance(e, dict)]


def measured_choice(n_total: float, measurements: list[dict]) -> tuple[int, float] | None:
    """(K, speedup) measured best at the measured size nearest n_total (in log N), or None."""
    sizes = {float(e["N_total"]) for e in measurements if e.get("N_total")}
    if not sizes:
        return None
    nearest = min(sizes, key=lambda s: abs(math.log(s / n_total)))
    at = [e for e in measurements if float(e.get("N_total") or 0) == nearest]
    best = max(at, key=lambda e: float(e["speedup"]))
    return int(best["K"]), float(best["speedup"])


# --- the policy ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PackPolicy:
    """The pack size for each run's shape, and why."""

    setting: int | str  # "auto" or K
    accelerator: bool
    measurements: tuple[dict, ...] = ()
    memory_bytes: float | None = None
    disabled_why: str = ""  # non-empty: every pack is one run, for this reason

    def size_for(self, config: Any) -> int:
        """The largest pack this run may be in."""
        if self.disabled_why:
            return 1
        if self.setting != AUTO:
            return int(self.setting)
        from scaling import flops

        n = flops.param_counts(config.model).N_total
        measured = measured_choice(n, list(self.measurements))
        if measured is not None:
            k = measured[0] if measured[1] >= PAYS else 1
        elif self.accelerator:
            k = MAX_AUTO if n <= ACCELERATOR_MAX_N else 1
        else:
            k = 1
        return min(k, memory_cap(config, self.memory_bytes)) if k > 1 else 1

    def speedup(self, config: Any, k: int) -> float:
        """The aggregate speedup a pack of k is expected to give (1 where none is measured)."""
        if k <= 1:
            return 1.0
        from scaling import flops

        n = flops.param_counts(config.model).N_total
        measured = measured_choice(n, list(self.measurements))
        if measured is not None and measured[0] == k:
            return max(1.0, measured[1])
        return 1.0

    def describe(self) -> str:
        """One line for the plan table and the runner's log."""
        if self.disabled_why:
            return f"pack size 1 ({self.disabled_why})"
        where = "accelerator" if self.accelerator else "CPU"
        if self.setting != AUTO:
            return f"pack size {self.setting} (set)"
        if self.measurements:
            return f"pack size auto on {where}: from cached packing measurements (>= {PAYS}x)"
        if self.accelerator:
            return (
                f"pack size auto on {where}: up to {MAX_AUTO} for N_total <= "
                f"{ACCELERATOR_MAX_N:.0e} (no measurement cached), within memory"
            )
        return "pack size auto on CPU: 1 (no packing measurement cached for this host)"


def pack_policy(options: Any, *, can_pack: bool = True) -> PackPolicy:
    """The policy for a sweep run with these executor options; `can_pack` False (a custom
    train function without a packed one) trains every run alone."""
    accelerator = options.gpus_per_job > 0 or (options.kind == "local" and local_accelerator())
    if not can_pack:
        return PackPolicy(
            options.pack_size, accelerator, disabled_why="no packed train function given"
        )
    measurements: tuple[dict, ...] = ()
    if options.pack_size == AUTO:
        measurements = tuple(load_measurements(accelerator))
    memory = None
    if options.kind == "local" and not accelerator:
        memory = host_memory_bytes()
    elif options.mem_gb:
        memory = options.mem_gb * 2**30
    return PackPolicy(options.pack_size, accelerator, measurements, memory)


def form_packs(
    runs: Sequence[tuple[str, Any]],
    size_for: Callable[[Any], int],
    key_for: Callable[[str, Any], str | None] | None = None,
) -> list[list[str]]:
    """Split (run_id, config) pairs into packs: runs that can share one (equal `pack_key`),
    similar lengths together, at most `size_for(config)` each, as few packs as that allows and
    of even sizes (7 runs at K = 4: 4 + 3). Packs come in the order of their first run; a run
    that cannot be packed is a pack of one. `key_for(run_id, config)`: a cached `pack_key`."""
    groups: dict[str, list[tuple[int, str, Any]]] = {}
    sizes: dict[str, int] = {}
    packs: list[tuple[int, list[str]]] = []
    for i, (run_id, config) in enumerate(runs):
        k = size_for(config)
        key_of = key_for or (lambda _r, c: pack_key(c))
        key = key_of(run_id, config) if k > 1 else None
        if key is None:
            packs.append((i, [run_id]))
            continue
        key = f"{k}|{key}"
        groups.setdefault(key, []).append((i, run_id, config))
        sizes[key] = k
    for key, members in groups.items():
        members = sorted(members, key=lambda m: (m[2].total_steps, m[0]))
        n_packs = math.ceil(len(members) / sizes[key])  # as few packs as K allows, even sizes
        start = 0
        for j in range(n_packs):
            end = start + len(members) // n_packs + (j < len(members) % n_packs)
            chunk = members[start:end]
            start = end
            packs.append((min(m[0] for m in chunk), [m[1] for m in chunk]))
    packs.sort(key=lambda p: p[0])
    return [p for _i, p in packs]


def device_chunks(configs: list[Any]) -> list[list[int]]:
    """Indices of `configs` split so each pack fits in MEMORY_FRACTION of the device this
    process trains on (accelerator memory, else the host's available memory)."""
    import jax

    available = None
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        try:
            available = float((device.memory_stats() or {}).get("bytes_limit") or 0) or None
        except Exception:  # no memory stats on this backend: no cap
            available = None
    else:
        available = host_memory_bytes()
    cap = min(memory_cap(c, available) for c in configs) if configs else 1
    idx = list(range(len(configs)))
    return [idx[i : i + cap] for i in range(0, len(idx), cap)]
