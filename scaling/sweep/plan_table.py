"""The `--dry-run` plan table: each run's shape, N and C under every convention, achieved vs
budgeted compute, the pack it trains in, and an estimated wall time from measured throughput
(or a stated assumption).
"""

from __future__ import annotations

import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling import flops
from scaling.data.objectives import attends_causally
from scaling.io import read_json, read_jsonl
from scaling.sweep.designs import PlannedRun
from scaling.sweep.status import format_duration

ASSUMED_CPU_PEAK = 1e11  # FLOP/s, when this machine has no cached measurement
# MFU when no finished run in the folder has measured it: 0.14-0.19 was measured for the
# d_model 20-28 runs of sweeps/tiny.toml on a 2-core CPU; small models on a GPU are
# launch-bound, so 0.2 there is a guess, stated as one.
ASSUMED_MFU = {"cpu": 0.15, "accelerator": 0.2}
STARTUP_S = 8.0  # per run: worker start, JAX import, compilation (measured on a 2-core CPU)


@dataclass(frozen=True)
class Throughput:
    """How the wall time is estimated: FLOP/s achieved and where the numbers came from."""

    peak: float
    mfu: float
    source: str

    @property
    def flops_per_s(self) -> float:
        return self.peak * self.mfu


def estimate_throughput(
    out_dir: str | Path | None, device: str | None, compute_dtype: str
) -> Throughput:
    """Peak: the table (for `device`) or this CPU's cached measurement, else an assumption.
    MFU: the median measured by finished runs in `out_dir`, else an assumption."""
    from scaling.train import throughput

    if device:
        peak = throughput.table_peak(device, compute_dtype)
        if peak is None:
            from scaling.errors import ConfigError

            kinds = ", ".join(throughput.ACCELERATOR_PEAKS)
            raise ConfigError("--device", device, kinds)
        peak_flops, peak_src = peak.flops, f"peak {peak.source}"
    else:
        cached = _cached_cpu_peak(throughput.cache_dir() / "cpu_peak.json")
        if cached:
            peak_flops, peak_src = cached, "peak measured on this CPU (cached)"
        else:
            peak_flops, peak_src = ASSUMED_CPU_PEAK, f"peak ASSUMED {ASSUMED_CPU_PEAK:.3g} FLOP/s"
    mfus = _measured_mfus(out_dir) if out_dir else []
    if mfus:
        mfu, mfu_src = statistics.median(mfus), f"MFU {statistics.median(mfus):.2f} measured"
    else:
        mfu = ASSUMED_MFU["accelerator" if device else "cpu"]
        mfu_src = f"MFU ASSUMED {mfu}"
    return Throughput(peak_flops, mfu, f"{peak_src}; {mfu_src}")


def _cached_cpu_peak(path: Path) -> float | None:
    """This host's latest cached matmul peak (written by scaling.train.throughput)."""
    try:
        entries = read_json(path)
    except (OSError, ValueError):
        return None
    node = platform.node()
    mine = [
        e
        for e in entries.values()
        if isinstance(e, dict) and str(e.get("key", "")).split(" | ")[0] == node
    ]
    if not mine:
        return None
    return float(max(mine, key=lambda e: e.get("measured", 0))["flops"])


def _measured_mfus(out_dir: str | Path) -> list[float]:
    runs = Path(out_dir) / "runs"
    if not runs.is_dir():
        return []
    out = []
    for d in runs.iterdir():
        rows = read_jsonl(d / "metrics.jsonl")
        if rows and isinstance(rows[-1].get("mfu"), int | float) and rows[-1]["mfu"] > 0:
            out.append(float(rows[-1]["mfu"]))
    return out


def run_flops(run: PlannedRun, convention: str) -> float:
    """The run's training compute under `convention`, with the attention it trains with
    (bidirectional for mlm)."""
    causal = attends_causally(run.config.train.objective)
    return flops.training_flops(run.shape, run.tokens, convention, causal=causal)


def run_seconds(run: PlannedRun, tp: Throughput) -> float:
    """Estimated wall time of one run: its attention-convention FLOPs at the estimated rate."""
    return STARTUP_S + run_flops(run, "attention") / tp.flops_per_s


def pack_seconds(
    members: list[PlannedRun], tp: Throughput, speedup: float = 1.0, *, vmapped: bool = True
) -> float:
    """Estimated wall time of a pack at the estimated rate times the pack's measured speedup,
    one startup. `vmapped` (accelerators): every slot is computed until its longest member
    ends, K x that member's FLOPs; else (CPUs: `scaling.train.packed`) an ended member costs
    nothing, the members' FLOPs summed. A pack of one is `run_seconds`."""
    if len(members) == 1:
        return run_seconds(members[0], tp)
    each = [run_flops(r, "attention") for r in members]
    computed = len(each) * max(each) if vmapped else sum(each)
    return STARTUP_S + computed / (tp.flops_per_s * speedup)


