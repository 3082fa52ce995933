"""Train functions for executor tests, around tests/sweep_fake_train.py's fake train().

`train_dies_once`: the run named by $DIE_ONCE_MARKER_DIR's victim file kills its own process
(SIGKILL, as a node or OOM killer would) the first time it has a checkpoint at step >= 4; the
marker file it leaves makes the retry train normally.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from sweep_fake_train import fake_train

from scaling.io import read_json


def train_dies_once(config, run_dir, *, resume=True, progress=False):
    run_dir = Path(run_dir)
    markers = Path(os.environ["DIE_ONCE_MARKER_DIR"])
    victim = (markers / "victim").read_text().strip()
    marker = markers / f"killed-{run_dir.name}"
    if run_dir.name == victim and not marker.exists():
        threading.Thread(target=_kill_after_checkpoint, args=(run_dir, marker), daemon=True).start()
    return fake_train(config, run_dir, resume=resume, progress=progress)


def _kill_after_checkpoint(run_dir: Path, marker: Path) -> None:
    ckpt = run_dir / "checkpoint" / "state.json"
    while True:
        try:
            if read_json(ckpt)["step"] >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
