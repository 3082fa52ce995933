"""Divergence guards: a non-finite loss, or a spike past a threshold, ends a run as `diverged`.

The guard runs on the host over the per-step training losses (pulled every few steps, not
each step). Its state is a small JSON-able dict saved with every checkpoint, so a resumed run
judges divergence exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scaling.train.config import GuardsConfig


@dataclass
class GuardState:
    """Smoothed training loss (EMA, bias-corrected by `n`) and the lowest value it reached."""

    n: int = 0
    ema: float = 0.0
    best: float = math.inf

    def to_dict(self) -> dict:
        return {**asdict(self), "best": self.best if math.isfinite(self.best) else None}

    @classmethod
    def from_dict(cls, d: dict) -> GuardState:
        best = d.get("best")
        return cls(n=int(d["n"]), ema=float(d["ema"]), best=math.inf if best is None else best)


def check_loss(cfg: GuardsConfig, state: GuardState, step: int, loss: float) -> str | None:
    """Update `state` with the training loss of `step`; return why the run diverged, or None."""
    if not math.isfinite(loss):
        return f"non-finite training loss ({loss}) at step {step}"
    if loss > cfg.max_loss:
        return f"training loss {loss:.4g} above guards.max_loss={cfg.max_loss:g} at step {step}"
    if state.n >= cfg.min_steps and loss > cfg.spike_factor * state.best:
        return (
            f"training loss spike at step {step}: {loss:.4g} > spike_factor={cfg.spike_factor:g}"
            f" x lowest smoothed loss {state.best:.4g}"
        )
    state.n += 1
    state.ema = cfg.ema_decay * state.ema + (1.0 - cfg.ema_decay) * loss
    smoothed = state.ema / (1.0 - cfg.ema_decay**state.n)
    state.best = min(state.best, smoothed)
    return None
