"""Pre-training objectives as pure, seeded transforms of a training batch.

Every objective takes the batch the data layer already makes, int32 [B, context + 1] raw
tokens, and returns an `ObjectiveBatch`: model inputs [B, context], targets [B, context], loss
weights [B, context] and whether attention is causal. The training loss is then one formula for
all objectives — sum(w · CE(model(inputs, causal=causal), targets)) / sum(w) — reported in nats
per predicted token, where the predicted tokens are:

- `causal` (GPT): every next token; inputs batch[:, :-1], targets batch[:, 1:], all weights 1.
- `mlm` (BERT, Devlin et al. 2019): the first `context` tokens; a fixed fraction (`rate`, 15%;
  exactly round(rate · context) positions per sequence, at least 1) is chosen; of those, 80%
  become the [MASK] token, 10% a uniformly random data token, 10% stay unchanged. Attention is
  bidirectional; targets are the original tokens at the same positions; loss only there.
- `span` (T5 span corruption, Raffel et al. 2020, decoder-only form): n raw tokens (n chosen so
  that the output is exactly context + 1 long) get `noise_density` (15%) of them corrupted, in
  S spans of mean length `mean_span` (3), as T5's random_spans_noise_mask; the sequence is
  [the text with each span replaced by its own sentinel] + [sentinel_1 span_1 ... sentinel_S
  span_S], trained as a causal LM (fully causal: the prefix is not attended bidirectionally);
  the loss is on the corrupted tokens in the target part only (sentinels are structure, not
  data, and are not counted).

Extra token ids sit above the data vocabulary: [MASK] = data_vocab; sentinel i = data_vocab +
i. The model's vocab_size must be at least `objective_vocab_size(...)`. Randomness is keyed on
(seed, step) alone, on a stream separate from the one that picks the batch's windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling.errors import ConfigError

OBJECTIVES = ("causal", "mlm", "span")
MLM_RATE = 0.15
MLM_SPLIT = (0.8, 0.1, 0.1)  # [MASK], random token, unchanged
SPAN_NOISE_DENSITY = 0.15
SPAN_MEAN_LENGTH = 3.0
_STREAM = 0x0B1EC7  # keeps objective randomness apart from the batch-window stream


@dataclass(frozen=True)
class ObjectiveBatch:
    """Model inputs, targets and loss weights, each [B, T]; `causal`: the attention to use."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    causal: bool


