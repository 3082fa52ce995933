"""Corpora, splits, shards and the cache: round trips, determinism, atomicity, concurrency."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.data import corpora, shards
from scaling.data.cache import cache_key, load_tokens
from scaling.data.corpora import parse_source, read_text_corpus, split_by_document
from scaling.data.shards import open_shards, prepare
from scaling.data.tokenizers import token_dtype


def make_text_folder(root: Path, n_files: int = 40, seed: int = 0) -> Path:
    """A folder of small UTF-8 files (some nested, some with non-ASCII text, one ignored)."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "déjà", "vu", "naïve", "λ", "数据", "end"]
    for i in range(n_files):
        sub = root / ("nested" if i % 3 else "") / f"f{i:03d}.txt"
        sub.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(words, size=12)) for _ in range(int(rng.integers(20, 60)))]
        sub.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "image.bin").write_bytes(b"\x00\xff" * 50)  # suffix not read
    return root


def test_split_is_deterministic_disjoint_and_by_name():
    names = [f"doc{i}" for i in range(500)]
    sizes = [1000] * 500
    a = split_by_document(names, sizes, 0.02)
    b = split_by_document(list(reversed(names)), sizes, 0.02)[::-1]
    np.testing.assert_array_equal(a, b)  # independent of the listing order
    assert 10 <= a.sum() <= 60  # min(64 KiB, 10%) = 50 docs of 1000 here, 2% would be 10
    assert 0 < a.sum() < len(names)
    c = split_by_document(names, sizes, 0.2)
    assert set(np.flatnonzero(a)) <= set(np.flatnonzero(c))  # the same hash order, filled further
    assert not split_by_document(["x", "y"], [5, 5], 0.5).all()  # never every document


def test_text_folder_round_trips_through_shards(tmp_path):
    folder = make_text_folder(tmp_path / "corpus")
    m = prepare(f"text:{folder}", tmp_path / "ds", val_fraction=0.1)
    data = open_shards(tmp_path / "ds")
    assert isinstance(data.train, np.memmap)
    assert data.train.dtype == np.dtype("<u2")
    assert m.vocab_size == data.vocab_size == 256
    assert m.documents["train"] + m.documents["val"] == 40
    assert m.documents["val"] >= 1 and m.documents["train"] >= 1

    corpus = read_text_corpus(parse_source(f"text:{folder}"))
    assert all(n.endswith(".txt") for n in corpus.names)
    is_val = split_by_document(corpus.names, [len(d) for d in corpus.data], 0.1)
    expect = {
        "train": b"".join(d for d, v in zip(corpus.data, is_val, strict=True) if not v),
        "val": b"".join(d for d, v in zip(corpus.data, is_val, strict=True) if v),
    }
    assert bytes(np.asarray(data.train, dtype=np.uint8)) == expect["train"]
    assert bytes(np.asarray(data.val, dtype=np.uint8)) == expect["val"]
    assert m.tokens == {"train": len(expect["train"]), "val": len(expect["val"])}
    digest = hashlib.sha256(np.asarray(data.train).tobytes() + np.asarray(data.val).tobytes())
    assert m.content_hash == f"sha256:{digest.hexdigest()}"

    again = prepare(f"text:{folder}", tmp_path / "ds2", val_fraction=0.1)
    assert again.content_hash == m.content_hash


