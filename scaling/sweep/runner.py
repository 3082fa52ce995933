"""The sweep runner: runs what a sweep is missing through an executor (local worker
processes by default; SLURM or Ray, see scaling.sweep.launchers). A job trains one run, or a
pack of ready runs of one shape trained together (scaling.sweep.packing: `pack_size`).

`done` and `diverged` runs are results and never run again; `failed` ones only with
`retry_failed`; a `running` run whose owner died (stale lease) resumes from its checkpoint.
Claims go through the run store, one per run (a pack's members each), so several runners on
one folder share the work. A local worker is a fresh (spawned) process with its own JAX; it
dies with the runner, and a crash in it marks its runs failed without stopping the sweep.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scaling.io import atomic_write_json, atomic_write_text
from scaling.sweep.designs import PlannedRun, plan
from scaling.sweep.executor_options import ExecutorOptions
from scaling.sweep.launchers import JobEnd, Launch, Launcher, make_launcher
from scaling.sweep.packing import PackPolicy, form_packs, pack_key, pack_policy
from scaling.sweep.spec import SweepSpec, load_spec
from scaling.sweep.store import PLAN_FILE, TERMINAL_STATES, Lease, RunStore
from scaling.sweep.task import PackTrainFn, TrainFn, train_claimed_runs

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
    workers: int | None = None,
    retry_failed: bool = False,
    train_fn: TrainFn | None = None,
    pack_train_fn: PackTrainFn | None = None,
    executor: ExecutorOptions | None = None,
    pack_size: int | str | None = None,
    poll_s: float = 0.2,
    heartbeat_s: float = 10.0,
    stale_after_s: float | None = None,
    log: Callable[[str], None] | None = print,
) -> SweepSummary:
    """Plan the sweep and run every run it is missing; returns when none is left to run here.

    `executor` defaults to the sweep file's `[executor]` (local processes unless it says
    otherwise); `workers` overrides its worker count, `pack_size` its pack size ("auto" or K;
    see scaling.sweep.packing). `train_fn(config, run_dir, resume=True, progress=False)`
    defaults to `scaling.train.train`, `pack_train_fn(configs, run_dirs, resume=True)` to
    `scaling.train.train_packed`; both must be importable by name (module-level functions),
    since workers are spawned or run remotely. A custom `train_fn` without a `pack_train_fn`
    trains every run alone.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    options = executor or spec.executor
    if workers is not None:
        options = replace(options, workers=max(1, workers))
    if pack_size is not None:
        options = options.with_overrides(pack_size=pack_size)
    runs = plan(spec)  # raises on a bad sweep before anything is written
    store = RunStore(out_dir)
    if stale_after_s is not None:
        store.stale_after_s = stale_after_s
    policy = pack_policy(options, can_pack=train_fn is None or pack_train_fn is not None)
    # The executor first: a missing engine or cluster is refused before anything is written.
    launcher = make_launcher(
        options, store, train_fn=train_fn, pack_train_fn=pack_train_fn, heartbeat_s=heartbeat_s
    )
    try:
        prepare_sweep_dir(spec, runs, out_dir)
        stray = stray_runs(store, runs)
        if stray and log:
            log(f"note: {len(stray)} run folders from an earlier plan are kept, not in this plan")
        if log and (policy.setting != 1 or policy.disabled_why):
            log(policy.describe())
        configs = {r.run_id: r.config for r in runs}
        runner = _Runner(store, [r.run_id for r in runs], launcher, retry_failed, log)
        runner.set_packing(policy, configs)
        with _sigterm_as_interrupt():
            return runner.loop(poll_s, heartbeat_s)
    finally:
        launcher.close()


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


@dataclass
class _Job:
    """A started job: its handle, its runs (one, or a pack), the runner's leases, start time."""

    handle: Any
    run_ids: tuple[str, ...]
    leases: tuple[Lease | None, ...]
    t0: float


