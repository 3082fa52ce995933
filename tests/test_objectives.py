"""Objectives: causal shift, BERT masking rates (15%, 80/10/10), bidirectional attention for
mlm, T5 span corruption that reconstructs the text, determinism in (seed, step), bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.data.objectives import (
    make_objective_batch,
    objective_vocab_size,
    span_layout,
)
from scaling.errors import ConfigError
from scaling.model.shape import ModelShape
from scaling.model.transformer import make_model

V = 256


def _batch(b: int = 8, context: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, size=(b, context + 1)).astype(np.int32)


def test_causal_is_the_next_token_shift() -> None:
    batch = _batch()
    ob = make_objective_batch("causal", batch, seed=0, step=0, data_vocab=V)
    np.testing.assert_array_equal(ob.inputs, batch[:, :-1])
    np.testing.assert_array_equal(ob.targets, batch[:, 1:])
    assert ob.causal and ob.weights.sum() == ob.weights.size


def test_mlm_masks_at_the_stated_rates() -> None:
    batch = _batch(b=512, context=128)
    ob = make_objective_batch("mlm", batch, seed=3, step=7, data_vocab=V, model_vocab=V + 1)
    T = 128
    assert not ob.causal
    np.testing.assert_array_equal(ob.targets, batch[:, :T])
    k = round(0.15 * T)
    np.testing.assert_array_equal(ob.weights.sum(axis=1), k)  # exactly 15% of every sequence
    chosen = ob.weights > 0
    np.testing.assert_array_equal(ob.inputs[~chosen], batch[:, :T][~chosen])  # rest untouched
    picked, original = ob.inputs[chosen], ob.targets[chosen]
    n = picked.size
    masked = np.mean(picked == V)
    changed = np.mean((picked != V) & (picked != original))
    kept = np.mean(picked == original)
    sd = np.sqrt(0.25 / n)  # the largest binomial standard deviation
    assert abs(masked - 0.8) < 5 * sd
    assert abs(changed - 0.1 * (1 - 1 / V)) < 5 * sd  # a random token may equal the original
    assert abs(kept - (0.1 + 0.1 / V)) < 5 * sd
    assert picked.max() <= V and ob.inputs.min() >= 0
    # Positions are spread over the whole sequence (not e.g. only the start).
    assert chosen[:, : T // 2].mean() == pytest.approx(chosen[:, T // 2 :].mean(), abs=0.02)


def test_masks_are_pure_in_seed_and_step() -> None:
    batch = _batch()
    for objective in ("mlm", "span"):
        a = make_objective_batch(objective, batch, seed=1, step=5, data_vocab=V)
        b = make_objective_batch(objective, batch, seed=1, step=5, data_vocab=V)
        c = make_objective_batch(objective, batch, seed=1, step=6, data_vocab=V)
        d = make_objective_batch(objective, batch, seed=2, step=5, data_vocab=V)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.weights, b.weights)
        assert not np.array_equal(a.inputs, c.inputs)
        assert not np.array_equal(a.inputs, d.inputs)


def test_mlm_model_is_bidirectional() -> None:
    # At a masked position, the bidirectional forward the mlm batch asks for sees later tokens
    # (the causal one does not).
    shape = ModelShape(d_model=32, n_layers=1, n_heads=2, context=16, variant="llama")
    shape = shape.replace(vocab_size=objective_vocab_size("mlm", V, 16))
    model = make_model(shape, seed=0)
    forward = nnx.jit(lambda m, t, causal: m(t, causal=causal), static_argnums=2)
    ob = make_objective_batch("mlm", _batch(b=2, context=16), seed=0, step=0, data_vocab=V)
    pos = int(np.flatnonzero(ob.weights[0])[0])
    other = pos + 1 if pos < 15 else pos - 1
    tokens = jnp.asarray(ob.inputs)
    changed = tokens.at[0, other].set((tokens[0, other] + 1) % V)
    for causal, sees in ((ob.causal, True), (True, other < pos)):
        a, b = forward(model, tokens, causal), forward(model, changed, causal)
        assert (float(jnp.abs(a[0, pos] - b[0, pos]).max()) > 1e-5) == sees


def test_span_corruption_reconstructs_the_text() -> None:
    context = 127
    batch = _batch(b=16, context=context)
    n, noise, spans = span_layout(context + 1)
    assert n + 2 * spans == context + 1
    assert noise == round(0.15 * n) and spans == round(noise / 3)
    vocab = objective_vocab_size("span", V, context)
    assert vocab == V + spans
    ob = make_objective_batch("span", batch, seed=0, step=0, data_vocab=V, model_vocab=vocab)
    assert ob.causal and ob.inputs.shape == (16, context)
    np.testing.assert_array_equal(ob.inputs[:, 1:], ob.targets[:, :-1])  # one sequence, shifted
    np.testing.assert_array_equal(ob.weights.sum(axis=1), noise)  # loss on corrupted tokens
    lengths = []
    for b in range(16):
        seq = np.concatenate([ob.inputs[b], ob.targets[b, -1:]])
        sentinels = np.flatnonzero(seq >= V)
        assert sentinels.size == 2 * spans  # each span: one in the input, one in the target
        split = sentinels[spans]  # where the target part starts
        prefix, target = seq[:split], seq[split:]
        np.testing.assert_array_equal(prefix[prefix >= V], V + np.arange(spans))
        # Put each target span back in place of its sentinel: the raw text comes back.
        starts = np.flatnonzero(target >= V)
        pieces = np.split(target, starts[1:])
        text = []
        for tok in prefix:
            text.extend(pieces[tok - V][1:] if tok >= V else [tok])
            if tok >= V:
                lengths.append(len(pieces[tok - V]) - 1)
        np.testing.assert_array_equal(text, batch[b, :n])
        # The weights mark exactly the data tokens of the target part (as next-token targets).
        w_positions = np.flatnonzero(ob.weights[b]) + 1
        np.testing.assert_array_equal(seq[w_positions], np.concatenate([p[1:] for p in pieces]))
    assert min(lengths) >= 1 and np.mean(lengths) == pytest.approx(noise / spans)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"objective": "prefix"}, "objective"),
        ({"objective": "mlm", "model_vocab": V}, "model.vocab_size"),
        ({"objective": "span", "model_vocab": V + 1}, "model.vocab_size"),
        ({"objective": "mlm", "rate": 1.5}, "rate"),
        ({"objective": "span", "noise_density": 0.0}, "noise_density"),
        ({"objective": "span", "mean_span": 0.5}, "mean_span"),
    ],
)
def test_bad_objective_input_is_a_config_error(kwargs: dict, field: str) -> None:
    objective = kwargs.pop("objective")
    with pytest.raises(ConfigError) as err:
        make_objective_batch(objective, _batch(), seed=0, step=0, data_vocab=V, **kwargs)
    assert err.value.field == field


def test_jax_arrays_are_accepted() -> None:
    batch = jax.numpy.asarray(_batch())
    ob = make_objective_batch("mlm", batch, seed=0, step=0, data_vocab=V)
    assert ob.inputs.dtype == np.int32 and ob.weights.dtype == np.float32


# --- training with an objective (train.objective) ----------------------------------------------
SOURCE = "synthetic:markov?vocab=16&branching=2&tokens=100000&doc=512&seed=1"


def _config(objective: str, vocab: int, steps: int = 40):
    from scaling.train import RunConfig

    return RunConfig.from_dict(
        {
            "model": {
                "d_model": 32,
                "n_layers": 1,
                "n_heads": 2,
                "vocab_size": vocab,
                "context": 32,
                "variant": "llama",
            },
            "data": {"source": SOURCE},
            "optim": {"lr": 1e-2, "warmup_steps": 5},
            "train": {"batch_size": 16, "steps": steps, "objective": objective},
            "eval": {"n_evals": 2, "eval_sequences": 32, "eval_batch_size": 32},
            "checkpoint": {"every_steps": 0, "every_seconds": 0.0, "at_end": False},
        }
    )


def test_train_objective_config_key_and_stable_run_ids() -> None:
    from scaling.train import RunConfig

    d = RunConfig().to_dict()
    assert "objective" not in d["train"]  # the default leaves earlier runs' ids unchanged
    assert "window" not in d["model"] and "n_features" not in d["model"]
    mlm = _config("mlm", 17)
    assert mlm.train.objective == "mlm" and mlm.to_dict()["train"]["objective"] == "mlm"
    assert RunConfig.from_dict(mlm.to_dict()) == mlm
    with pytest.raises(ConfigError) as err:
        _config("denoise", 17)
    assert err.value.field == "train.objective"


@pytest.mark.parametrize("objective", ["mlm", "span"])
def test_training_with_an_objective_learns_and_counts_bidirectional_flops(
    objective: str, tmp_path, cache_dir
) -> None:
    from scaling import flops
    from scaling.train import train

    vocab = objective_vocab_size(objective, 16, 32)
    with pytest.raises(ConfigError) as err:  # the special tokens need room in the vocabulary
        train(_config(objective, 16), tmp_path / "small")
    assert err.value.field == "model.vocab_size"
    config = _config(objective, vocab)
    out = train(config, tmp_path / "run")
    assert out.state == "done"
    first, last = out.rows[0], out.rows[-1]
    # Loss in nats per predicted token: starts near log(vocab), falls below the unigram
    # entropy's bound log(16) as the model learns the chain.
    assert first["eval_loss"] > last["eval_loss"]
    assert last["eval_loss"] < np.log(16)
    causal = objective != "mlm"
    expected = flops.training_flops(config.model, last["tokens"], "attention", causal=causal)
    assert last["flops_attention"] == pytest.approx(expected)
