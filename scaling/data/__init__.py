"""Data: corpora, tokenizers, token shards on disk, and batches as pure functions of (seed, step).

Typical use::

    data = load_tokens("builtin:python-stdlib")          # prepared once, cached
    batch = train_batch(data.train, seed=0, step=t, batch_size=64, context=256)
    val = eval_batches(data.val, context=256, n_sequences=256, batch_size=64)
"""

from scaling.data.batches import check_enough_tokens, eval_batches, train_batch, unigram_entropy
from scaling.data.cache import default_cache_dir, load_tokens
from scaling.data.corpora import DEFAULT_SOURCE, DEFAULT_VAL_FRACTION, parse_source
from scaling.data.shards import Manifest, TokenData, open_shards, prepare
from scaling.data.tokenizers import DEFAULT_TOKENIZER, load_tokenizer, parse_tokenizer

__all__ = [
    "DEFAULT_SOURCE",
    "DEFAULT_TOKENIZER",
    "DEFAULT_VAL_FRACTION",
    "Manifest",
    "TokenData",
    "check_enough_tokens",
    "default_cache_dir",
    "eval_batches",
    "load_tokenizer",
    "load_tokens",
    "open_shards",
    "parse_source",
    "parse_tokenizer",
    "prepare",
    "train_batch",
    "unigram_entropy",
]