class _Runner:
    """The loop every executor shares: start what is ready (WSD branches after their parent),
    in packs where the policy packs, watch the jobs, record what a job that died could not,
    stop everything on exit."""

    def __init__(
        self,
        store: RunStore,
        run_ids: list[str],
        launcher: Launcher,
        retry_failed: bool,
        log: Callable[[str], None] | None,
    ):
        self.store = store
        self.run_ids = run_ids
        self.launcher = launcher
        self.log = log or (lambda _msg: None)
        self.retryable = {r for r in run_ids if retry_failed and store.state(r) == "failed"}
        # A run that starts from another's final checkpoint (WSD) waits for it to be done.
        self.parents = {r: store.read_run(r).get("point", {}).get("init_from") for r in run_ids}
        self.attempted: set[str] = set()
        self.final: dict[str, str] = {}
        self.active: dict[str, _Job] = {}  # by the job's first run id
        self.in_flight: set[str] = set()  # the runs of active jobs
        self.resubmitted: dict[str, int] = {}
        self.summary = SweepSummary()
        self.policy: PackPolicy | None = None
        self.configs: dict[str, Any] = {}
        self.keys: dict[str, str | None] = {}

    def set_packing(self, policy: PackPolicy, configs: dict[str, Any]) -> None:
        """Pack ready runs by `policy` (run_id -> RunConfig in `configs`); default: alone."""
        self.policy, self.configs = policy, configs

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

    def ready(self) -> list[str]:
        """Runs to start now: needed, not in a job, their parent done, not held by another."""
        out = []
        for run_id in self.run_ids:
            if run_id in self.in_flight or not self.needs_run(run_id):
                continue
            parent = self.parents.get(run_id)
            if parent and self.state(parent) != "done":
                continue
            if self.launcher.claims_in_task and self.store.lease_is_live(
                self.store.read_lease(run_id)
            ):
                continue  # the job claims; skip runs others hold now
            out.append(run_id)
        return out

    def packs(self, run_ids: list[str]) -> list[list[str]]:
        """The ready runs as jobs: packs by the policy, else one run each."""
        if self.policy is None or not self.configs:
            return [[r] for r in run_ids]
        return form_packs(
            [(r, self.configs[r]) for r in run_ids], self.policy.size_for, self._pack_key
        )

    def _pack_key(self, run_id: str, config: Any) -> str | None:
        if run_id not in self.keys:  # computed once per run: fill() runs every poll
            self.keys[run_id] = pack_key(config)
        return self.keys[run_id]

    def fill(self) -> None:
        capacity = self.launcher.capacity
        free = None if capacity is None else capacity - len(self.active)
        if free is not None and free <= 0:
            return
        launches: list[Launch] = []
        for pack in self.packs(self.ready()):
            if free is not None and len(launches) >= free:
                break
            leases: list[Lease | None] = []
            members: list[str] = []
            for run_id in pack:
                if self.launcher.claims_in_task:
                    lease = None
                else:
                    lease = self.store.try_claim(run_id, allow_failed=run_id in self.retryable)
                    if lease is None:
                        continue
                members.append(run_id)
                leases.append(lease)
            if members:
                retry = frozenset(r for r in members if r in self.retryable)
                launches.append(Launch(tuple(members), tuple(leases), retry))
        if not launches:
            return
        resumed = {r: self.store.state(r) == "running" for x in launches for r in x.run_ids}
        handles = self.launcher.start(launches)
        done = sum(self.store.state(r) in TERMINAL_STATES for r in self.run_ids)
        where = "" if self.launcher.name == "local" else f" [{self.launcher.name}]"
        for launch, handle in zip(launches, handles, strict=True):
            job = _Job(handle, launch.run_ids, launch.leases, time.monotonic())
            self.active[launch.run_ids[0]] = job
            self.in_flight.update(launch.run_ids)
            self.attempted.update(launch.run_ids)
            self.summary.started.extend(launch.run_ids)
            pack = f" (pack of {len(launch.run_ids)})" if len(launch.run_ids) > 1 else ""
            for run_id in launch.run_ids:
                verb = "resume" if resumed[run_id] else "start"
                self.log(f"{verb} {run_id}  ({done}/{len(self.run_ids)} finished){pack}{where}")

    def reap(self) -> None:
        for key, job in list(self.active.items()):
            end = self.launcher.poll(job.handle)
            if end is None:
                continue
            self._forget(key)
            for lease in job.leases:
                if lease is not None:
                    self.store.release(lease)
            results = end.run_results()
            for run_id in job.run_ids:
                self._record_end(run_id, end, results.get(run_id), job.t0)

    def _record_end(self, run_id: str, end: JobEnd, result: dict | None, t0: float) -> None:
        state = self.store.state(run_id)
        if end.result is not None and not (result or {}).get("claimed"):
            self.log(f"skip {run_id}: {state}, held by another runner or finished")
            return
        if end.error and state not in (*TERMINAL_STATES, "failed"):
            if self.resubmitted.get(run_id, 0) < self.launcher.resubmits:
                self.resubmitted[run_id] = self.resubmitted.get(run_id, 0) + 1
                self.log(f"retry {run_id}: {end.error}")
                return  # state stays running: the next fill starts it again, resuming
            self.store.mark_failed(run_id, end.error)
            state = "failed"
        extra = ""
        if state == "failed":
            extra = ": " + str((self.store.read_status(run_id) or {}).get("error", ""))[:200]
        self.log(f"{state} {run_id}  {time.monotonic() - t0:.1f}s{extra}")

    def _forget(self, key: str) -> None:
        job = self.active.pop(key)
        self.in_flight.difference_update(job.run_ids)

    def beat(self) -> None:
        """Heartbeat the leases this runner holds (local workers); remote jobs beat their own.
        A job that lost any of its leases is stopped; its other runs resume later."""
        for key, job in list(self.active.items()):
            lost = [
                lease.run_id
                for lease in job.leases
                if lease is not None and not self.store.heartbeat(lease)
            ]
            if lost:
                self.log(f"lost the lease of {', '.join(lost)}; stopping its worker")
                self.launcher.stop(job.handle)
                for lease in job.leases:
                    if lease is not None:
                        self.store.release(lease)
                self._forget(key)

    def stop_all(self) -> None:
        """On exit (normal or interrupted): stop jobs; their runs resume next time."""
        for job in list(self.active.values()):
            self.launcher.stop(job.handle)
            for lease in job.leases:
                if lease is not None:
                    self.store.release(lease)
        self.active.clear()
        self.in_flight.clear()


