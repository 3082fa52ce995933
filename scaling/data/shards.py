"""Token shards on disk: `prepare` a source into train/val token files and a manifest.

A prepared folder holds ``train.bin`` and ``val.bin`` (raw little-endian uint16, or uint32 when
the vocabulary exceeds 65536, readable with `np.memmap`), ``manifest.json`` and, for BPE,
``tokenizer.json``. It is written into a temporary sibling folder and renamed into place, so a
killed or failed prepare leaves no partial dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaling import __version__
from scaling.data import corpora, synthetic
from scaling.data.tokenizers import (
    DEFAULT_TOKENIZER,
    TOKENIZER_FILE,
    BPETokenizer,
    ByteTokenizer,
    parse_tokenizer,
    token_dtype,
)
from scaling.errors import ConfigError, DataError
from scaling.io import atomic_write_json, atomic_write_text, read_json

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")


@dataclass
class Manifest:
    """What a shards folder holds; `entropy_rate` (nats/token) is set for synthetic sources."""

    source: str
    tokenizer: str
    vocab_size: int
    dtype: str
    tokens: dict[str, int]
    documents: dict[str, int]
    content_hash: str
    val_fraction: float
    unigram_entropy: float
    entropy_rate: float | None = None
    source_info: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    package_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TokenData:
    """Prepared tokens: train and val memmaps, the vocabulary size and the manifest."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    manifest: Manifest
    path: Path


def prepare(
    source: str,
    out_dir: str | os.PathLike,
    tokenizer: str | None = DEFAULT_TOKENIZER,
    *,
    val_fraction: float = corpora.DEFAULT_VAL_FRACTION,
    suffixes: tuple[str, ...] = corpora.DEFAULT_SUFFIXES,
    max_bytes: int | None = None,
    max_files: int | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Tokenize `source` into `out_dir` (which must not exist, or be empty, unless `overwrite`)."""
    src = corpora.parse_source(source)
    if src.scheme == "tokens":
        raise ConfigError("source", source, "a raw source; tokens: folders are already prepared")
    corpora.check_val_fraction(val_fraction)
    for name, v in (("max_bytes", max_bytes), ("max_files", max_files)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ConfigError(name, v, "a positive integer or none")
    tokenizer = tokenizer or DEFAULT_TOKENIZER
    kind, bpe_vocab = parse_tokenizer(tokenizer)
    if src.scheme == "synthetic" and kind != "bytes":
        raise ConfigError("tokenizer", tokenizer, "bytes (synthetic sources use their own symbols)")
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        manifest = _write_dataset(
            src, tmp, kind, bpe_vocab, val_fraction, tuple(suffixes), max_bytes, max_files
        )
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "a folder path (this is a file)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            "out", str(out), "a folder that does not exist yet or is empty (or overwrite: --force)"
        )


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists() and overwrite:
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rename(out, old / "d")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _write_dataset(
    src: corpora.SourceSpec,
    folder: Path,
    kind: str,
    bpe_vocab: int,
    val_fraction: float,
    suffixes: tuple[str, ...],
    max_bytes: int | None,
    max_files: int | None,
) -> Manifest:
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    entropy_rate = None
    if src.scheme == "synthetic":
        params = synthetic.parse_markov_params(src.query, src.spec)
        chain, docs = synthetic.markov_tokens(params)
        names = [f"doc{i:07d}" for i in range(len(docs))]
        is_val = corpora.split_by_document(names, [len(d) for d in docs], val_fraction)
        vocab_size, tok_spec = chain.vocab, f"symbols:{chain.vocab}"
        dtype = token_dtype(vocab_size)
        split_tokens = {
            split: _concat([d for d, v in zip(docs, is_val, strict=True) if v == (split == "val")])
            for split in SPLITS
        }
        entropy_rate = chain.entropy_rate()
        info = {"params": params, "stationary_entropy": chain.stationary_entropy()}
    else:
        corpus = corpora.read_text_corpus(
            src, suffixes=suffixes, max_bytes=max_bytes, max_files=max_files
        )
        names = corpus.names
        is_val = corpora.split_by_document(names, [len(d) for d in corpus.data], val_fraction)
        split_data = {
            split: [d for d, v in zip(corpus.data, is_val, strict=True) if v == (split == "val")]
            for split in SPLITS
        }
        info = {"root": corpus.root, "skipped": corpus.skipped}
        if src.scheme == "builtin":
            info["python"] = ".".join(map(str, __import__("sys").version_info[:3]))
        if kind == "bytes":
            tok_spec, vocab_size = "bytes", 256
            split_tokens = {
                s: ByteTokenizer.encode_bytes(b"".join(d)) for s, d in split_data.items()
            }
        else:
            texts = {s: [b.decode("utf-8") for b in d] for s, d in split_data.items()}
            bpe = BPETokenizer.train(texts["train"], bpe_vocab)
            atomic_write_text(folder / TOKENIZER_FILE, bpe.to_json())
            tok_spec, vocab_size = f"bpe:{bpe_vocab}", bpe.vocab_size
            split_tokens = {s: _concat(bpe.encode_batch(t)) for s, t in texts.items()}
        dtype = token_dtype(vocab_size)
    for split in SPLITS:
        if split_tokens[split].size == 0:
            raise DataError(f"source = {src.spec!r}: the {split} split has zero tokens")
    digest = hashlib.sha256()
    for split in SPLITS:
        arr = np.ascontiguousarray(split_tokens[split], dtype=dtype)
        arr.tofile(folder / f"{split}.bin")
        digest.update(arr.tobytes())
    info["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    from scaling.data.batches import unigram_entropy

    manifest = Manifest(
        source=src.spec,
        tokenizer=tok_spec,
        vocab_size=int(vocab_size),
        dtype=dtype.str,
        tokens={s: int(split_tokens[s].size) for s in SPLITS},
        documents={"train": int((~is_val).sum()), "val": int(is_val.sum())},
        content_hash=f"sha256:{digest.hexdigest()}",
        val_fraction=float(val_fraction),
        unigram_entropy=unigram_entropy(split_tokens["train"], vocab_size),
        entropy_rate=entropy_rate,
        source_info=info,
    )
    atomic_write_json(folder / MANIFEST_FILE, manifest.to_dict())
    return manifest


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def open_shards(path: str | os.PathLike) -> TokenData:
    """Open a prepared folder as memmaps, checking its manifest and file sizes."""
    path = Path(os.path.expanduser(path))
    mpath = path / MANIFEST_FILE
    if not path.is_dir():
        raise ConfigError("source", f"tokens:{path}", "a folder written by `scaling data prepare`")
    if not mpath.is_file():
        raise DataError(
            f"{path}: no {MANIFEST_FILE}; not a folder written by `scaling data prepare`"
        )
    try:
        manifest = Manifest.from_dict(read_json(mpath))
    except (ValueError, TypeError) as e:
        raise DataError(f"{mpath}: unreadable manifest ({e})") from None
    if manifest.version != FORMAT_VERSION:
        raise DataError(
            f"{mpath}: format version {manifest.version}; this scaling reads {FORMAT_VERSION}"
        )
    dtype = np.dtype(manifest.dtype)
    arrays = {}
    for split in SPLITS:
        f = path / f"{split}.bin"
        n = int(manifest.tokens[split])
        if not f.is_file() or f.stat().st_size != n * dtype.itemsize:
            raise DataError(f"{f}: missing or not {n} tokens of {dtype} as the manifest says")
        arrays[split] = np.memmap(f, dtype=dtype, mode="r", shape=(n,))
    return TokenData(arrays["train"], arrays["val"], manifest.vocab_size, manifest, path)
