"""Bad data input: one clear error naming the field or path, a CLI exit of 2, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from scaling.cli.main import main
from scaling.data.cache import load_tokens
from scaling.data.shards import open_shards, prepare
from scaling.errors import ConfigError, DataError


def _assert_nothing_written(root: Path) -> None:
    assert not (root / "out").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("source", "error", "needle"),
    [
        ("text:{tmp}/missing", ConfigError, "path not found"),
        ("text:{tmp}/nothing-*.txt", DataError, "matches no files"),
        ("ftp:example.com/data", ConfigError, "source = 'ftp:example.com/data'"),
        ("python-stdlib", ConfigError, "source = 'python-stdlib'"),
        ("builtin:linux-kernel", ConfigError, "builtin:python-stdlib"),
        ("synthetic:hmm", ConfigError, "synthetic:markov"),
        ("synthetic:markov?vocab=x", ConfigError, "source.vocab = 'x'"),
        ("tokens:{tmp}/out", ConfigError, "already prepared"),
    ],
)
def test_bad_sources(tmp_path, source, error, needle):
    with pytest.raises(error, match=re.escape(needle)):
        prepare(source.format(tmp=tmp_path), tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_empty_corpora(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.csv").write_text("a,b\n")  # not a text suffix
    (empty / "blank.txt").write_text("")
    with pytest.raises(DataError, match=r"is empty: no readable documents.*blank.txt \(empty\)"):
        prepare(f"text:{empty}", tmp_path / "out")
    bad = tmp_path / "latin1"
    bad.mkdir()
    (bad / "a.txt").write_bytes("café".encode("latin-1") * 100)
    with pytest.raises(DataError, match=r"a.txt \(not UTF-8\)"):
        prepare(f"text:{bad}", tmp_path / "out")
    with pytest.raises(DataError, match=r"a.txt: not UTF-8 text"):
        prepare(f"text:{bad / 'a.txt'}", tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_undecodable_files_in_a_folder_are_skipped_and_listed(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "bad.txt").write_bytes(b"\xff\xfe" * 100)
    for i in range(3):
        (folder / f"ok{i}.txt").write_text(f"good text {i}\n" * 500)
    m = prepare(f"text:{folder}", tmp_path / "ds")
    assert m.source_info["skipped"] == ["bad.txt (not UTF-8)"]
    assert m.tokens["train"] + m.tokens["val"] == 3 * len("good text 0\n") * 500


def test_corpus_too_small_for_one_sequence(tmp_path):
    data = load_tokens("synthetic:markov?vocab=4&tokens=100&doc=50", cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"train split has \d+ tokens.*context = 256"):
        from scaling.data import train_batch

        train_batch(data.train, seed=0, step=0, batch_size=4, context=256)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tokenizer": "bpe:12"}, "tokenizer"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"max_files": 0}, "max_files"),
    ],
)
def test_bad_options_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(ConfigError) as e:
        prepare("synthetic:markov?vocab=4&tokens=1000", tmp_path / "out", **kwargs)
    assert e.value.field == field
    _assert_nothing_written(tmp_path)


def test_synthetic_refuses_bpe(tmp_path):
    with pytest.raises(ConfigError, match="synthetic sources use their own symbols"):
        prepare("synthetic:markov?vocab=4&tokens=1000", tmp_path / "out", "bpe:300")


def test_out_dir_that_holds_something_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="out = "):
        prepare("synthetic:markov?vocab=4&tokens=1000", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_tokens_folder_checks(tmp_path):
    with pytest.raises(ConfigError, match="a folder written by"):
        open_shards(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match=r"no manifest\.json"):
        load_tokens(f"tokens:{tmp_path / 'junk'}")
    prepare("synthetic:markov?vocab=4&tokens=1000", tmp_path / "ds")
    assert load_tokens(f"tokens:{tmp_path / 'ds'}", "bytes").vocab_size == 4  # the default
    with pytest.raises(ConfigError, match="tokenizer = 'bpe:500'"):
        load_tokens(f"tokens:{tmp_path / 'ds'}", "bpe:500")
    with open(tmp_path / "ds" / "train.bin", "ab") as f:
        f.write(np.zeros(3, dtype=np.uint16).tobytes())
    with pytest.raises(DataError, match=r"train\.bin: missing or not"):
        open_shards(tmp_path / "ds")


def test_cli_prepare_summary(tmp_path, capsys):
    rc = main(
        ["data", "prepare", "synthetic:markov?vocab=8&tokens=20000", "--out", str(tmp_path / "d")]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("\n") == 1
    assert "train 1" in out and "vocab 8" in out and "entropy rate" in out
    assert open_shards(tmp_path / "d").manifest.tokens["train"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["text:{tmp}/missing"], "text:{tmp}/missing"),
        (["unknown:x"], "source = 'unknown:x'"),
        (["synthetic:markov?vocab=4&tokens=1000", "--tokenizer", "bpe:1"], "tokenizer = 'bpe:1'"),
        (["synthetic:markov?vocab=4&tokens=1000", "--val-fraction", "2"], "val_fraction = 2.0"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    rc = main(["data", "prepare", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("scaling data: error:")
    assert needle.format(tmp=tmp_path) in err
    _assert_nothing_written(tmp_path)