class LocalLauncher:
    """The local executor: one spawned worker process per job (a run or a pack), `workers` at
    once. Each worker dies with the runner, and a crash in it marks its runs failed without
    stopping the sweep."""

    name = "local"
    claims_in_task = False
    resubmits = 0

    def __init__(
        self,
        store: RunStore,
        workers: int,
        train_fn: TrainFn | None,
        pack_train_fn: PackTrainFn | None = None,
    ):
        self.store = store
        self.capacity = max(1, workers)
        self.train_fn = train_fn
        self.pack_train_fn = pack_train_fn
        self.ctx = mp.get_context("spawn")

    def start(self, launches: list[Launch]) -> list[Any]:
        procs = []
        for launch in launches:
            dirs = [str(self.store.run_dir(r)) for r in launch.run_ids]
            proc = self.ctx.Process(
                target=worker_main,
                args=(dirs, self.train_fn, os.getpid(), self.pack_train_fn),
                name=f"sweep-{launch.run_ids[0]}",
            )
            with _worker_environment(self.capacity):
                proc.start()
            for lease in launch.leases:
                assert lease is not None
                self.store.add_process(lease, proc.pid)
            procs.append(proc)
        return procs

    def poll(self, proc: Any) -> JobEnd | None:
        if proc.is_alive():
            return None
        proc.join()
        why = f"worker exited with code {proc.exitcode} before the run finished"
        if proc.exitcode is not None and proc.exitcode < 0:
            why = f"worker killed by signal {-proc.exitcode}"
        return JobEnd(error=why)

    def stop(self, proc: Any) -> None:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def close(self) -> None:
        pass


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


def worker_main(
    run_dirs: str | list[str],
    train_fn: TrainFn | None,
    parent_pid: int,
    pack_train_fn: PackTrainFn | None = None,
) -> None:
    """A worker process: train one planned run, or a pack of them (each resuming its
    checkpoint), and record a crash. A pack's output goes to its first run's worker.log."""
    _die_with_parent(parent_pid)
    from scaling.train.runtime import prepare_process

    prepare_process(reexec=False)  # before jax is imported: the host-device split
    paths = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, str) else run_dirs)]
    log = open(paths[0] / WORKER_LOG, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    for other in paths[1:]:
        with open(other / WORKER_LOG, "a", encoding="utf-8") as f:
            f.write(f"trained in a pack of {len(paths)}; its log: {paths[0] / WORKER_LOG}\n")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    store = RunStore(paths[0].parent.parent)
    run_ids = [p.name for p in paths]
    try:
        train_claimed_runs(store, run_ids, train_fn, pack_train_fn)
    except BaseException as e:
        for run_id in run_ids:
            store.mark_failed(run_id, f"{type(e).__name__}: {e}", traceback.format_exc())
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    for run_id in run_ids:
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
