"""The optimizer: optax AdamW (with gradient clipping) whose learning rate is an argument.

The step multiplies AdamW's unit-rate update by `lr`, computed on the host from the schedule;
so the learning rate can differ across `jax.vmap`-packed runs without recompiling. Weight
decay applies only to matrices: norms, biases and embeddings are masked out by parameter path.
Under muP (`model.parametrization`), each parameter's update is also multiplied by its Adam
learning-rate multiplier from `scaling.model.parametrization` (weight decay included, as with
the `mup` package's MuAdamW); under `sp` that step is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scaling.train.config import RunConfig

# A parameter whose path matches this is never decayed (nor is any 0/1-D array): embeddings,
# norms and biases (`bias`, or a `b_` prefix as in `b_qkv`).
NO_DECAY_PATTERN = re.compile(r"embed|wte|wpe|norm|ln_|bias|scale|(^|/)b_", re.IGNORECASE)


def lr_at(config: RunConfig, step: int) -> float:
    """Learning rate used for the update that takes the model from `step` to `step + 1`."""
    o = config.optim
    n = config.total_steps
    warm = config.warmup_steps
    peak, floor = o.lr, o.lr * o.min_lr_ratio
    if warm > 0 and step < warm:
        return peak * (step + 1) / warm
    if o.schedule == "constant":
        return peak
    if o.schedule == "wsd":
        decay = max(1, round(o.decay_fraction * n))
        start = n - decay
        if step < start:
            return peak
        frac = (step - start + 1) / decay
        return peak + (floor - peak) * min(frac, 1.0)
    span = max(1, n - warm)
    frac = min(max((step - warm + 1) / span, 0.0), 1.0)
    if o.schedule == "warmup_linear":
        return peak + (floor - peak) * frac
    # warmup_cosine
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def schedule_fn(config: RunConfig) -> Callable[[int], float]:
    """The schedule as a function of the (0-based) step index."""
    return lambda step: lr_at(config, int(step))


def decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True where weight decay applies (matrices that are not
    embeddings; never norms or biases)."""

    def decays(path: tuple, leaf: Any) -> bool:
        name = "/".join(_key_name(k) for k in path)
        return getattr(leaf, "ndim", 0) >= 2 and not NO_DECAY_PATTERN.search(name)

    return jax.tree_util.tree_map_with_path(decays, params)


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def lr_multipliers(config: RunConfig, params: Any) -> Any:
    """A pytree of floats like `params`: each parameter's Adam learning-rate multiplier."""
    from scaling.model.parametrization import lr_multiplier

    shape = config.model

    def mult(path: tuple, _: Any) -> float:
        names = [_key_name(k) for k in path]
        if names and names[-1] == "value":  # an nnx Variable's array: the path is its owner's
            names = names[:-1]
        return lr_multiplier(shape, "/".join(names))

    return jax.tree_util.tree_map_with_path(mult, params)


def scale_by_lr_multipliers(config: RunConfig) -> optax.GradientTransformation:
    """Multiply each parameter's update by its muP learning-rate multiplier (a constant)."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        mults = lr_multipliers(config, updates)
        return jax.tree.map(lambda u, m: u if m == 1.0 else u * m, updates, mults), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def global_norm(tree: Any) -> jax.Array:
    """√(Σ x²) over every entry of every leaf, in float32: one reduction over the leaves'
    concatenation, which XLA fuses into one kernel. Summed leaf by leaf (optax.global_norm) it
    is one kernel per parameter array on a GPU: 53 of the 346 in the step of a 0.9e6-parameter
    model that launches bound (benchmarks/gpu_program.py)."""
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(jnp.sum(jnp.square(jnp.concatenate(leaves))))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm with `global_norm`: updates scaled by max_norm / norm when
    their norm reaches max_norm, as optax computes it."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        norm = global_norm(updates)
        clipped = jax.tree.map(
            lambda u: jnp.where(norm < max_norm, u, (u / norm.astype(u.dtype)) * max_norm),
            updates,
        )
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW at unit learning rate (the step scales by `lr`), then
    the parametrization's per-parameter multipliers (not under `sp`).

    optax's AdamW multiplies weight decay by the learning rate too, so scaling the unit-rate
    update by `lr` is exactly AdamW at rate `lr`.
    """
    o = config.optim
    parts = []
    if o.grad_clip > 0:
        parts.append(clip_by_global_norm(o.grad_clip))
    parts.append(
        optax.adamw(
            learning_rate=1.0,
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            mask=decay_mask,
        )
    )
    if config.model.parametrization != "sp":
        parts.append(scale_by_lr_multipliers(config))
    return optax.chain(*parts)
