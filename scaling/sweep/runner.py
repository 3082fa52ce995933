"""The local executor: runs what a sweep is missing in worker processes, one run each.

`done` and `diverged` runs are results and never run again; `failed` ones only with
`retry_failed`; a `running` run whose owner died (stale lease) resumes from its checkpoint.
Claims go through the run store, so several runners on one folder share the work. Each worker
is a fresh (spawned) process with its own JAX; it dies with the runner, and a crash in it marks
the run failed without stopping the sweep.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.io import atomic_write_json, atomic_write_text, read_json
from scaling.sweep.designs import PlannedRun, plan
from scaling.sweep.spec import SweepSpec, load_spec
from scaling.sweep.store import PLAN_FILE, TERMINAL_STATES, Lease, RunStore

TrainFn = Callable[..., Any]
SPEC_COPY = "sweep.toml"
WORKER_LOG = "worker.log"


@dataclass
class SweepSummary:
    """What one runner did, and the states of the sweep's runs when it stopped."""

    started: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.states.values():
            out[s] = out.get(s, 0) + 1
        return out


def prepare_sweep_dir(spec: SweepSpec, runs: list[PlannedRun], out_dir: str | Path) -> RunStore:
    """Write sweep.toml (a copy of the sweep file), plan.json and each run's run.json; all
    atomic and idempotent, so runners started together write the same files."""
    store = RunStore(out_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    if spec.source_text:
        atomic_write_text(store.root / SPEC_COPY, spec.source_text)
    atomic_write_json(
        store.root / PLAN_FILE,
        {
            "name": spec.name,
            "convention": spec.convention,
            "runs": [{"run_id": r.run_id, "point": r.point} for r in runs],
        },
    )
    for r in runs:
        store.add_run(r.run_id, r.record())
    return store


def stray_runs(store: RunStore, runs: list[PlannedRun]) -> list[str]:
    """Run folders from an earlier plan of this folder (kept, but not in its results)."""
    planned = {r.run_id for r in runs}
    return [r for r in store.run_ids() if r not in planned]


def run_sweep(
    spec: SweepSpec | str | Path,
    out_dir: str | Path,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    train_fn: TrainFn | None = None,
    poll_s: float = 0.2,
    heartbeat_s: float = 10.0,
    stale_after_s: float | None = None,
    log: Callable[[str], None] | None = print,
) -> SweepSummary:
    """Plan the sweep and run every run it is missing; returns when none is left to run here.

    `train_fn(config, run_dir, resume=True, progress=False)` defaults to `scaling.train.train`;
    it must be importable by name (a module-level function), since workers are spawned.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    runs = plan(spec)  # raises on a bad sweep before anything is written
    store = prepare_sweep_dir(spec, runs, out_dir)
    if stale_after_s is not None:
        store.stale_after_s = stale_after_s
    stray = stray_runs(store, runs)
    if stray and log:
        log(f"note: {len(stray)} run folders from an earlier plan are kept, not in this plan")
    runner = _Runner(store, [r.run_id for r in runs], workers, retry_failed, train_fn, log)
    with _sigterm_as_interrupt():
        return runner.loop(poll_s, heartbeat_s)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the runner like Ctrl-C: workers stopped, leases released, runs resumable."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Runner:
    def __init__(
        self,
        store: RunStore,
        run_ids: list[str],
        workers: int,
        retry_failed: bool,
        train_fn: TrainFn | None,
        log: Callable[[str], None] | None,
    ):
        self.store = store
        self.run_ids = run_ids
        self.workers = max(1, workers)
        self.train_fn = train_fn
        self.log = log or (lambda _msg: None)
        self.retryable = {r for r in run_ids if retry_failed and store.state(r) == "failed"}
        # A run that starts from another's final checkpoint (WSD) waits for it to be done.
        self.parents = {r: store.read_run(r).get("point", {}).get("init_from") for r in run_ids}
        self.attempted: set[str] = set()
        self.final: dict[str, str] = {}
        self.active: dict[str, tuple[Any, Lease, float]] = {}
        self.summary = SweepSummary()
        self.ctx = mp.get_context("spawn")

    def state(self, run_id: str) -> str:
        """The run's state; a result (done/diverged) is final, so it is cached."""
        if run_id in self.final:
            return self.final[run_id]
        state = self.store.state(run_id)
        if state in TERMINAL_STATES:
            self.final[run_id] = state
        return state

    def needs_run(self, run_id: str) -> bool:
        state = self.state(run_id)
        if state in TERMINAL_STATES:
            return False
        if state == "failed":
            return run_id in self.retryable and run_id not in self.attempted
        parent = self.parents.get(run_id)
        if parent and self.state(parent) != "done":
            if self.state(parent) == "diverged":
                self.store.mark_failed(run_id, f"the run it starts from ({parent}) diverged")
                return False
            return self.needs_run(parent)  # waits for its parent, unless that will not run
        return True

    def loop(self, poll_s: float, heartbeat_s: float) -> SweepSummary:
        last_beat = time.monotonic()
        try:
            while True:
                self.reap()
                if time.monotonic() - last_beat >= heartbeat_s:
                    self.beat()
                    last_beat = time.monotonic()
                self.fill()
                if not self.active and not any(self.needs_run(r) for r in self.run_ids):
                    break
                time.sleep(poll_s if self.active else max(poll_s, 1.0))
        finally:
            self.stop_all()
        self.summary.states = {r: self.store.state(r) for r in self.run_ids}
        return self.summary

    def fill(self) -> None:
        for run_id in self.run_ids:
            if len(self.active) >= self.workers:
                return
            if run_id in self.active or not self.needs_run(run_id):
                continue
            parent = self.parents.get(run_id)
            if parent and self.state(parent) != "done":
                continue
            lease = self.store.try_claim(run_id, allow_failed=run_id in self.retryable)
            if lease is None:
                continue
            self.start(run_id, lease)

    def start(self, run_id: str, lease: Lease) -> None:
        resumed = self.store.state(run_id) == "running"
        proc = self.ctx.Process(
            target=worker_main,
            args=(str(self.store.run_dir(run_id)), self.train_fn, os.getpid()),
            name=f"sweep-{run_id}",
        )
        with _worker_environment(self.workers):
            proc.start()
        self.store.add_process(lease, proc.pid)
        self.active[run_id] = (proc, lease, time.monotonic())
        self.attempted.add(run_id)
        self.summary.started.append(run_id)
        done = sum(self.store.state(r) in TERMINAL_STATES for r in self.run_ids)
        verb = "resume" if resumed else "start"
        self.log(f"{verb} {run_id}  ({done}/{len(self.run_ids)} finished)")

    def reap(self) -> None:
        for run_id, (proc, lease, t0) in list(self.active.items()):
            if proc.is_alive():
                continue
            proc.join()
            state = self.store.state(run_id)
            if state not in (*TERMINAL_STATES, "failed"):
                why = f"worker exited with code {proc.exitcode} before the run finished"
                if proc.exitcode is not None and proc.exitcode < 0:
                    why = f"worker killed by signal {-proc.exitcode}"
                self.store.mark_failed(run_id, why)
                state = "failed"
            self.store.release(lease)
            del self.active[run_id]
            extra = ""
            if state == "failed":
                extra = ": " + str((self.store.read_status(run_id) or {}).get("error", ""))[:200]
            self.log(f"{state} {run_id}  {time.monotonic() - t0:.1f}s{extra}")

    def beat(self) -> None:
        for run_id, (proc, lease, _t0) in list(self.active.items()):
            if not self.store.heartbeat(lease):
                self.log(f"lost the lease of {run_id}; stopping its worker")
                proc.kill()
                proc.join()
                del self.active[run_id]

    def stop_all(self) -> None:
        """On exit (normal or interrupted): stop workers; their runs resume next time."""
        for _run_id, (proc, lease, _t0) in list(self.active.items()):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            self.store.release(lease)
        self.active.clear()


@contextlib.contextmanager
def _worker_environment(workers: int) -> Iterator[None]:
    """The environment a worker starts with: the training runtime's allocator (tcmalloc,
    preloaded at exec) and the CPU cores shared among the workers as XLA host devices."""
    from scaling.train.runtime import cpu_device_count, find_tcmalloc, tuning_enabled

    saved = dict(os.environ)
    try:
        if tuning_enabled():
            lib = find_tcmalloc()
            if lib and lib not in os.environ.get("LD_PRELOAD", ""):
                os.environ["LD_PRELOAD"] = ":".join(
                    p for p in (lib, os.environ.get("LD_PRELOAD")) if p
                )
                os.environ.setdefault("TCMALLOC_RELEASE_RATE", "0")
            if "SCALING_CPU_DEVICES" not in saved:
                os.environ["SCALING_CPU_DEVICES"] = str(max(1, cpu_device_count() // workers))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def worker_main(run_dir: str, train_fn: TrainFn | None, parent_pid: int) -> None:
    """A worker process: train one planned run (resuming its checkpoint), record a crash."""
    _die_with_parent(parent_pid)
    from scaling.train.runtime import prepare_process

    prepare_process(reexec=False)  # before jax is imported: the host-device split
    run_path = Path(run_dir)
    log = open(run_path / WORKER_LOG, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    store = RunStore(run_path.parent.parent)
    run_id = run_path.name
    try:
        from scaling.train.config import RunConfig

        record = read_json(run_path / "run.json")
        config = RunConfig.from_dict(record["config"])
        parent = record.get("point", {}).get("init_from")
        if parent:
            from scaling.sweep.wsd import start_from_parent

            start_from_parent(run_path, run_path.parent / parent)
        if train_fn is None:
            from scaling.train import train as train_fn
        train_fn(config, run_path, resume=True, progress=False)
    except BaseException as e:
        store.mark_failed(run_id, f"{type(e).__name__}: {e}", traceback.format_exc())
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    if store.state(run_id) not in (*TERMINAL_STATES, "failed"):
        store.mark_failed(run_id, "train returned without a final state")


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the runner dies (SIGKILL included): prctl on Linux, plus a watchdog thread."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
