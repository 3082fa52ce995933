"""The run store: one folder per run under <sweep_dir>/runs/<run_id>/, its state and its lease.

`train()` owns config.json, status.json, metrics.jsonl and checkpoint/ in a run folder. The store
owns `run.json` (the planned run: its config and design point) and `lease.json` (who is running
it). Claims and lease breaks happen under one sweep-wide `fcntl` lock, so two runners on one folder
never take the same run. A lease is stale when its processes are dead (same host) or its
heartbeat is older than `stale_after_s` (another host).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.io import atomic_write_json, read_json

STATES = ("pending", "running", "done", "diverged", "failed")
TERMINAL_STATES = ("done", "diverged")  # results: never run again
PLAN_FILE = "plan.json"  # in the sweep folder: the current plan, runs in order
RUN_FILE = "run.json"
LEASE_FILE = "lease.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
DEFAULT_STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class Lease:
    """A claim on one run: the token proves ownership when heartbeating or releasing."""

    run_id: str
    token: str
    host: str
    pid: int


class RunStore:
    """Run folders of one sweep and the claims on them."""

    def __init__(
        self, sweep_dir: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_AFTER_S
    ):
        self.root = Path(sweep_dir)
        self.runs_dir = self.root / "runs"
        self.stale_after_s = stale_after_s

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def run_ids(self) -> list[str]:
        """Every run folder holding a planned run, sorted."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if (p / RUN_FILE).is_file())

    def planned_run_ids(self) -> list[str]:
        """The runs of the current plan (plan.json), in plan order; every run folder if there
        is no plan. Runs left from an earlier plan stay on disk but are not part of it."""
        try:
            ids = [r["run_id"] for r in read_json(self.root / PLAN_FILE)["runs"]]
        except (OSError, ValueError, KeyError, TypeError):
            return self.run_ids()
        return [r for r in ids if (self.run_dir(r) / RUN_FILE).is_file()]

    # --- planned runs -------------------------------------------------------------------------
    def add_run(self, run_id: str, record: dict) -> None:
        """Write runs/<run_id>/run.json once (a planned run is immutable)."""
        path = self.run_dir(run_id) / RUN_FILE
        if not path.exists():
            atomic_write_json(path, record)

    def read_run(self, run_id: str) -> dict:
        return read_json(self.run_dir(run_id) / RUN_FILE)

    # --- state --------------------------------------------------------------------------------
    def read_status(self, run_id: str) -> dict | None:
        """The run's status.json (written by train()), or None if it has none yet."""
        path = self.run_dir(run_id) / STATUS_FILE
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None

    def state(self, run_id: str) -> str:
        """pending | running | done | diverged | failed (from status.json; none yet = pending)."""
        status = self.read_status(run_id)
        state = (status or {}).get("state", "pending")
        return state if state in STATES else "failed"

    def mark_failed(self, run_id: str, error: str, traceback_text: str = "") -> None:
        """Record a failure train() could not record itself (a crash before or outside it)."""
        status = self.read_status(run_id) or {}
        if status.get("state") in (*TERMINAL_STATES, "failed"):
            return
        status.update(state="failed", error=error, traceback=traceback_text, updated=time.time())
        atomic_write_json(self.run_dir(run_id) / STATUS_FILE, status)

    # --- leases -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The sweep-wide lock under which claims and lease breaks are decided."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read_lease(self, run_id: str) -> dict | None:
        path = self.run_dir(run_id) / LEASE_FILE
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None

    def lease_is_live(self, lease: dict | None) -> bool:
        """Whether a lease still has an owner: its processes alive (this host) or a fresh beat."""
        if not lease:
            return False
        if lease.get("host") == socket.gethostname():
            return any(_process_alive(p) for p in lease.get("processes", []))
        return time.time() - float(lease.get("heartbeat", 0)) < self.stale_after_s

    def try_claim(self, run_id: str, *, allow_failed: bool = False) -> Lease | None:
        """Claim a run that needs running (pending, stale running, or failed if allowed)."""
        with self.locked():
            state = self.state(run_id)
            if state in TERMINAL_STATES or (state == "failed" and not allow_failed):
                return None
            if self.lease_is_live(self.read_lease(run_id)):
                return None
            lease = Lease(run_id, uuid.uuid4().hex, socket.gethostname(), os.getpid())
            self._write_lease(lease, [_process_ident(os.getpid())])
            return lease

    def add_process(self, lease: Lease, pid: int) -> None:
        """Record a worker process in the lease, so the run stays claimed while it lives."""
        with self.locked():
            current = self.read_lease(lease.run_id)
            if current and current.get("token") == lease.token:
                self._write_lease(lease, [*current.get("processes", []), _process_ident(pid)])

    def heartbeat(self, lease: Lease) -> bool:
        """Refresh the lease; False if it was lost (broken as stale by another runner)."""
        with self.locked():
            current = self.read_lease(lease.run_id)
            if not current or current.get("token") != lease.token:
                return False
            current["heartbeat"] = time.time()
            atomic_write_json(self.run_dir(lease.run_id) / LEASE_FILE, current)
            return True

    def release(self, lease: Lease) -> None:
        """Drop the lease if it is still ours."""
        with self.locked():
            current = self.read_lease(lease.run_id)
            if current and current.get("token") == lease.token:
                (self.run_dir(lease.run_id) / LEASE_FILE).unlink(missing_ok=True)

    def _write_lease(self, lease: Lease, processes: list[dict]) -> None:
        record: dict[str, Any] = {
            "run_id": lease.run_id,
            "token": lease.token,
            "host": lease.host,
            "pid": lease.pid,
            "processes": processes,
            "heartbeat": time.time(),
        }
        atomic_write_json(self.run_dir(lease.run_id) / LEASE_FILE, record)


def _process_ident(pid: int) -> dict:
    return {"pid": pid, "start": _process_start_time(pid)}


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a recycled pid), where /proc has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _process_alive(ident: dict) -> bool:
    pid = int(ident.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = ident.get("start")
    if start is not None and _process_start_time(pid) not in (None, start):
        return False  # the pid was reused by another process
    # A zombie (exited, not yet reaped) holds nothing.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
