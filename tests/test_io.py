"""Atomic writes leave the old file or the new one; torn JSON lines are skipped."""

import json
import os

import pytest

from scaling.io import append_jsonl, atomic_write_json, canonical_json, read_json, read_jsonl


def test_atomic_write_json_roundtrip_full_precision(tmp_path):
    p = tmp_path / "a" / "x.json"
    atomic_write_json(p, {"x": 0.1 + 0.2, "n": 3})
    assert read_json(p) == {"x": 0.30000000000000004, "n": 3}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]  # no temporary left behind


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"v": object()})
    assert read_json(p) == {"v": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_read_jsonl_skips_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 1})
    append_jsonl(p, {"step": 2})
    with open(p, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(p)] == [1, 2]


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert json.loads(canonical_json({"a": 1.5})) == {"a": 1.5}