def test_single_file_is_cut_into_documents(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("".join(f"line {i} of the only file\n" for i in range(2000)), encoding="utf-8")
    m = prepare(f"text:{f}", tmp_path / "ds")
    assert m.documents["train"] >= 2 and m.documents["val"] >= 1
    data = open_shards(tmp_path / "ds")
    assert data.train.size + data.val.size == f.stat().st_size


def test_glob_source(tmp_path):
    folder = make_text_folder(tmp_path / "corpus", n_files=12)
    m = prepare(f"text:{folder}/**/*.txt", tmp_path / "ds")
    assert m.documents["train"] + m.documents["val"] == 12


def test_synthetic_manifest_and_symbols(tmp_path):
    m = prepare("synthetic:markov?vocab=12&branching=3&tokens=30000&doc=500&seed=4", tmp_path / "s")
    data = open_shards(tmp_path / "s")
    assert m.vocab_size == 12 and m.tokenizer == "symbols:12"
    assert m.tokens["train"] + m.tokens["val"] == 30000
    assert int(max(data.train.max(), data.val.max())) < 12
    assert 0 < m.entropy_rate < np.log(3) + 1e-9  # at most log(branching)
    assert m.source_info["stationary_entropy"] > m.entropy_rate


def test_dtype_widens_past_65536():
    assert token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")


def test_failed_prepare_leaves_nothing(tmp_path, monkeypatch):
    folder = make_text_folder(tmp_path / "corpus", n_files=6)

    def boom(*args, **kwargs):
        raise RuntimeError("killed while writing the manifest")

    monkeypatch.setattr(shards, "atomic_write_json", boom)
    out = tmp_path / "out" / "ds"
    with pytest.raises(RuntimeError, match="killed"):
        prepare(f"text:{folder}", out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary folder left behind


def test_overwrite_replaces_only_when_asked(tmp_path):
    folder = make_text_folder(tmp_path / "corpus", n_files=6)
    prepare(f"text:{folder}", tmp_path / "ds")
    m = prepare("synthetic:markov?vocab=5&tokens=3000", tmp_path / "ds", overwrite=True)
    assert open_shards(tmp_path / "ds").manifest.content_hash == m.content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "ds"]


def test_stdlib_subset_is_sorted_python_without_tests(tmp_path):
    corpus = read_text_corpus(parse_source("builtin:python-stdlib"), max_files=40)
    names = [n.split("#")[0] for n in corpus.names]
    assert names == sorted(names)
    assert all(n.endswith(".py") for n in names)
    assert not any(set(n.split("/")) & corpora.STDLIB_EXCLUDED_DIRS for n in names)
    m = prepare("builtin:python-stdlib", tmp_path / "ds", max_files=40)
    assert m.source_info["python"].count(".") == 2
    assert m.tokens["train"] + m.tokens["val"] == corpus.total_bytes


def test_cache_prepares_once_and_notices_edits(tmp_path):
    folder = make_text_folder(tmp_path / "corpus", n_files=8)
    cache = tmp_path / "cache"
    a = load_tokens(f"text:{folder}", cache_dir=cache)
    stamp = (a.path / "manifest.json").stat().st_mtime_ns
    b = load_tokens(f"text:{folder}", cache_dir=cache)
    assert b.path == a.path
    assert (b.path / "manifest.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(a.train, b.train)

    (folder / "f000.txt").write_text("changed text\n" * 50, encoding="utf-8")
    c = load_tokens(f"text:{folder}", cache_dir=cache)
    assert c.path != a.path
    assert c.manifest.content_hash != a.manifest.content_hash
    d = load_tokens(f"tokens:{c.path}")
    assert d.manifest == c.manifest


def test_cache_removes_what_a_killed_prepare_left(tmp_path):
    source = "synthetic:markov?vocab=6&tokens=4000"

    key = cache_key(parse_source(source), "bytes", 0.01, corpora.DEFAULT_SUFFIXES, None, None)
    stale = tmp_path / f".{key}.tmp-dead"
    stale.mkdir()
    (stale / "train.bin").write_bytes(b"\0" * 10)
    data = load_tokens(source, cache_dir=tmp_path)
    assert data.path == tmp_path / key
    assert not stale.exists()


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "env"))
    data = load_tokens("synthetic:markov?vocab=6&tokens=4000")
    assert data.path.parent == tmp_path / "env" / "data"


def test_concurrent_first_use_ends_with_one_good_copy(tmp_path):
    source = "synthetic:markov?vocab=50&branching=5&tokens=300000&doc=1000&seed=9"
    code = (
        "import sys; from scaling.data.cache import load_tokens;"
        f"d = load_tokens({source!r}, cache_dir=sys.argv[1]);"
        "print(d.path, d.manifest.content_hash)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    outs = [p.communicate()[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    entries = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    assert open_shards(entries[0]).manifest.content_hash == outs[0].split()[1]
