"""Batches as pure functions: training windows from (seed, step), a fixed validation sample.

No iterator state: `train_batch(tokens, seed=s, step=t, ...)` is the same array in any process,
so a resumed run sees exactly the batches it would have seen without stopping.
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ConfigError, DataError


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, value, "a positive integer")
    return int(value)


def _check_nonnegative(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ConfigError(name, value, "an integer >= 0")
    return int(value)


def check_enough_tokens(tokens: np.ndarray, context: int, split: str = "train") -> None:
    """Raise DataError unless `tokens` holds at least one window of context + 1 tokens."""
    if tokens.shape[0] < context + 1:
        raise DataError(
            f"the {split} split has {tokens.shape[0]} tokens, fewer than one sequence of "
            f"context + 1 = {context + 1} (context = {context}); use a larger corpus or a "
            "shorter context"
        )


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """A counter-based generator keyed on (seed, step) alone."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, step])))


def train_batch(
    tokens: np.ndarray, *, seed: int, step: int, batch_size: int, context: int
) -> np.ndarray:
    """int32 [batch_size, context + 1]: windows at uniform random offsets keyed on (seed, step).

    Inputs are ``batch[:, :-1]`` and targets ``batch[:, 1:]``.
    """
    seed = _check_nonnegative("data_seed", seed)
    step = _check_nonnegative("step", step)
    batch_size = _check_positive("batch_size", batch_size)
    context = _check_positive("context", context)
    check_enough_tokens(tokens, context, "train")
    n_starts = tokens.shape[0] - context  # starts 0 .. n - (context + 1)
    starts_B = batch_rng(seed, step).integers(0, n_starts, size=batch_size)
    idx_BT = starts_B[:, None] + np.arange(context + 1)[None, :]
    return np.asarray(tokens[idx_BT], dtype=np.int32)


def eval_batches(
    val_tokens: np.ndarray,
    *,
    context: int,
    n_sequences: int,
    batch_size: int,
    seed: int = 0,
) -> np.ndarray:
    """A fixed validation sample: int32 [n_batches, b, context + 1] of non-overlapping windows.

    The split is cut into m = n // (context + 1) aligned windows; min(n_sequences, m) of them
    are chosen (all of them, or a seeded sample without replacement, kept in order), then
    rounded down to whole batches of b = min(batch_size, that number), so every batch has the
    same shape (one compilation). Deterministic in (val_tokens, context, n_sequences,
    batch_size, seed).
    """
    context = _check_positive("context", context)
    n_sequences = _check_positive("n_sequences", n_sequences)
    batch_size = _check_positive("batch_size", batch_size)
    seed = _check_nonnegative("seed", seed)
    check_enough_tokens(val_tokens, context, "validation")
    window = context + 1
    m = val_tokens.shape[0] // window
    n = min(n_sequences, m)
    if n == m:
        chosen = np.arange(m)
    else:
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 0xE7A1])))
        chosen = np.sort(rng.choice(m, size=n, replace=False))
    b = min(batch_size, n)
    n_batches = n // b
    chosen = chosen[: n_batches * b]
    idx_NT = chosen[:, None] * window + np.arange(window)[None, :]
    out = np.asarray(val_tokens[idx_NT], dtype=np.int32)
    return out.reshape(n_batches, b, window)


def unigram_entropy(tokens: np.ndarray, vocab_size: int | None = None) -> float:
    """Entropy (nats per token) of the tokens' empirical unigram distribution."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        raise DataError("unigram_entropy of zero tokens")
    counts = np.zeros(vocab_size or 0, dtype=np.int64)
    chunk = 1 << 24
    for i in range(0, tokens.size, chunk):
        c = np.bincount(np.asarray(tokens[i : i + chunk], dtype=np.int64), minlength=counts.size)
        if c.size > counts.size:
            counts = np.pad(counts, (0, c.size - counts.size))
        counts += c
    p = counts[counts > 0] / tokens.size
    return float(-np.sum(p * np.log(p)))
