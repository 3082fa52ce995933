"""Tokenizers: bytes and byte-level BPE round-trip text exactly; BPE training is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.data.corpora import parse_source, read_text_corpus, split_by_document
from scaling.data.shards import open_shards, prepare
from scaling.data.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer, parse_tokenizer
from scaling.errors import ConfigError

TEXT = [
    "def add(a, b):\n    return a + b\n",
    "Le cœur a ses raisons que la raison ne connaît point. 数据 λx.x — ok\n",
    "    indented\ttabs\r\nand windows line ends\n\n\n",
] * 30
SAMPLE = "Ünïcödé text, emoji 🙂, code `x = [i**2 for i in range(10)]`\n\twith tabs  and  spaces"


def test_bytes_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(SAMPLE)
    assert ids.max() < 256 and ids.size == len(SAMPLE.encode("utf-8"))
    assert tok.decode(ids) == SAMPLE


def test_bpe_round_trip_and_compression():
    tok = BPETokenizer.train(TEXT, 300)
    assert 256 < tok.vocab_size <= 300
    for text in [SAMPLE, *TEXT[:3], ""]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode(TEXT[0]).size < len(TEXT[0].encode("utf-8"))


def test_bpe_training_is_deterministic():
    assert BPETokenizer.train(TEXT, 290).to_json() == BPETokenizer.train(TEXT, 290).to_json()


def test_bpe_shards_decode_to_the_train_text(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):
        (folder / f"d{i:02d}.md").write_text(TEXT[i % 3] * (5 + i), encoding="utf-8")
    m = prepare(f"text:{folder}", tmp_path / "ds", "bpe:280")
    assert m.tokenizer == "bpe:280"
    assert (tmp_path / "ds" / "tokenizer.json").is_file()
    data = open_shards(tmp_path / "ds")
    tok = load_tokenizer(m.tokenizer, data.path)
    assert tok.vocab_size == m.vocab_size
    assert int(data.train.max()) < m.vocab_size
    corpus = read_text_corpus(parse_source(f"text:{folder}"))
    is_val = split_by_document(corpus.names, [len(d) for d in corpus.data], m.val_fraction)
    for split, want_val in (("train", False), ("val", True)):
        docs = [d for d, v in zip(corpus.data, is_val, strict=True) if v == want_val]
        ids = np.asarray(getattr(data, split))
        assert tok.decode(ids) == b"".join(docs).decode("utf-8")


@pytest.mark.parametrize("spec", ["bpe", "bpe:", "bpe:100", "bpe:abc", "words", "", "BYTES"])
def test_bad_tokenizer_spec(spec):
    with pytest.raises(ConfigError) as e:
        parse_tokenizer(spec)
    assert e.value.field == "tokenizer"


def test_good_tokenizer_specs():
    assert parse_tokenizer("bytes") == ("bytes", 256)
    assert parse_tokenizer("bpe:4096") == ("bpe", 4096)
