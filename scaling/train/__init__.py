"""Training: config, optimizer and schedules, pure steps, the resumable loop, checkpoints,
guards, throughput and MFU.

`train`, `train_packed` and `RunOutcome` are imported lazily so that `scaling.train.config`
(and the CLI) can be used without importing jax: process setup (`runtime.prepare_process`)
must run first.
"""

from typing import Any

from scaling.train.config import RunConfig

__all__ = ["RunConfig", "RunOutcome", "train", "train_packed"]


def __getattr__(name: str) -> Any:
    if name in ("train", "RunOutcome"):
        from scaling.train import loop

        return getattr(loop, name)
    if name == "train_packed":
        from scaling.train.packed import train_packed

        return train_packed
    raise AttributeError(f"module 'scaling.train' has no attribute {name!r}")
