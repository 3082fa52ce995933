"""The coordinate check: do activations keep their size as the model grows?

Train a few Adam steps at several widths (or depths) and record, at every step, the RMS of the
activations a parameterization is meant to keep Θ(1): the embeddings, each layer's attention
logits, each block's output (the residual stream) and the output logits (the "coordinate check"
of Yang et al. 2022, Tensor Programs V, and of the `mup` package). For each (activation, step)
the slope of log RMS against log width (log depth) is fitted by least squares over the sizes.
A parameterization passes when no slope exceeds SLOPE_THRESHOLD: muP keeps every coordinate
Θ(1) (slope ~0; vanishing coordinates, slope < 0, are allowed), while standard
parameterization's grow like width^0.5-2 within a few steps (attention logits already at init).

Data: a seeded random sparse Markov chain (scaling.data.synthetic), batches drawn from (seed,
step) alone, so a check is a pure function of its arguments and needs no corpus on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scaling.errors import ConfigError
from scaling.model.shape import ModelShape

SLOPE_THRESHOLD = 0.25  # pass: every log-RMS vs log-size slope <= this (muP predicts <= ~0)
AXES = ("width", "depth")
MARKOV_BRANCHING = 4


@dataclass(frozen=True)
class CoordCheck:
    """The measurements and verdict of one coordinate check (one parametrization, one axis).

    `rms[name][i, t]`: the RMS of activation `name` at size `sizes[i]` after `t` updates,
    averaged over seeds. `slopes[name][t]`: the slope of log RMS against log size at step t.
    """

    parametrization: str
    axis: str
    sizes: tuple[int, ...]
    steps: int
    lr: float
    threshold: float
    rms: dict[str, np.ndarray] = field(repr=False)
    slopes: dict[str, np.ndarray] = field(repr=False)

    @property
    def worst(self) -> tuple[str, int, float]:
        """(activation, step, slope) of the largest slope."""
        name = max(self.slopes, key=lambda n: float(np.max(self.slopes[n])))
        t = int(np.argmax(self.slopes[name]))
        return name, t, float(self.slopes[name][t])

    @property
    def passed(self) -> bool:
        return self.worst[2] <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        name, t, s = self.worst
        return {
            "parametrization": self.parametrization,
            "axis": self.axis,
            "sizes": list(self.sizes),
            "steps": self.steps,
            "lr": self.lr,
            "threshold": self.threshold,
            "passed": self.passed,
            "worst": {"activation": name, "step": t, "slope": s},
            "slopes": {n: [float(x) for x in v] for n, v in self.slopes.items()},
            "rms": {n: v.tolist() for n, v in self.rms.items()},
        }


def coord_check(
    template: ModelShape,
    sizes: Sequence[int],
    *,
    axis: str = "width",
    steps: int = 4,
    lr: float = 1e-2,
    seeds: int = 2,
    batch_size: int = 8,
    threshold: float = SLOPE_THRESHOLD,
) -> CoordCheck:
    """Run the check: `template` with d_model (axis "width") or n_layers ("depth") set to each
    of `sizes`, `steps` AdamW updates at constant learning rate `lr` (the parametrization's
    per-parameter multipliers applied), RMS recorded after 0..steps updates, averaged over
    `seeds` initialisations. Depth checks follow the last layer's attention logits and block
    output (`attn_logits.last`, `block.last`)."""
    if axis not in AXES:
        raise ConfigError("axis", axis, " | ".join(AXES))
    sizes = tuple(sorted({int(s) for s in sizes}))
    if len(sizes) < 2 or sizes[0] <= 0:
        raise ConfigError("sizes", list(sizes), "at least two distinct positive sizes")
    for name, v in (("steps", steps), ("seeds", seeds), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(name, v, "a positive integer")
    if not (isinstance(lr, int | float) and 0 < lr < math.inf):
        raise ConfigError("lr", lr, "a positive number")
    key = "d_model" if axis == "width" else "n_layers"
    shapes = [_resized(template, key, s) for s in sizes]
    per_size = [_measure(shape, steps, lr, seeds, batch_size, axis) for shape in shapes]
    names = [n for n in per_size[0] if all(n in p for p in per_size)]
    rms = {n: np.stack([p[n] for p in per_size]) for n in names}  # [sizes, steps + 1]
    x = np.log(np.asarray(sizes, dtype=np.float64))
    slopes = {n: np.polyfit(x, np.log(rms[n]), 1)[0] for n in names}
    return CoordCheck(
        template.parametrization, axis, sizes, steps, float(lr), threshold, rms, slopes
    )


def _resized(template: ModelShape, key: str, size: int) -> ModelShape:
    try:
        return template.replace(**{key: size})
    except ConfigError as e:
        raise ConfigError(f"sizes ({key}={size}): {e.field}", e.value, e.allowed) from None


def _measure(
    shape: ModelShape, steps: int, lr: float, seeds: int, batch_size: int, axis: str
) -> dict[str, np.ndarray]:
    """{activation: RMS after 0..steps updates, averaged over seeds} for one shape."""
    import jax
    from flax import nnx

    from scaling.data.batches import batch_rng
    from scaling.data.synthetic import make_markov_chain
    from scaling.model.transformer import make_model
    from scaling.train.config import OptimConfig, RunConfig, TrainConfig
    from scaling.train.optim import make_optimizer
    from scaling.train.step import train_step

    config = RunConfig(
        model=shape,
        optim=OptimConfig(lr=lr, schedule="constant", warmup_steps=0),
        train=TrainConfig(batch_size=batch_size, steps=steps),
    )
    chain = make_markov_chain(shape.vocab_size, MARKOV_BRANCHING, 1.0, seed=0)
    batches = [
        chain.sample(batch_size, shape.context + 1, batch_rng(0, t)) for t in range(steps + 1)
    ]
    tx = make_optimizer(config)
    graphdef = None

    def observe_and_step(params: Any, opt_state: Any, batch: Any, lr: Any) -> Any:
        """The activations' RMS on this batch, then one training step (one compiled program)."""
        taps: dict[str, Any] = {}
        nnx.merge(graphdef, params)(batch[:, :-1], taps=taps)
        params, opt_state, _ = train_step(graphdef, params, opt_state, batch, lr, tx=tx)
        return params, opt_state, taps

    step_fn = jax.jit(observe_and_step)
    runs: list[dict[str, list[float]]] = []
    for seed in range(seeds):
        graphdef, params = nnx.split(make_model(shape, seed), nnx.Param)  # same draw as training
        opt_state = tx.init(params)
        rec: dict[str, list[float]] = {}
        for t in range(steps + 1):  # the update after the last observation is not used
            params, opt_state, taps = step_fn(params, opt_state, batches[t], np.float32(lr))
            for name, v in _named(jax.device_get(taps), shape.n_layers, axis).items():
                rec.setdefault(name, []).append(float(v))
        runs.append(rec)
    return {n: np.mean([r[n] for r in runs], axis=0) for n in runs[0]}