def plan_packs(
    runs: list[PlannedRun], policy: Any, finished: dict[str, str] | None = None
) -> list[list[str]]:
    """The packs the runner would form from the runs still to do, all ready at once (a WSD
    branch waits for its parent, so the runner may pack those differently)."""
    from scaling.sweep.packing import form_packs

    todo = [(r.run_id, r.config) for r in runs if r.run_id not in (finished or {})]
    return form_packs(todo, policy.size_for)


def format_plan(
    runs: list[PlannedRun],
    convention: str,
    tp: Throughput,
    workers: int,
    finished: dict[str, str] | None = None,
    packs: list[list[str]] | None = None,
    policy: Any = None,
) -> str:
    """The plan table and its totals. Runs in `finished` (run_id -> done | diverged, from an
    existing sweep folder) show their state instead of a time and are not counted as to do.
    `packs` (from `plan_packs`) groups the runs to do into jobs; each run's `pack` column names
    its pack (P1, P2, ...; '-' for a run trained alone), and a list of packs follows the table
    with K, the members and the estimated time (`policy.speedup` where measured)."""
    finished = finished or {}
    packs = packs if packs is not None else [[r.run_id] for r in runs if r.run_id not in finished]
    multi = [p for p in packs if len(p) > 1]
    pack_of = {r: f"P{i}" for i, p in enumerate(multi, 1) for r in p}
    by_id = {r.run_id: r for r in runs}
    head = (
        f"{'run_id':<12} {'shape':<20} {'N_nonemb':>9} {'N_total':>9} {'N_chinch':>9} {'D':>10} "
        f"{'steps':>6} "
        f"{'C_kaplan':>9} {'C_attn':>9} {'C_chinch':>9} {'budget':>9} {'achieved':>8} "
        f"{'est':>7} {'pack':>4}  axes"
    )
    lines = [head]
    total_s = 0.0
    total_c = dict.fromkeys(flops.CONVENTIONS, 0.0)
    for r in runs:
        s = r.shape
        counts = flops.param_counts(s)
        c = {conv: run_flops(r, conv) for conv in flops.CONVENTIONS}
        for conv in c:
            total_c[conv] += c[conv]
        budget = r.point.get("budget")
        ratio = f"{c[convention] / budget:.4f}" if budget else "-"
        secs = run_seconds(r, tp)
        est = finished.get(r.run_id) or format_duration(secs)
        axes = " ".join(f"{k}={v}" for k, v in r.point.get("axes", {}).items())
        shape = f"{s.variant} d{s.d_model} L{s.n_layers} H{s.n_heads}"
        lines.append(
            f"{r.run_id:<12} {shape:<20} {counts.N_nonembedding:>9.3g} {counts.N_total:>9.3g} "
            f"{counts.N_chinchilla:>9.3g} {r.tokens:>10.4g} {r.config.total_steps:>6} "
            f"{c['kaplan']:>9.3g} "
            f"{c['attention']:>9.3g} {c['chinchilla']:>9.3g} "
            f"{(f'{budget:.3g}' if budget else '-'):>9} {ratio:>8} {est:>7} "
            f"{pack_of.get(r.run_id, '-'):>4}  {axes}"
        )
    vmapped = policy is None or policy.accelerator
    for p in packs:
        members = [by_id[r] for r in p]
        speedup = policy.speedup(members[0].config, len(p)) if policy is not None else 1.0
        total_s += pack_seconds(members, tp, speedup, vmapped=vmapped)
    lines.append("")
    lines.append(
        f"{len(runs)} runs; compute kaplan {total_c['kaplan']:.3g}, attention "
        f"{total_c['attention']:.3g}, chinchilla {total_c['chinchilla']:.3g} FLOPs; "
        f"'achieved' = C_{convention} / budget"
    )
    if multi or policy is not None:
        rule = f"; {policy.describe()}" if policy is not None else ""
        lines.append(
            f"{len(packs)} jobs for {sum(len(p) for p in packs)} runs to do, {len(multi)} of "
            f"them packs{rule}"
        )
    for i, p in enumerate(multi, 1):
        members = [by_id[r] for r in p]
        speedup = policy.speedup(members[0].config, len(p)) if policy is not None else 1.0
        note = f", measured speedup {speedup:.2f}x" if speedup != 1.0 else ""
        s0 = members[0].shape
        est = format_duration(pack_seconds(members, tp, speedup, vmapped=vmapped))
        lines.append(
            f"  P{i}: K={len(p)} {s0.variant} d{s0.d_model} L{s0.n_layers}, est {est}{note}: "
            f"{' '.join(p)}"
        )
    todo = f" for the {len(runs) - len(finished)} runs to do" if finished else ""
    per = "job" if multi else "run"
    pack_cost = "K x its longest member" if vmapped else "the sum of its members"
    lines.append(
        f"estimated wall time{todo}: {format_duration(total_s)} in one worker, "
        f"~{format_duration(total_s / max(1, workers))} with {workers} "
        f"(rate {tp.flops_per_s:.3g} FLOP/s: {tp.source}; + {STARTUP_S:.0f}s startup per {per}"
        f"{('; a pack computes ' + pack_cost) if multi else ''})"
    )
    return "\n".join(lines)
