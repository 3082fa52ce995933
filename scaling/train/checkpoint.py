"""Checkpoints with orbax: params, optimizer state and the loop's host state, by step.

Orbax writes each step into a temporary folder and renames it when complete, so a process
killed mid-save leaves the previous checkpoint usable. Only the latest checkpoint is kept.

A run of several processes (jax.distributed): every process calls save and restore with the
same step; orbax writes each process's shards and has process 0 write the metadata and the
host dict, with its own barriers. The run folder must be on storage all processes see. A
checkpoint restores onto any number of processes and devices (into the target's shardings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoint"


class Checkpointer:
    """Save and restore `{"params", "opt_state"}` plus a JSON dict of host state."""

    def __init__(self, run_dir: Path, *, keep: int = 1):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(
            Path(run_dir).absolute() / CHECKPOINT_DIR,
            options=options,
            item_names=("arrays", "host"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, arrays: Any, host: dict) -> None:
        """Save (blocking) the pytree `arrays` and JSON-able `host` at `step`."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays), host=ocp.args.JsonSave(host)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restore the arrays into the structure, shapes and shardings of `target`."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()
            ),
        )
        return out["arrays"], dict(out["host"])

    def close(self) -> None:
        self.manager.close()
