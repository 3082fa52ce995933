"""The small sweep files the sweep tests share, as TOML text.

`fake_grid`: gpt2 shapes with n_heads 2, context 16, vocab 64 and batch 4 (64 tokens a step),
a grid over `shapes` x optim.lr; sized for the fake trainers, which never build the model
(`sweep_fake_train` diverges a run at lr >= 1, at step 3).
`synthetic_grid`: one real d16 shape trained on a synthetic Markov corpus (batch 8 x context
16, 128 tokens a step) with two evaluations.
"""

from __future__ import annotations

ONE_SHAPE = "[{d_model = 16, n_layers = 1}]"
TWO_SHAPES = "[{d_model = 16, n_layers = 1}, {d_model = 32, n_layers = 2}]"
TOKENS_PER_STEP = 64  # fake_grid: batch 4 x context 16


def fake_grid(tokens: int, lrs: str = "1e-3, 3e-3", shapes: str = TWO_SHAPES) -> str:
    """A grid of `shapes` (TOML list) x optim.lr in `lrs`, each run `tokens` tokens long."""
    return f"""
[base.model]
n_heads = 2
context = 16
vocab_size = 64
[base.train]
batch_size = 4
[design]
kind = "grid"
shapes = {shapes}
tokens = [{tokens}]
[axes]
"optim.lr" = [{lrs}]
"""


def synthetic_grid(tokens: str, lrs: str | None = None) -> str:
    """One d16 L1 H2 shape on a synthetic Markov corpus for each of `tokens` (a TOML list's
    items), with an optim.lr axis when `lrs` is given."""
    axes = f'[axes]\n"optim.lr" = [{lrs}]\n' if lrs else ""
    return f"""
[base.model]
context = 16
vocab_size = 64
[base.data]
source = "synthetic:markov?vocab=64&branching=4&tokens=50000&doc=512&seed=3"
[base.train]
batch_size = 8
[base.eval]
n_evals = 2
eval_sequences = 16
eval_batch_size = 16
[design]
kind = "grid"
shapes = [{{d_model = 16, n_layers = 1, n_heads = 2}}]
tokens = [{tokens}]
{axes}"""
