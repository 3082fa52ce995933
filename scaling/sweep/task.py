"""One run, trained where an executor put it: claim it under the store's lease, train, release.

`claim_and_train` is what a SLURM job or a Ray task calls, on any host that sees the sweep
folder. The store decides, exactly as for the local executor: a run that is done, diverged,
failed (unless retried) or held by a live lease is not touched; a `running` run whose owner
died resumes from its checkpoint. While training, a thread refreshes the lease's heartbeat, so
runners on other hosts see the run as taken.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.sweep.store import DEFAULT_STALE_AFTER_S, TERMINAL_STATES, Lease, RunStore

TrainFn = Callable[..., Any]
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


def claim_and_train(
    sweep_dir: str,
    run_id: str,
    *,
    train_fn: TrainFn | None = None,
    allow_failed: bool = False,
    heartbeat_s: float = 10.0,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    cpu_devices: int | None = None,
) -> dict:
    """Claim `run_id` in the sweep at `sweep_dir`, train it, release it; returns
    {run_id, claimed, state, host, pid}. A crash in training marks the run failed (with its
    traceback) and returns; an interrupt (job cancelled) leaves it resumable."""
    store = RunStore(sweep_dir, stale_after_s=stale_after_s)
    lease = store.try_claim(run_id, allow_failed=allow_failed)
    result = {"run_id": run_id, "claimed": lease is not None, "host": socket.gethostname()}
    result["pid"] = os.getpid()
    if lease is None:
        return {**result, "state": store.state(run_id)}
    _prepare_runtime(cpu_devices)
    stop = threading.Event()
    beat = threading.Thread(
        target=_keep_lease, args=(store, lease, heartbeat_s, stop), daemon=True, name="lease"
    )
    beat.start()
    try:
        train_claimed_run(store, run_id, train_fn)
    except Exception as e:
        store.mark_failed(run_id, f"{type(e).__name__}: {e}", traceback.format_exc())
        traceback.print_exc()
    finally:
        stop.set()
        beat.join()
        if sys.exc_info()[0] is not None:  # interrupted: the run stays resumable
            store.release(lease)
    if store.state(run_id) not in (*TERMINAL_STATES, "failed"):
        store.mark_failed(run_id, "train returned without a final state")
    store.release(lease)
    return {**result, "state": store.state(run_id)}


def _keep_lease(store: RunStore, lease: Lease, every_s: float, stop: threading.Event) -> None:
    """Heartbeat the lease; if another runner broke it (we looked dead), stop at once."""
    while not stop.wait(every_s):
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
