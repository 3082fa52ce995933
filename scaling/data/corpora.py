"""Data sources: parse a source spec, list and read its documents, split them by document.

Source specs (strings, as in configs):
- ``builtin:python-stdlib`` (the default): the ``.py`` files of the running Python's standard
  library, without site-packages and test folders, sorted by relative path.
- ``synthetic:markov?...``: a Markov chain with a known entropy rate (see `scaling.data.synthetic`).
- ``text:PATH``: a UTF-8 file, a folder (recursively, files whose suffix is in `suffixes`,
  default `DEFAULT_SUFFIXES`, hidden files and folders skipped), or a glob (``**`` recursive).
- ``tokens:PATH``: a folder written by `scaling.data.shards.prepare`.

Documents are files; a file larger than `chunk_bytes(total)` (1/64 of the corpus, clamped to
4 KiB..1 MiB) is cut at line ends into parts ``name#k``, so that even a one-file corpus can be
split. The split is by document and deterministic: documents in the order of a hash of their
name go to validation until it holds `val_fraction` of the corpus (at least one document, at
least min(64 KiB, 10%) of the corpus, never every document).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.errors import ConfigError, DataError

SCHEMES = ("builtin", "synthetic", "text", "tokens")
BUILTINS = ("python-stdlib",)
DEFAULT_SOURCE = "builtin:python-stdlib"
DEFAULT_SUFFIXES = (".txt", ".md", ".rst", ".py")
DEFAULT_VAL_FRACTION = 0.01
MAX_FILE_BYTES = 1 << 30
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
SOURCE_HELP = (
    "builtin:python-stdlib | synthetic:markov?vocab=V&... | text:PATH (file, folder or glob) "
    "| tokens:PATH (prepared shards)"
)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: `scheme` ("builtin" | ...) and `target` (a name, kind or path)."""

    spec: str
    scheme: str
    target: str
    query: str = ""


@dataclass
class TextCorpus:
    """The documents of a text source (names, UTF-8 bytes) and what was skipped while reading."""

    names: list[str]
    data: list[bytes]
    root: str
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for d in self.data)


