"""One job, trained where an executor put it: claim its runs under the store's leases, train
them (one run, or a pack of runs trained together by `train_packed`), release.

`claim_and_train` is what a SLURM job or a Ray task calls, on any host that sees the sweep
folder. The store decides, exactly as for the local executor: a run that is done, diverged,
failed (unless retried) or held by a live lease is not touched; a `running` run whose owner
died resumes from its checkpoint. While training, a thread refreshes the leases' heartbeats, so
runners on other hosts see the runs as taken. A pack job trains only the members it could claim
(one member: `train`, as a single run); each member is claimed, resumed and recorded exactly as
a single run would be, so a killed pack leaves every member resumable alone or in a pack.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from scaling.sweep.store import DEFAULT_STALE_AFTER_S, TERMINAL_STATES, Lease, RunStore

TrainFn = Callable[..., Any]  # train(config, run_dir, resume=True, progress=False)
PackTrainFn = Callable[..., Any]  # train_packed(configs, run_dirs, resume=True)
LOST_LEASE_EXIT = 75  # exit code of a task that lost its lease to another runner


def train_claimed_run(store: RunStore, run_id: str, train_fn: TrainFn | None = None) -> None:
    """Train a run this process holds the lease of (resuming its checkpoint; a WSD branch
    first takes its parent's checkpoint). Exceptions propagate to the caller."""
    from scaling.train.config import RunConfig

    record = store.read_run(run_id)
    config = RunConfig.from_dict(record["config"])
    run_path = store.run_dir(run_id)
    parent = record.get("point", {}).get("init_from")
    if parent:
        from scaling.sweep.wsd import start_from_parent

        start_from_parent(run_path, store.run_dir(parent))
    if train_fn is None:
        from scaling.train import train as train_fn
    train_fn(config, run_path, resume=True, progress=False)


def train_claimed_runs(
    store: RunStore,
    run_ids: Sequence[str],
    train_fn: TrainFn | None = None,
    pack_train_fn: PackTrainFn | None = None,
) -> None:
    """Train runs this process holds the leases of: one alone (`train_claimed_run`), several
    as one pack (each WSD branch first takes its parent's checkpoint). The default packed
    trainer's pack is split, where it does not fit the device's memory, into packs trained one
    after another. Exceptions propagate to the caller."""
    if len(run_ids) == 1:
        train_claimed_run(store, run_ids[0], train_fn)
        return
    from scaling.train.config import RunConfig

    configs, dirs = [], []
    for run_id in run_ids:
        record = store.read_run(run_id)
        configs.append(RunConfig.from_dict(record["config"]))
        dirs.append(store.run_dir(run_id))
        parent = record.get("point", {}).get("init_from")
        if parent:
            from scaling.sweep.wsd import start_from_parent

            start_from_parent(dirs[-1], store.run_dir(parent))
    chunks = [list(range(len(configs)))]
    if pack_train_fn is None:
        from scaling.sweep.packing import device_chunks
        from scaling.train import train_packed as pack_train_fn

        chunks = device_chunks(configs)
    for chunk in chunks:
        pack_train_fn([configs[i] for i in chunk], [dirs[i] for i in chunk], resume=True)


def claim_and_train(
    sweep_dir: str,
    run_id: str | Sequence[str],
    *,
    train_fn: TrainFn | None = None,
    pack_train_fn: PackTrainFn | None = None,
    allow_failed: bool | Collection[str] = False,
    heartbeat_s: float = 10.0,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    cpu_devices: int | None = None,
) -> dict:
    """Claim `run_id` (or each run of a pack: a list of ids) in the sweep at `sweep_dir`, train
    what was claimed, release; returns {run_id, claimed, state, host, pid} for one run, and for
    a pack {run_ids, claimed: [ids], runs: [{run_id, claimed, state}], host, pid}.
    `allow_failed`: True, or the ids of failed runs that may be claimed (retry_failed). A crash
    in training marks the runs failed (with its traceback) and returns; an interrupt (job
    cancelled) leaves them resumable."""
    ids = [run_id] if isinstance(run_id, str) else list(run_id)
    store = RunStore(sweep_dir, stale_after_s=stale_after_s)
    leases: list[Lease] = []
    for r in ids:
        retry = allow_failed if isinstance(allow_failed, bool) else r in allow_failed
        lease = store.try_claim(r, allow_failed=retry)
        if lease is not None:
            leases.append(lease)
    claimed = [x.run_id for x in leases]
    if leases:
        _train_under_leases(store, leases, train_fn, pack_train_fn, cpu_devices, heartbeat_s)
    host = {"host": socket.gethostname(), "pid": os.getpid()}
    runs = [{"run_id": r, "claimed": r in claimed, "state": store.state(r)} for r in ids]
    if isinstance(run_id, str):
        return {**runs[0], **host}
    return {"run_ids": ids, "claimed": claimed, "runs": runs, **host}


def _train_under_leases(
    store: RunStore,
    leases: list[Lease],
    train_fn: TrainFn | None,
    pack_train_fn: PackTrainFn | None,
    cpu_devices: int | None,
    heartbeat_s: float,
) -> None:
    run_ids = [x.run_id for x in leases]
    _prepare_runtime(cpu_devices)
    stop = threading.Event()
    beat = threading.Thread(
        target=_keep_leases, args=(store, leases, heartbeat_s, stop), daemon=True, name="lease"
    )
    beat.start()
    try:
        train_claimed_runs(store, run_ids, train_fn, pack_train_fn)
    except Exception as e:
        for r in run_ids:
            store.mark_failed(r, f"{type(e).__name__}: {e}", traceback.format_exc())
        traceback.print_exc()
    finally:
        stop.set()
        beat.join()
        if sys.exc_info()[0] is not None:  # interrupted: the runs stay resumable
            for lease in leases:
                store.release(lease)
    for r in run_ids:
        if store.state(r) not in (*TERMINAL_STATES, "failed"):
            store.mark_failed(r, "train returned without a final state")
    for lease in leases:
        store.release(lease)


def _keep_leases(
    store: RunStore, leases: list[Lease], every_s: float, stop: threading.Event
) -> None:
    """Heartbeat the leases; if another runner broke one (we looked dead), stop at once (the
    other members resume from their checkpoints)."""
    while not stop.wait(every_s):
        for lease in leases:
            if not store.heartbeat(lease):
                print(f"lost the lease of {lease.run_id}; stopping", file=sys.stderr, flush=True)
                os._exit(LOST_LEASE_EXIT)


def _prepare_runtime(cpu_devices: int | None) -> None:
    """The training runtime's process setup (host-device split) before jax starts, as the
    local workers get it; a process that already runs jax keeps its devices."""
    if cpu_devices and "SCALING_CPU_DEVICES" not in os.environ:
        os.environ["SCALING_CPU_DEVICES"] = str(cpu_devices)
    from scaling.train.runtime import prepare_process

    prepare_process(reexec=False)


def sweep_path(path: str | Path) -> str:
    """The absolute path of a sweep folder, as remote tasks must be given it."""
    return str(Path(path).resolve())
