"""Run a test script in a subprocess on N CPU host devices and read back its result.

The script prints one line `RESULT <json>`; the subprocess gets its own XLA flags (the device
count, optionally a short collective timeout so that a deadlock fails in seconds), the
training runtime off, and the test's cache folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_on_host_devices(
    script: str,
    devices: int,
    cache: Path,
    *args: str,
    collective_timeout_s: int | None = None,
    timeout: float = 400,
) -> Any:
    """Run `script` (with `args`) on `devices` CPU host devices; its RESULT line's JSON."""
    flags = f"--xla_force_host_platform_device_count={devices}"
    if collective_timeout_s is not None:
        flags += (
            f" --xla_cpu_collective_call_warn_stuck_timeout_seconds={collective_timeout_s // 2}"
            f" --xla_cpu_collective_call_terminate_timeout_seconds={collective_timeout_s}"
        )
    env = {
        **os.environ,
        "XLA_FLAGS": flags,
        "SCALING_RUNTIME": "off",
        "SCALING_CACHE_DIR": str(cache),
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))
