"""A fake `train_packed()` for sweep packing tests, around tests/sweep_fake_train.py.

`fake_train_packed(configs, run_dirs)` trains the members at once in one process (a thread
each, running the fake `train`: the real file contract, checkpoints, resumes) and appends
{pid, members} to each member's packs.jsonl, so tests see which runs shared a job.
`fake_packed_dies_once`: the pack holding the run named in $DIE_ONCE_MARKER_DIR/victim kills its
own process (SIGKILL, as a node or OOM killer would) the first time that run has a checkpoint at
step >= 4; the marker file it leaves makes the retry train normally.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from sweep_fake_train import fake_train

from scaling.io import append_jsonl, read_json


def fake_train_packed(configs, run_dirs, *, resume=True):
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        append_jsonl(d / "packs.jsonl", {"pid": os.getpid(), "members": [x.name for x in dirs]})
    errors: list[BaseException] = []

    def one(config, run_dir):
        try:
            fake_train(config, run_dir, resume=resume)
        except BaseException as e:  # re-raised below, as train_packed does
            errors.append(e)

    threads = [
        threading.Thread(target=one, args=(c, d)) for c, d in zip(configs, dirs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def fake_packed_dies_once(configs, run_dirs, *, resume=True):
    markers = Path(os.environ["DIE_ONCE_MARKER_DIR"])
    victim = (markers / "victim").read_text().strip()
    marker = markers / f"killed-{victim}"
    names = [Path(d).name for d in run_dirs]
    if victim in names and not marker.exists():
        ckpt = Path(run_dirs[names.index(victim)]) / "checkpoint" / "state.json"
        threading.Thread(target=_kill_after_checkpoint, args=(ckpt, marker), daemon=True).start()
    return fake_train_packed(configs, run_dirs, resume=resume)


def _kill_after_checkpoint(ckpt: Path, marker: Path) -> None:
    while True:
        try:
            if read_json(ckpt)["step"] >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
