"""`scaling sweep status`: counts by state and one row per run (progress, tokens/s, ETA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scaling.errors import DataError
from scaling.io import read_jsonl
from scaling.sweep.store import METRICS_FILE, STATES, RunStore
from scaling.train.config import RunConfig


@dataclass(frozen=True)
class RunStatus:
    """One run as the status table shows it. `state` is "stale" for a running run whose
    owner is gone (the next `sweep run` resumes it)."""

    run_id: str
    state: str
    shape: str
    progress: float  # fraction of planned steps done
    tokens_per_s: float | None
    eta_s: float | None
    error: str = ""


def sweep_status(sweep_dir: str | Path) -> list[RunStatus]:
    """The status of every run in the sweep folder, in run_id order."""
    store = RunStore(sweep_dir)
    if not store.runs_dir.is_dir():
        raise DataError(f"sweep folder {str(sweep_dir)!r} has no runs/ (not a sweep folder)")
    out = []
    for run_id in store.planned_run_ids():
        config = RunConfig.from_dict(store.read_run(run_id)["config"])
        status = store.read_status(run_id) or {}
        state = store.state(run_id)
        if state == "running" and not store.lease_is_live(store.read_lease(run_id)):
            state = "stale"
        total = config.total_steps
        step = int(status.get("step", 0) or 0)
        if state == "done":
            step = total
        metrics = read_jsonl(store.run_dir(run_id) / METRICS_FILE)
        tps = metrics[-1].get("tokens_per_s") if metrics else None
        eta = None
        if state in ("running", "pending", "stale") and tps:
            eta = (total - step) * config.tokens_per_step / tps
        m = config.model
        out.append(
            RunStatus(
                run_id=run_id,
                state=state,
                shape=f"{m.variant} d{m.d_model} L{m.n_layers} H{m.n_heads}",
                progress=min(1.0, step / total),
                tokens_per_s=tps,
                eta_s=eta,
                error=str(status.get("error") or status.get("reason") or "")[:80],
            )
        )
    return out


def format_status(rows: list[RunStatus]) -> str:
    """Counts by state, then a table with a row per run."""
    counts = {s: 0 for s in (*STATES, "stale")}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    head = "  ".join(f"{s}: {n}" for s, n in counts.items() if n or s in STATES)
    lines = [f"{len(rows)} runs  |  {head}", ""]
    lines.append(
        f"{'run_id':<12}  {'state':<8}  {'shape':<22}  {'progress':>8}  {'tokens/s':>10}  "
        f"{'ETA':>8}  note"
    )
    for r in rows:
        tps = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-"
        lines.append(
            f"{r.run_id:<12}  {r.state:<8}  {r.shape:<22}  {100 * r.progress:>7.1f}%  {tps:>10}  "
            f"{format_duration(r.eta_s):>8}  {r.error}"
        )
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    """A short human duration: 42s, 3m20s, 2h05m; '-' for unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
