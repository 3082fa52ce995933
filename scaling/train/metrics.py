"""A run folder's record: config.json, status.json and metrics.jsonl (one row per evaluation).

Rows carry cumulative training FLOPs under every convention of `scaling.flops`. Non-finite
floats are written as null (strict JSON). All writes go through `scaling.io` (atomic).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from scaling import flops
from scaling.io import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl
from scaling.model.shape import ModelShape

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
STATES = ("running", "done", "diverged", "failed")


def finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def flops_columns(shape: ModelShape, tokens: int, causal: bool = True) -> dict[str, float]:
    """Cumulative training FLOPs after `tokens` tokens: flops_kaplan, flops_attention, ...
    (`causal=False`: bidirectional attention, as the mlm objective trains)."""
    return {
        f"flops_{c}": flops.training_flops(shape, tokens, c, causal=causal)
        for c in flops.CONVENTIONS
    }


def metrics_row(
    shape: ModelShape, *, step: int, tokens: int, causal: bool = True, **values: Any
) -> dict[str, Any]:
    """One evaluation row: step, tokens, FLOPs (each convention), then `values` (floats
    sanitized)."""
    columns = flops_columns(shape, tokens, causal)
    row: dict[str, Any] = {"step": int(step), "tokens": int(tokens), **columns}
    for k, v in values.items():
        row[k] = finite_or_none(v) if isinstance(v, float) else v
    return row


def append_row(run_dir: Path, row: dict[str, Any]) -> None:
    append_jsonl(run_dir / METRICS_FILE, row)


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / METRICS_FILE)


def truncate_rows(run_dir: Path, step: int) -> list[dict[str, Any]]:
    """Keep only rows at or before `step` (atomic rewrite); returns the kept rows."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    rows = read_jsonl(path)
    kept = [r for r in rows if int(r.get("step", 0)) <= step]
    if len(kept) != len(rows) or path.read_bytes()[-1:] not in (b"", b"\n"):
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_text(path, text)
    return kept


def write_status(run_dir: Path, state: str, *, step: int, tokens: int, **extra: Any) -> None:
    """Atomically write status.json: state, step, tokens, updated (unix time), extra fields."""
    assert state in STATES, state
    status = {"state": state, "step": int(step), "tokens": int(tokens), "updated": time.time()}
    status.update({k: v for k, v in extra.items() if v is not None})
    atomic_write_json(run_dir / STATUS_FILE, status)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATUS_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def write_config(run_dir: Path, config_dict: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CONFIG_FILE, config_dict)


def read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG_FILE
    return read_json(path) if path.is_file() else None
