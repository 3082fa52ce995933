"""`load_results(sweep_dir)`: a sweep's evaluations as one pandas DataFrame.

One row per evaluation (or per run's last evaluation with view="final"), with the counts of
`scaling.flops` under every convention (N_*, D = tokens seen, C_*), the metrics row, the run's
config flattened into dotted columns ("model.d_model", "optim.lr", ...), its design point, its
run_id and state. Diverged runs are results, but they are left out unless asked for, so they
never slip into a fit unnoticed; unfinished runs are left out unless `include_incomplete`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from scaling import flops
from scaling.data.objectives import attends_causally
from scaling.errors import ConfigError, DataError
from scaling.io import read_jsonl
from scaling.model.shape import ModelShape
from scaling.sweep.store import METRICS_FILE, RunStore
from scaling.train.config import EXECUTION_SECTIONS, RunConfig

VIEWS = ("all", "final")
COUNT_COLUMNS = ("N_total", "N_embedding", "N_nonembedding", "N_chinchilla")
POINT_COLUMNS = {  # design-point field -> column
    "design": "sweep.design",
    "convention": "sweep.convention",
    "budget": "C_budget",
    "target_N": "sweep.target_N",
    "tokens_per_param": "sweep.tokens_per_param",
    "wsd": "sweep.wsd",  # "stable" segment or "cooldown" branch, for WSD sweeps
    "init_from": "sweep.init_from",  # the run whose checkpoint this one started from
}
FIRST_COLUMNS = (
    "run_id",
    "state",
    "step",
    "D",
    *COUNT_COLUMNS,
    *(f"C_{c}" for c in flops.CONVENTIONS),
    "eval_loss",
    "eval_loss_se",
    "train_loss",
    "annealed",
)


def load_results(
    sweep_dir: str | Path,
    *,
    view: str = "all",
    include_diverged: bool = False,
    include_incomplete: bool = False,
) -> pd.DataFrame:
    """The sweep's results table (see the module docstring for its columns)."""
    if view not in VIEWS:
        raise ConfigError("view", view, " | ".join(VIEWS))
    store = RunStore(sweep_dir)
    if not store.runs_dir.is_dir():
        raise DataError(f"sweep folder {str(sweep_dir)!r} has no runs/ (not a sweep folder)")
    states = ["done"] + (["diverged"] if include_diverged else [])
    if include_incomplete:
        states += ["running", "failed", "pending"]
    rows: list[dict[str, Any]] = []
    for run_id in store.planned_run_ids():
        state = store.state(run_id)
        if state not in states:
            continue
        record = store.read_run(run_id)
        metrics = sorted(read_jsonl(store.run_dir(run_id) / METRICS_FILE), key=lambda r: r["step"])
        if view == "final":
            metrics = metrics[-1:]
        config = RunConfig.from_dict(record["config"])
        fixed = _run_columns(run_id, state, config, record.get("point", {}))
        shape, last_step = config.model, config.total_steps
        decays = config.optim.schedule != "constant"
        causal = attends_causally(config.train.objective)
        for m in metrics:
            annealed = decays and m["step"] == last_step
            rows.append({**fixed, **_metric_columns(m, shape, causal), "annealed": annealed})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(FIRST_COLUMNS))
    first = [c for c in FIRST_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def _run_columns(run_id: str, state: str, config: RunConfig, point: dict) -> dict[str, Any]:
    counts = flops.param_counts(config.model)
    out: dict[str, Any] = {"run_id": run_id, "state": state}
    out.update({name: getattr(counts, name) for name in COUNT_COLUMNS})
    for key, column in POINT_COLUMNS.items():
        out[column] = point.get(key)
    for section, values in config.to_dict().items():
        if section in EXECUTION_SECTIONS:  # how it ran (the device mesh), not what it is
            continue
        for key, value in values.items():
            out[f"{section}.{key}"] = json.dumps(value) if isinstance(value, list | dict) else value
    # The objective decides the FLOP count (mlm attends both ways): a column for every run, even
    # where it is the default and so left out of the config's dict.
    out["train.objective"] = config.train.objective
    return out


def _metric_columns(row: dict, shape: ModelShape, causal: bool = True) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.startswith("flops_") and k != "tokens"}
    tokens = row["tokens"]
    out["D"] = tokens
    for c in flops.CONVENTIONS:
        out[f"C_{c}"] = flops.training_flops(shape, tokens, c, causal=causal)
    return out


def write_results(df: pd.DataFrame, path: str | Path) -> None:
    """Write the table as CSV or Parquet, by the file's suffix."""
    from scaling.io import atomic_write_bytes

    p = Path(path)
    if p.suffix == ".csv":
        atomic_write_bytes(p, df.to_csv(index=False).encode("utf-8"))
    elif p.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(p, buf.getvalue())
    else:
        raise ConfigError("--out", str(path), "a path ending in .csv or .parquet")