def objective_rng(seed: int, step: int) -> np.random.Generator:
    """A counter-based generator keyed on (seed, step), independent of the batch's windows."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, step, _STREAM])))


def attends_causally(objective: str) -> bool:
    """Whether `objective` trains with causal attention: all but mlm (bidirectional). FLOP
    counts (budgets, C columns, MFU) use the attention the run actually trains with."""
    return check_objective(objective) != "mlm"


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError("objective", objective, " | ".join(OBJECTIVES))
    return objective


def span_layout(
    length: int, noise_density: float = SPAN_NOISE_DENSITY, mean_span: float = SPAN_MEAN_LENGTH
) -> tuple[int, int, int]:
    """(n raw tokens, noise tokens, spans S) with n + 2·S <= length (equal unless rounding
    forbids it): each span adds a sentinel in the input part and one in the target part."""
    _check_fraction("noise_density", noise_density)
    if not isinstance(mean_span, int | float) or isinstance(mean_span, bool) or not mean_span >= 1:
        raise ConfigError("mean_span", mean_span, "a number >= 1")
    for n in range(length, 1, -1):  # the largest n that fits (exactly, but for rounding)
        noise, spans = _span_counts(n, noise_density, mean_span)
        if n + 2 * spans <= length:
            return n, noise, spans
    raise ConfigError("context", length - 1, "a context long enough for one corrupted span")


def _span_counts(n: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    noise = min(max(1, round(n * noise_density)), n - 1)
    spans = max(1, round(noise / mean_span))
    return noise, spans


def objective_vocab_size(
    objective: str,
    data_vocab: int,
    context: int,
    *,
    noise_density: float = SPAN_NOISE_DENSITY,
    mean_span: float = SPAN_MEAN_LENGTH,
) -> int:
    """The smallest model vocab_size the objective needs: the data's, + [MASK] (mlm), + one
    sentinel per span (span)."""
    check_objective(objective)
    if objective == "mlm":
        return data_vocab + 1
    if objective == "span":
        return data_vocab + span_layout(context + 1, noise_density, mean_span)[2]
    return data_vocab


def make_objective_batch(
    objective: str,
    batch_BT1: np.ndarray,
    *,
    seed: int,
    step: int,
    data_vocab: int,
    model_vocab: int | None = None,
    rate: float = MLM_RATE,
    noise_density: float = SPAN_NOISE_DENSITY,
    mean_span: float = SPAN_MEAN_LENGTH,
) -> ObjectiveBatch:
    """`objective` applied to the training batch `batch_BT1` (int [B, context + 1]); pure in
    (batch, seed, step). Raises ConfigError when `model_vocab` is too small for its tokens."""
    check_objective(objective)
    batch = np.asarray(batch_BT1)
    if batch.ndim != 2 or batch.shape[1] < 2:
        raise ConfigError("batch", batch.shape, "int tokens of shape [B, context + 1]")
    context = batch.shape[1] - 1
    need = objective_vocab_size(
        objective, data_vocab, context, noise_density=noise_density, mean_span=mean_span
    )
    if model_vocab is not None and model_vocab < need:
        raise ConfigError(
            "model.vocab_size",
            model_vocab,
            f">= {need} for objective {objective} (data vocab {data_vocab} + its special tokens)",
        )
    if objective == "causal":
        w = np.ones((batch.shape[0], context), np.float32)
        return ObjectiveBatch(
            batch[:, :-1].astype(np.int32), batch[:, 1:].astype(np.int32), w, True
        )
    rng = objective_rng(seed, step)
    if objective == "mlm":
        return mlm_mask(batch[:, :-1], rng, data_vocab=data_vocab, rate=rate)
    return span_corrupt(
        batch, rng, data_vocab=data_vocab, noise_density=noise_density, mean_span=mean_span
    )


def mlm_mask(
    tokens_BT: np.ndarray, rng: np.random.Generator, *, data_vocab: int, rate: float = MLM_RATE
) -> ObjectiveBatch:
    """BERT masking of `tokens_BT`: round(rate·T) positions per sequence (>= 1) chosen without
    replacement; 80% -> [MASK] (= data_vocab), 10% -> a uniform random data token, 10% kept.
    Bidirectional; targets = the original tokens; weights 1 at the chosen positions."""
    _check_fraction("rate", rate)
    tokens = np.asarray(tokens_BT, dtype=np.int32)
    B, T = tokens.shape
    k = min(T, max(1, round(rate * T)))
    chosen_BK = np.argsort(rng.random((B, T)), axis=1)[:, :k]
    rows = np.arange(B)[:, None]
    u_BK = rng.random((B, k))
    random_BK = rng.integers(0, data_vocab, size=(B, k), dtype=np.int32)
    masked, randomized = MLM_SPLIT[0], MLM_SPLIT[0] + MLM_SPLIT[1]
    new_BK = np.where(
        u_BK < masked, data_vocab, np.where(u_BK < randomized, random_BK, tokens[rows, chosen_BK])
    )
    inputs = tokens.copy()
    inputs[rows, chosen_BK] = new_BK
    weights = np.zeros((B, T), np.float32)
    weights[rows, chosen_BK] = 1.0
    return ObjectiveBatch(inputs, tokens, weights, causal=False)


def random_spans_mask(n: int, noise: int, spans: int, rng: np.random.Generator) -> np.ndarray:
    """bool [n]: `noise` tokens in `spans` runs, runs and gaps of random positive lengths,
    starting with a gap (T5's random_spans_noise_mask)."""

    def segment(total: int) -> np.ndarray:  # `spans` positive lengths summing to total
        cuts = np.sort(rng.choice(np.arange(1, total), size=spans - 1, replace=False))
        return np.diff(np.concatenate([[0], cuts, [total]]))

    noise_lengths, gap_lengths = segment(noise), segment(n - noise)
    mask = np.zeros(n, bool)
    pos = 0
    for gap, run in zip(gap_lengths, noise_lengths, strict=True):
        pos += gap
        mask[pos : pos + run] = True
        pos += run
    return mask


def span_corrupt(
    batch_BT1: np.ndarray,
    rng: np.random.Generator,
    *,
    data_vocab: int,
    noise_density: float = SPAN_NOISE_DENSITY,
    mean_span: float = SPAN_MEAN_LENGTH,
) -> ObjectiveBatch:
    """T5 span corruption in decoder-only form (module docstring) on the first n raw tokens of
    each row; the sequence is context + 1 long, shifted into inputs and next-token targets."""
    batch = np.asarray(batch_BT1, dtype=np.int32)
    B, L = batch.shape
    n, noise, spans = span_layout(L, noise_density, mean_span)
    if spans > noise or spans > n - noise:
        raise ConfigError("context", L - 1, "a context long enough for the spans asked for")
    seq_BL = np.zeros((B, L), np.int32)  # rows shorter than L end in padding (weight 0)
    loss_BL = np.zeros((B, L), np.float32)  # 1 where the token is a corrupted data token
    for b in range(B):
        mask = random_spans_mask(n, noise, spans, rng)
        raw = batch[b, :n].tolist()
        starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
        ends = np.flatnonzero(mask & ~np.r_[mask[1:], False]) + 1
        prefix: list[int] = []
        target: list[int] = []
        is_data: list[float] = []
        prev = 0
        for s, (start, end) in enumerate(zip(starts, ends, strict=True)):
            sentinel = data_vocab + s
            prefix += [*raw[prev:start], sentinel]
            target += [sentinel, *raw[start:end]]
            is_data += [0.0] + [1.0] * int(end - start)
            prev = end
        prefix += raw[prev:]
        seq = prefix + target  # n + 2·S <= L tokens
        seq_BL[b, : len(seq)] = seq
        loss_BL[b, len(prefix) : len(seq)] = is_data
    return ObjectiveBatch(seq_BL[:, :-1], seq_BL[:, 1:], loss_BL[:, 1:], causal=True)


def _check_fraction(name: str, v: float) -> None:
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 1 or math.isnan(v):
        raise ConfigError(name, v, "a number in (0, 1)")