def _named(taps: dict[str, Any], n_layers: int, axis: str) -> dict[str, Any]:
    if axis == "width":
        return taps
    last = n_layers - 1
    out = {"embed": taps["embed"], "logits": taps["logits"]}
    out["attn_logits.last"] = taps[f"attn_logits.{last}"]
    out["block.last"] = taps[f"block.{last}"]
    return out


# --- report ----------------------------------------------------------------------------------
def slope_table(checks: Sequence[CoordCheck]) -> str:
    """One line per (check, activation): its slope at each step, the largest, the verdict."""
    lines = []
    for c in checks:
        head = [f"{'activation':18}"] + [f"{'t=' + str(t):>7}" for t in range(c.steps + 1)]
        lines.append(
            f"{c.parametrization}, slope of log RMS vs log {c.axis} over {list(c.sizes)} "
            f"(lr {c.lr:g}, threshold {c.threshold:g}):"
        )
        lines.append("  " + " ".join(head) + "     max")
        for name, s in c.slopes.items():
            flag = "  FAIL" if float(np.max(s)) > c.threshold else ""
            cells = " ".join(f"{v:+7.2f}" for v in s)
            lines.append(f"  {name:18} {cells} {float(np.max(s)):+7.2f}{flag}")
        name, t, s = c.worst
        verdict = "PASS" if c.passed else "FAIL"
        lines.append(f"  {verdict}: largest slope {s:+.2f} ({name}, step {t})\n")
    return "\n".join(lines)


def plot(checks: Sequence[CoordCheck], path: Any) -> None:
    """RMS vs size per step (log-log), one row per check, one panel per activation group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["embed", "attn_logits", "block", "logits"]
    fig, axes = plt.subplots(
        len(checks), len(groups), figsize=(3.2 * len(groups), 2.8 * len(checks)), squeeze=False
    )
    for row, c in zip(axes, checks, strict=True):
        for ax, group in zip(row, groups, strict=True):
            names = [n for n in c.rms if n == group or n.startswith(group + ".")]
            name = max(names, key=lambda n: float(np.max(c.slopes[n])))  # the worst of the group
            cmap = plt.get_cmap("viridis")
            for t in range(c.steps + 1):
                color = cmap(t / max(c.steps, 1))
                ax.plot(c.sizes, c.rms[name][:, t], "o-", color=color, ms=3, label=f"t={t}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{c.parametrization}: {name}\nmax slope {np.max(c.slopes[name]):+.2f}")
            ax.set_xlabel(c.axis)
            ax.grid(alpha=0.3, which="both")
        row[0].set_ylabel("RMS")
        row[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
