"""Tokenizers: raw UTF-8 bytes (vocabulary 256) and byte-level BPE trained offline.

Specs: ``bytes`` (the default) or ``bpe:V`` (byte-level BPE with V tokens, 257 <= V <= 2**20,
trained with the `tokenizers` library on the train split and saved as tokenizer.json beside
the shards). Synthetic sources bring their own symbols (``symbols:V``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from scaling.errors import ConfigError, DataError

DEFAULT_TOKENIZER = "bytes"
MAX_BPE_VOCAB = 1 << 20
TOKENIZER_HELP = f"bytes | bpe:V (257 <= V <= {MAX_BPE_VOCAB})"
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    spec: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


def parse_tokenizer(spec: str) -> tuple[str, int]:
    """(kind, vocab_size) of a tokenizer spec; kind is "bytes" or "bpe"."""
    if spec == "bytes":
        return "bytes", 256
    if isinstance(spec, str) and spec.startswith("bpe:"):
        raw = spec[4:].replace("_", "")
        if raw.isdigit() and 257 <= int(raw) <= MAX_BPE_VOCAB:
            return "bpe", int(raw)
    raise ConfigError("tokenizer", spec, TOKENIZER_HELP)


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ByteTokenizer:
    """One token per UTF-8 byte."""

    spec = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return self.encode_bytes(text.encode("utf-8"))

    @staticmethod
    def encode_bytes(data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; invalid UTF-8 (e.g. from a model's samples) becomes U+FFFD."""
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"byte token ids must be in [0, 255]; got {arr.min()}..{arr.max()}")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SymbolTokenizer:
    """The symbols of a synthetic source: decode writes them as space-separated integers."""

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)
        self.spec = f"symbols:{self.vocab_size}"

    def encode(self, text: str) -> np.ndarray:
        return np.array([int(t) for t in text.split()], dtype=token_dtype(self.vocab_size))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return " ".join(str(int(i)) for i in np.asarray(ids).ravel())


class BPETokenizer:
    """Byte-level BPE from the `tokenizers` library (lossless: decode(encode(x)) == x)."""

    def __init__(self, hf_tokenizer):
        self._tok = hf_tokenizer
        self.vocab_size = int(hf_tokenizer.get_vocab_size())
        self.spec = f"bpe:{self.vocab_size}"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train on `texts` (deterministic for a given input and vocabulary size)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
        )
        tok.train_from_iterator(texts, trainer)
        out = cls(tok)
        out.spec = f"bpe:{vocab_size}"  # the requested size; a small corpus may learn fewer
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, spec: str | None = None) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file not found")
        try:
            out = cls(HFTokenizer.from_str(path.read_text(encoding="utf-8")))
        except Exception as e:
            raise DataError(f"{path}: not a valid tokenizer.json ({e})") from None
        if spec:
            out.spec = spec
        return out

    def to_json(self) -> str:
        return self._tok.to_str()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(
            self._tok.encode(text, add_special_tokens=False).ids, dtype=token_dtype(self.vocab_size)
        )

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        dtype = token_dtype(self.vocab_size)
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=dtype) for e in encs]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).ravel()])


def load_tokenizer(spec: str, data_dir: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer named in a manifest (`spec`), reading tokenizer.json from `data_dir`."""
    if spec.startswith("symbols:"):
        return SymbolTokenizer(int(spec.split(":", 1)[1]))
    kind, _ = parse_tokenizer(spec)
    if kind == "bytes":
        return ByteTokenizer()
    if data_dir is None:
        raise ConfigError("data_dir", None, f"the shards folder holding {TOKENIZER_FILE}")
    return BPETokenizer.load(Path(data_dir) / TOKENIZER_FILE, spec)