def parse_source(spec: str) -> SourceSpec:
    """Split ``scheme:target[?query]`` and check the scheme (paths are checked when read)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError("source", spec, SOURCE_HELP)
    scheme, _, rest = spec.partition(":")
    if scheme not in SCHEMES:
        raise ConfigError("source", spec, SOURCE_HELP)
    if not rest:
        raise ConfigError("source", spec, SOURCE_HELP)
    if scheme == "builtin":
        if rest not in BUILTINS:
            raise ConfigError("source", spec, " | ".join(f"builtin:{b}" for b in BUILTINS))
        return SourceSpec(spec, scheme, rest)
    if scheme == "synthetic":
        kind, _, query = rest.partition("?")
        from scaling.data.synthetic import KINDS, SPEC_HELP

        if kind not in KINDS:
            raise ConfigError("source", spec, SPEC_HELP)
        return SourceSpec(spec, scheme, kind, query)
    return SourceSpec(spec, scheme, rest)


def list_files(
    src: SourceSpec, suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
) -> tuple[Path, list[tuple[str, Path]]]:
    """(root, [(document name, path), ...]) of a builtin or text source, in a fixed order."""
    if src.scheme == "builtin":
        root = Path(sysconfig.get_paths()["stdlib"])
        return root, _walk(root, (".py",), STDLIB_EXCLUDED_DIRS, skip_hidden=False)
    if src.scheme != "text":
        raise ConfigError("source", src.spec, "a builtin: or text: source")
    path = Path(os.path.expanduser(src.target))
    if path.is_file():
        return path.parent, [(path.name, path)]
    if path.is_dir():
        return path, _walk(path, tuple(suffixes), frozenset(), skip_hidden=True)
    if path.exists():
        raise ConfigError("source", src.spec, "a regular file, a folder or a glob")
    if _GLOB_CHARS & set(src.target):
        matches = sorted(glob.glob(os.path.expanduser(src.target), recursive=True))
        files = [(m, Path(m)) for m in matches if Path(m).is_file()]
        if not files:
            raise DataError(f"source = {src.spec!r}: the glob matches no files")
        return Path("."), files
    raise ConfigError("source", src.spec, "an existing file, folder or glob (path not found)")


def _walk(
    root: Path, suffixes: tuple[str, ...], excluded: frozenset[str], *, skip_hidden: bool
) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d not in excluded and not (skip_hidden and d.startswith("."))
        ]
        for name in filenames:
            if skip_hidden and name.startswith("."):
                continue
            if name.endswith(suffixes):
                p = Path(dirpath) / name
                out.append((p.relative_to(root).as_posix(), p))
    out.sort(key=lambda t: t[0])
    return out


def read_text_corpus(
    src: SourceSpec,
    *,
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES,
    max_bytes: int | None = None,
    max_files: int | None = None,
) -> TextCorpus:
    """Read a builtin or text source's files (checked: regular, size, UTF-8) into documents.

    Undecodable or empty files are skipped (and listed in `skipped`) when they come from a
    folder or glob; a single file given by name that is not UTF-8 is refused.
    """
    root, files = list_files(src, suffixes)
    single = src.scheme == "text" and Path(os.path.expanduser(src.target)).is_file()
    names, data, skipped = [], [], []
    total = 0
    for name, path in files:
        if max_files is not None and len(names) >= max_files:
            break
        if max_bytes is not None and total >= max_bytes:
            break
        if not path.is_file():
            skipped.append(f"{name} (not a regular file)")
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path}: {size} bytes is larger than the limit of {MAX_FILE_BYTES}")
        if size == 0:
            skipped.append(f"{name} (empty)")
            continue
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if single:
                raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            skipped.append(f"{name} (not UTF-8)")
            continue
        names.append(name)
        data.append(raw)
        total += len(raw)
    if not names:
        why = f"; skipped: {', '.join(skipped[:5])}" if skipped else ""
        raise DataError(f"source = {src.spec!r} is empty: no readable documents{why}")
    names, data = _chunk_documents(names, data, chunk_bytes(total))
    return TextCorpus(names, data, str(root), skipped)


def chunk_bytes(total: int) -> int:
    """Largest document size: 1/64 of the corpus, at least 4 KiB, at most 1 MiB."""
    return int(min(1 << 20, max(4096, total // 64)))


def _chunk_documents(
    names: list[str], data: list[bytes], limit: int
) -> tuple[list[str], list[bytes]]:
    out_names, out_data = [], []
    for name, raw in zip(names, data, strict=True):
        parts = _cut(raw, limit)
        if len(parts) == 1:
            out_names.append(name)
            out_data.append(raw)
        else:
            out_names.extend(f"{name}#{k}" for k in range(len(parts)))
            out_data.extend(parts)
    return out_names, out_data


def _cut(raw: bytes, limit: int) -> list[bytes]:
    """Cut `raw` into parts of at most `limit` bytes, at line ends (else at a UTF-8 boundary)."""
    parts, pos = [], 0
    while len(raw) - pos > limit:
        cut = raw.rfind(b"\n", pos, pos + limit) + 1
        if cut <= pos:
            cut = pos + limit
            while cut > pos + 1 and (raw[cut] & 0xC0) == 0x80:
                cut -= 1
        parts.append(raw[pos:cut])
        pos = cut
    parts.append(raw[pos:])
    return parts


def name_hash(name: str) -> float:
    """A document's position in [0, 1), from SHA-256 of its name: the basis of the split."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64


def check_val_fraction(val_fraction: float) -> float:
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) <= 0.5:
        raise ConfigError("val_fraction", val_fraction, "a number in (0, 0.5]")
    return float(val_fraction)


def split_by_document(names: list[str], sizes: list[int], val_fraction: float) -> np.ndarray:
    """Boolean mask, True for validation documents (deterministic, by hash of the name)."""
    val_fraction = check_val_fraction(val_fraction)
    if len(names) < 2:
        raise DataError(
            f"the corpus has {len(names)} document; at least 2 are needed to split "
            "train/validation by document"
        )
    total = float(sum(sizes))
    target = max(val_fraction * total, min(65536.0, 0.1 * total))
    order = sorted(range(len(names)), key=lambda i: (name_hash(names[i]), names[i]))
    is_val = np.zeros(len(names), dtype=bool)
    held = 0
    for i in order[:-1]:  # never every document
        is_val[i] = True
        held += sizes[i]
        if held >= target:
            break
    return is_val
