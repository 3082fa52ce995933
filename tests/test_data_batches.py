"""Batches: a pure function of (seed, step); a fixed, non-overlapping validation sample."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from scaling.data.batches import eval_batches, train_batch, unigram_entropy
from scaling.errors import ConfigError, DataError

TOKENS = np.arange(10_000, dtype=np.uint16)  # each window's first value is its start


def test_same_seed_and_step_give_the_same_batch():
    a = train_batch(TOKENS, seed=3, step=17, batch_size=8, context=32)
    b = train_batch(TOKENS, seed=3, step=17, batch_size=8, context=32)
    assert a.dtype == np.int32
    assert a.shape == (8, 33)
    np.testing.assert_array_equal(a, b)


def test_steps_and_seeds_give_different_batches():
    batches = [train_batch(TOKENS, seed=0, step=s, batch_size=8, context=32) for s in range(20)]
    starts = {tuple(b[:, 0]) for b in batches}
    assert len(starts) == 20
    other = train_batch(TOKENS, seed=1, step=0, batch_size=8, context=32)
    assert not np.array_equal(other, batches[0])


def test_windows_are_contiguous_and_cover_the_whole_range():
    starts = []
    for step in range(200):
        b = train_batch(TOKENS[:100], seed=0, step=step, batch_size=16, context=9)
        np.testing.assert_array_equal(b - b[:, :1], np.broadcast_to(np.arange(10), b.shape))
        starts.extend(b[:, 0].tolist())
    assert min(starts) == 0
    assert max(starts) == 90  # the last start that fits context + 1 = 10 tokens


def _batch_digest_in_subprocess() -> str:
    code = (
        "import hashlib, numpy as np;"
        "from scaling.data.batches import train_batch;"
        "b = train_batch(np.arange(10000, dtype=np.uint16), seed=5, step=123, batch_size=4,"
        " context=16);"
        "print(hashlib.sha256(b.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_batch_is_identical_in_another_process():
    here = train_batch(TOKENS, seed=5, step=123, batch_size=4, context=16)
    assert hashlib.sha256(here.tobytes()).hexdigest() == _batch_digest_in_subprocess()


def test_memmap_tokens_work(tmp_path):
    f = tmp_path / "t.bin"
    TOKENS.tofile(f)
    mm = np.memmap(f, dtype=np.uint16, mode="r")
    np.testing.assert_array_equal(
        train_batch(mm, seed=1, step=2, batch_size=4, context=8),
        train_batch(TOKENS, seed=1, step=2, batch_size=4, context=8),
    )


def test_eval_batches_are_fixed_aligned_and_disjoint():
    val = np.arange(5_000, dtype=np.uint16)
    a = eval_batches(val, context=15, n_sequences=100, batch_size=32)
    b = eval_batches(val, context=15, n_sequences=100, batch_size=32)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 32, 16)  # 100 sequences rounded down to whole batches of 32
    rows = a.reshape(-1, 16)
    assert np.all(rows[:, 0] % 16 == 0)  # aligned windows never overlap
    assert len(set(rows[:, 0].tolist())) == rows.shape[0]
    np.testing.assert_array_equal(rows - rows[:, :1], np.broadcast_to(np.arange(16), rows.shape))
    assert rows[:, 0].max() > 2_500  # spread over the split, not only its start
    c = eval_batches(val, context=15, n_sequences=100, batch_size=32, seed=1)
    assert not np.array_equal(a, c)


def test_eval_batches_use_every_window_when_few():
    val = np.arange(100, dtype=np.uint16)
    out = eval_batches(val, context=9, n_sequences=1000, batch_size=4)
    assert out.shape == (2, 4, 10)  # 10 windows, 8 in whole batches of 4
    small = eval_batches(val, context=9, n_sequences=1000, batch_size=64)
    assert small.shape == (1, 10, 10)  # the batch shrinks to the 10 windows there are
    np.testing.assert_array_equal(small[0][:, 0], np.arange(0, 100, 10))


def test_too_few_tokens_names_context_and_count():
    with pytest.raises(DataError, match=r"has 10 tokens.*context = 10"):
        train_batch(np.arange(10), seed=0, step=0, batch_size=2, context=10)
    with pytest.raises(DataError, match=r"validation split has 5 tokens.*context = 8"):
        eval_batches(np.arange(5), context=8, n_sequences=4, batch_size=2)
    train_batch(np.arange(11), seed=0, step=0, batch_size=2, context=10)  # exactly one fits


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seed": -1}, "data_seed"),
        ({"step": 1.5}, "step"),
        ({"batch_size": 0}, "batch_size"),
        ({"context": -3}, "context"),
    ],
)
def test_bad_batch_arguments_name_the_field(kwargs, field):
    args = {"seed": 0, "step": 0, "batch_size": 2, "context": 4, **kwargs}
    with pytest.raises(ConfigError) as e:
        train_batch(TOKENS, **args)
    assert e.value.field == field


def test_unigram_entropy():
    assert unigram_entropy(np.zeros(100, dtype=np.uint16)) == 0.0
    assert unigram_entropy(np.arange(256, dtype=np.uint16).repeat(3)) == pytest.approx(np.log(256))
    two = np.array([0, 0, 0, 1], dtype=np.uint16)
    assert unigram_entropy(two) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
