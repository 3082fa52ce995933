"""Small fixtures the tests share: sweep files as TOML text, and a run config.

`fake_grid`: gpt2 shapes with n_heads 2, context 16, vocab 64 and batch 4 (64 tokens a step),
a grid over `shapes` x optim.lr; sized for the fake trainers, which never build the model
(`sweep_fake_train` diverges a run at lr >= 1, at step 3).
`synthetic_grid`: one real d16 shape trained on a synthetic Markov corpus (batch 8 x context
16, 128 tokens a step) with two evaluations.
`tiny_config`: a d32 L2 run on a 16-symbol synthetic Markov corpus (`MARKOV`, entropy rate in
its manifest), 60 steps of 16 x 32 tokens with six evaluations and checkpoints every 10 steps.
"""

from __future__ import annotations

from scaling.train import RunConfig

MARKOV = "synthetic:markov?vocab=16&branching=2&tokens=200000&doc=512&seed=1"

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


def tiny_config(*layers: dict, **sections: dict) -> RunConfig:
    """The tiny run's config; each of `layers` ({section: {key: value}}) and then `sections`
    updates its sections' values in turn."""
    d = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "vocab_size": 16, "context": 32},
        "data": {"source": MARKOV},
        "optim": {"lr": 1e-2, "warmup_steps": 10},
        "train": {"batch_size": 16, "steps": 60},
        "eval": {"n_evals": 6, "eval_sequences": 64, "eval_batch_size": 32},
        "checkpoint": {"every_steps": 10, "every_seconds": 0.0},
    }
    for layer in (*layers, sections):
        for name, values in layer.items():
            d[name] = {**d.get(name, {}), **values}
    return RunConfig.from_dict(d)
