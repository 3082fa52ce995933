"""The synthetic Markov source: its exact entropy rate agrees with a long sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling.data.synthetic import (
    MarkovChain,
    _stationary,
    make_markov_chain,
    markov_tokens,
    parse_markov_params,
)
from scaling.errors import ConfigError


def test_entropy_rate_of_a_hand_computed_chain():
    succ = np.array([[0, 1], [0, 1]])
    probs = np.array([[0.9, 0.1], [0.5, 0.5]])
    pi = _stationary(succ, probs)
    np.testing.assert_allclose(pi, [5 / 6, 1 / 6], atol=1e-12)
    h01 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    chain = MarkovChain(succ, probs, pi)
    assert chain.entropy_rate() == pytest.approx(5 / 6 * h01 + 1 / 6 * math.log(2), abs=1e-12)


@pytest.mark.parametrize(("vocab", "branching"), [(32, 3), (2000, 3), (50, 1)])
def test_random_chain_is_stationary_and_sparse(vocab, branching):
    """Both the exact solve (<= 1024 states) and power iteration (above) satisfy pi P = pi."""
    chain = make_markov_chain(vocab=vocab, branching=branching, alpha=0.5, seed=7)
    moved = np.bincount(
        chain.successors.ravel(),
        weights=(chain.stationary[:, None] * chain.probs).ravel(),
        minlength=vocab,
    )
    np.testing.assert_allclose(moved, chain.stationary, rtol=1e-9, atol=1e-15)
    assert chain.stationary.sum() == pytest.approx(1.0)
    assert chain.successors.shape == (vocab, branching)
    assert all(len(set(row)) == branching for row in chain.successors.tolist())
    np.testing.assert_allclose(chain.probs.sum(axis=1), 1.0)


def test_entropy_rate_matches_long_sample():
    """Two estimates from ~400k transitions of 16-state, 4-successor chains.

    (a) the mean surprisal -log P(x_t | x_{t-1}) under the true chain has expectation exactly H;
    documents are independent chains, so the standard error is taken over per-document means
    and we allow 4 of them. (b) the plug-in conditional entropy from transition counts has a
    bias of about -(16*4 - 16) / (2 * 4e5) = -6e-5 nats and a standard deviation near
    sqrt(Var(surprisal) / n) ~ 1e-3, so a 5e-3 tolerance does not fail by chance, yet is far
    below the spread of the per-state entropies a wrong weighting would shift H by.
    """
    params = parse_markov_params("vocab=16&branching=4&tokens=400000&doc=2000&seed=3", "t")
    chain, docs = markov_tokens(params)
    H = chain.entropy_rate()
    assert sum(len(d) for d in docs) == 400_000
    per_doc = np.array([-chain.log_prob(d[:-1], d[1:]).mean() for d in docs])
    se = per_doc.std(ddof=1) / math.sqrt(len(per_doc))
    assert abs(per_doc.mean() - H) < 4 * se

    counts = np.zeros((16, 16))
    for d in docs:
        np.add.at(counts, (d[:-1], d[1:]), 1)
    row = counts.sum(axis=1, keepdims=True)
    nz = counts > 0
    plug_in = -np.sum(counts[nz] * np.log((counts / row)[nz])) / counts.sum()
    assert plug_in == pytest.approx(H, abs=5e-3)


def test_first_symbols_follow_stationary_distribution():
    params = parse_markov_params("vocab=8&branching=3&tokens=400000&doc=20&seed=1", "t")
    chain, docs = markov_tokens(params)
    firsts = np.array([d[0] for d in docs])
    freq = np.bincount(firsts, minlength=8) / len(firsts)
    np.testing.assert_allclose(freq, chain.stationary, atol=0.02)


def test_same_seed_same_tokens_other_seed_differs():
    p = parse_markov_params("vocab=8&tokens=5000&seed=2", "t")
    a = np.concatenate(markov_tokens(p)[1])
    b = np.concatenate(markov_tokens(p)[1])
    c = np.concatenate(markov_tokens({**p, "seed": 3})[1])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("vocab=1", "source.vocab"),
        ("vocab=70000", "source.vocab"),
        ("vocab=8&branching=9", "source.branching"),
        ("tokens=abc", "source.tokens"),
        ("alpha=-1", "source.alpha"),
        ("colour=red", "source.colour"),
        ("seed=-4", "source.seed"),
    ],
)
def test_bad_parameters_name_the_field(query, field):
    with pytest.raises(ConfigError) as e:
        parse_markov_params(query, f"synthetic:markov?{query}")
    assert e.value.field == field
    assert field in str(e.value)
