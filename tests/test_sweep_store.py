"""The run store: states from status.json, exclusive claims, stale leases, lost leases."""

from __future__ import annotations

import subprocess
import sys
import time

from scaling.io import atomic_write_json, read_json
from scaling.sweep.store import RunStore


def make_store(tmp_path, *run_ids):
    store = RunStore(tmp_path / "sweep")
    for r in run_ids:
        store.add_run(r, {"run_id": r, "config": {}, "point": {}})
    return store


def set_state(store, run_id, state):
    atomic_write_json(store.run_dir(run_id) / "status.json", {"state": state, "step": 3})


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_states_come_from_status_json(tmp_path):
    store = make_store(tmp_path, "a", "b")
    assert store.run_ids() == ["a", "b"]
    assert store.state("a") == "pending"
    set_state(store, "a", "diverged")
    assert store.state("a") == "diverged"
    store.mark_failed("a", "boom")  # a result is never overwritten by a failure
    assert store.state("a") == "diverged"
    store.mark_failed("b", "boom", "Traceback ...")
    assert read_json(store.run_dir("b") / "status.json")["error"] == "boom"
    assert store.state("b") == "failed"


def test_run_json_is_written_once(tmp_path):
    store = make_store(tmp_path, "a")
    store.add_run("a", {"run_id": "a", "config": {"changed": 1}, "point": {}})
    assert store.read_run("a")["config"] == {}


def test_claims_are_exclusive_until_released(tmp_path):
    store = make_store(tmp_path, "a")
    lease = store.try_claim("a")
    assert lease is not None
    assert store.try_claim("a") is None  # our own process is alive: the lease is live
    assert store.heartbeat(lease)
    store.release(lease)
    assert store.try_claim("a") is not None


def test_results_and_failures_are_not_claimed(tmp_path):
    store = make_store(tmp_path, "done", "div", "fail")
    for r, s in (("done", "done"), ("div", "diverged"), ("fail", "failed")):
        set_state(store, r, s)
    assert store.try_claim("done") is None
    assert store.try_claim("div") is None
    assert store.try_claim("fail") is None
    assert store.try_claim("fail", allow_failed=True) is not None


def test_lease_of_dead_processes_is_stale_and_taken_over(tmp_path):
    store = make_store(tmp_path, "a")
    old = store.try_claim("a")
    set_state(store, "a", "running")
    lease = read_json(store.run_dir("a") / "lease.json")
    lease["processes"] = [{"pid": dead_pid(), "start": None}]
    atomic_write_json(store.run_dir("a") / "lease.json", lease)
    new = store.try_claim("a")
    assert new is not None and new.token != old.token
    assert not store.heartbeat(old)  # the old owner learns it lost the run
    assert store.heartbeat(new)


def test_lease_from_another_host_is_stale_only_after_the_timeout(tmp_path):
    store = make_store(tmp_path, "a")
    atomic_write_json(
        store.run_dir("a") / "lease.json",
        {"token": "x", "host": "elsewhere", "processes": [], "heartbeat": time.time()},
    )
    assert store.try_claim("a") is None
    store.stale_after_s = 0.05
    time.sleep(0.1)
    assert store.try_claim("a") is not None
