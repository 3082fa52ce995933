"""Synthetic corpora with a known entropy rate: a seeded random sparse Markov chain.

Spec: ``synthetic:markov?vocab=64&branching=4&tokens=2000000&doc=4096&alpha=1.0&seed=0``
(every parameter optional; defaults in `MARKOV_DEFAULTS`). Each symbol has `branching`
successors (one of them the next symbol mod `vocab`, so the chain is irreducible) with
Dirichlet(`alpha`) probabilities. Documents are independent chains of `doc` symbols, each
started from the stationary distribution, so every position has the same conditional law and a
perfect model's loss per token is the entropy rate H = sum_i pi_i H(P_i) (nats), except the first
token of a document (entropy H(pi)): a model's loss can only approach H from above.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np

from scaling.errors import ConfigError

KINDS = ("markov",)
MARKOV_DEFAULTS: dict[str, float] = {
    "vocab": 64,
    "branching": 4,
    "tokens": 2_000_000,
    "doc": 4096,
    "alpha": 1.0,
    "seed": 0,
}
_INT_LIMITS = {
    "vocab": (2, 65536),
    "branching": (1, 65536),
    "tokens": (2, 500_000_000),
    "doc": (2, 100_000_000),
    "seed": (0, 2**63 - 1),
}
MAX_TRANSITIONS = 1 << 24  # vocab * branching: the size of the transition table
SPEC_HELP = (
    "synthetic:markov?vocab=V&branching=K&tokens=N&doc=L&alpha=A&seed=S "
    "(2<=V<=65536, 1<=K<=V, V*K<=2**24, 2<=N<=5e8, L>=2, A>0, S>=0; all optional)"
)


@dataclass(frozen=True)
class MarkovChain:
    """A sparse first-order Markov chain: state i goes to `successors[i, j]` w.p. `probs[i, j]`."""

    successors: np.ndarray  # [V, K] int64
    probs: np.ndarray  # [V, K] float64, rows sum to 1
    stationary: np.ndarray  # [V] float64

    @property
    def vocab(self) -> int:
        return int(self.probs.shape[0])

    def entropy_rate(self) -> float:
        """Exact entropy rate in nats: stationary-weighted entropy of the transition rows."""
        p = self.probs
        row_H = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        return float(np.dot(self.stationary, row_H))

    def stationary_entropy(self) -> float:
        """Entropy (nats) of the stationary distribution: the loss on a document's first token."""
        pi = self.stationary[self.stationary > 0]
        return float(-np.sum(pi * np.log(pi)))

    def log_prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log P(nxt | prev), elementwise; -inf for impossible transitions."""
        match = self.successors[prev] == nxt[..., None]
        p = np.sum(np.where(match, self.probs[prev], 0.0), axis=-1)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def sample(self, n_docs: int, doc_len: int, rng: np.random.Generator) -> np.ndarray:
        """[n_docs, doc_len] independent stationary chains (vectorized over documents)."""
        cum = np.cumsum(self.probs, axis=1)
        cum[:, -1] = 1.0
        out = np.empty((n_docs, doc_len), dtype=np.int32)
        cum_pi = np.cumsum(self.stationary)
        cum_pi[-1] = 1.0
        out[:, 0] = np.searchsorted(cum_pi, rng.random(n_docs), side="right")
        for t in range(1, doc_len):
            prev = out[:, t - 1]
            u = rng.random(n_docs)
            idx = np.sum(u[:, None] >= cum[prev], axis=1)
            out[:, t] = self.successors[prev, np.minimum(idx, cum.shape[1] - 1)]
        return out


def parse_markov_params(query: str, spec: str) -> dict[str, float]:
    """Parse and validate the `?key=value&...` part of a synthetic markov spec."""
    params = dict(MARKOV_DEFAULTS)
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in params:
            raise ConfigError(f"source.{key}", raw, SPEC_HELP, context=spec)
        try:
            value = float(raw) if key == "alpha" else int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"source.{key}", raw, SPEC_HELP, context=spec) from None
        params[key] = value
    for key, (lo, hi) in _INT_LIMITS.items():
        if not lo <= params[key] <= hi:
            raise ConfigError(f"source.{key}", params[key], f"{lo} <= {key} <= {hi}", context=spec)
    if params["branching"] > params["vocab"]:
        raise ConfigError(
            "source.branching", params["branching"], f"<= vocab ({params['vocab']})", context=spec
        )
    if params["vocab"] * params["branching"] > MAX_TRANSITIONS:
        raise ConfigError(
            "source.branching",
            params["branching"],
            f"vocab * branching <= {MAX_TRANSITIONS}",
            context=spec,
        )
    if not (params["alpha"] > 0 and np.isfinite(params["alpha"])):
        raise ConfigError("source.alpha", params["alpha"], "a positive number", context=spec)
    return params


def make_markov_chain(vocab: int, branching: int, alpha: float, seed: int) -> MarkovChain:
    """A seeded random sparse chain; successor i+1 (mod V) is always present (irreducible)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5EED])))
    succ = np.empty((vocab, branching), dtype=np.int64)
    for i in range(vocab):
        nxt = (i + 1) % vocab
        others = rng.choice(vocab - 1, size=branching - 1, replace=False)
        others = np.where(others >= nxt, others + 1, others)  # skip nxt itself
        succ[i] = np.sort(np.concatenate([[nxt], others]))
    probs = rng.dirichlet(np.full(branching, alpha), size=vocab)
    probs = np.maximum(probs, 1e-12)
    probs /= probs.sum(axis=1, keepdims=True)
    return MarkovChain(succ, probs, _stationary(succ, probs))


