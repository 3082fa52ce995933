"""A train function for a sweep job of several tasks (tests/test_train_distributed.py): every
task joins the same jax.distributed job, process 0 trains with the fake train() (the real
one's file contract) and each task records which processes it trained with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sweep_fake_train import fake_train


def train_together(config, run_dir, *, resume=True, progress=False):
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    ranks = multihost_utils.process_allgather(np.int32(jax.process_index()))  # a collective
    record = {"ranks": sorted(int(r) for r in np.ravel(ranks)), "devices": jax.device_count()}
    record["pid"] = os.getpid()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / f"joined-{jax.process_index()}.json").write_text(json.dumps(record))
    if jax.process_index() == 0:
        fake_train(config, run_dir, resume=resume, progress=progress)
    multihost_utils.sync_global_devices("fake train done")
