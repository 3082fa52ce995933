"""`load_tokens`: prepare a source on first use into a cache folder, reuse it afterwards.

The cache root is `cache_dir`, else ``$SCALING_CACHE_DIR/data``, else ``~/.cache/scaling/data``.
Each entry is keyed on a hash of the source spec, tokenizer, split and reading options, and a
fingerprint of the input files (names, sizes, modification times), so an edited corpus is
prepared again. Concurrent callers serialize on a lock file; the entry itself appears by an
atomic rename, so a reader sees a complete dataset or none, and the temporary folder of a
killed prepare is removed by the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from pathlib import Path

from scaling.data import corpora, synthetic
from scaling.data.shards import FORMAT_VERSION, MANIFEST_FILE, TokenData, open_shards, prepare
from scaling.data.tokenizers import DEFAULT_TOKENIZER, parse_tokenizer
from scaling.errors import ConfigError
from scaling.io import canonical_json


def default_cache_dir() -> Path:
    env = os.environ.get("SCALING_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env)) / "data"
    return Path.home() / ".cache" / "scaling" / "data"


def load_tokens(
    source: str = corpora.DEFAULT_SOURCE,
    tokenizer: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = corpora.DEFAULT_VAL_FRACTION,
    suffixes: tuple[str, ...] = corpora.DEFAULT_SUFFIXES,
    max_bytes: int | None = None,
    max_files: int | None = None,
) -> TokenData:
    """Train/val token memmaps of `source`, preparing them into the cache on first use.

    `tokenizer` None means bytes for raw sources. A ``tokens:`` folder keeps the tokenizer it
    was prepared with: None or the default "bytes" accept it, any other value must match it.
    """
    src = corpora.parse_source(source)
    if src.scheme == "tokens":
        data = open_shards(src.target)
        if tokenizer not in (None, DEFAULT_TOKENIZER, data.manifest.tokenizer):
            raise ConfigError(
                "tokenizer", tokenizer, f"{data.manifest.tokenizer} (as {src.target} was prepared)"
            )
        return data
    tokenizer = tokenizer or DEFAULT_TOKENIZER
    parse_tokenizer(tokenizer)
    corpora.check_val_fraction(val_fraction)
    key = cache_key(src, tokenizer, val_fraction, tuple(suffixes), max_bytes, max_files)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    if (entry / MANIFEST_FILE).is_file():
        return open_shards(entry)
    with open(root / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (entry / MANIFEST_FILE).is_file():
                for stale in root.glob(
                    f".{key}.tmp-*"
                ):  # left by a killed prepare; we hold the lock
                    shutil.rmtree(stale, ignore_errors=True)
                try:
                    prepare(
                        source,
                        entry,
                        tokenizer,
                        val_fraction=val_fraction,
                        suffixes=tuple(suffixes),
                        max_bytes=max_bytes,
                        max_files=max_files,
                    )
                except OSError:
                    if not (entry / MANIFEST_FILE).is_file():  # lost a rename race: theirs is good
                        raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return open_shards(entry)


def cache_key(
    src: corpora.SourceSpec,
    tokenizer: str,
    val_fraction: float,
    suffixes: tuple[str, ...],
    max_bytes: int | None,
    max_files: int | None,
) -> str:
    """A readable, content-sensitive folder name for one prepared dataset."""
    ident: dict = {
        "version": FORMAT_VERSION,
        "scheme": src.scheme,
        "tokenizer": tokenizer,
        "val_fraction": float(val_fraction),
    }
    if src.scheme == "synthetic":
        ident["params"] = synthetic.parse_markov_params(src.query, src.spec)
        ident["kind"] = src.target
    else:
        ident.update(target=src.target, max_bytes=max_bytes, max_files=max_files)
        ident["suffixes"] = list(suffixes) if src.scheme == "text" else None
        root, files = corpora.list_files(src, suffixes)
        h = hashlib.sha256(str(root.resolve()).encode())
        for name, path in files:
            st = path.stat()
            h.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        ident["files"] = h.hexdigest()
    digest = hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{src.scheme}-{src.target}")[:48].strip("-")
    return f"{slug}-{re.sub(r'[^A-Za-z0-9]+', '', tokenizer)}-{digest}"