def _stationary(succ: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Stationary distribution pi = pi P of an irreducible chain.

    Exact linear solve up to 1024 states; beyond, power iteration on the lazy chain (P + I) / 2
    (same pi, aperiodic), which converges fast on these random expanders, and is checked.
    """
    V = probs.shape[0]
    if succ.shape[1] == 1:  # the cycle i -> i + 1: a permutation, so pi is uniform
        return np.full(V, 1.0 / V)
    if V <= 1024:
        A = np.zeros((V, V))
        np.add.at(A, (succ.ravel(), np.repeat(np.arange(V), succ.shape[1])), probs.ravel())
        A -= np.eye(V)
        A[-1, :] = 1.0  # replace one (redundant) balance equation by sum(pi) = 1
        b = np.zeros(V)
        b[-1] = 1.0
        pi = np.clip(np.linalg.solve(A, b), 0.0, None)
        return pi / pi.sum()
    pi = np.full(V, 1.0 / V)
    weights = probs.ravel()
    for _ in range(100_000):
        moved = np.bincount(
            succ.ravel(), weights=np.repeat(pi, succ.shape[1]) * weights, minlength=V
        )
        new = 0.5 * (pi + moved)
        new /= new.sum()
        if np.abs(new - pi).sum() < 1e-14:
            return new
        pi = new
    raise ConfigError("source.branching", succ.shape[1], "a chain that mixes (try branching >= 2)")


def markov_tokens(params: dict[str, float]) -> tuple[MarkovChain, list[np.ndarray]]:
    """The chain and its documents (exactly `tokens` symbols in all, at least two documents)."""
    chain = make_markov_chain(
        int(params["vocab"]), int(params["branching"]), float(params["alpha"]), int(params["seed"])
    )
    total = int(params["tokens"])
    doc = min(int(params["doc"]), -(-total // 2))
    n_docs = -(-total // doc)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(params["seed"]), 1])))
    docs_ND = chain.sample(n_docs, doc, rng)
    docs = [docs_ND[i] for i in range(n_docs)]
    docs[-1] = docs[-1][: total - doc * (n_docs - 1)]
    return chain, docs
