"""WSD branches (Hägele et al. 2024): one warmup-stable trajectory per model, cooldowns branched
from it at several token counts, so each size gets several annealed D points for little more
than the compute of its longest run.

For a design run of N steps and branch fractions f, branch i is a `wsd` run of n_i = f_i * N
steps that cools down over its last round(cooldown_fraction * n_i) steps, so it leaves the stable
phase at s_i = n_i - that. The stable trajectory is a chain of `constant`-schedule segments
ending at each s_i (each segment starts from the previous one's final checkpoint); branch i
starts from the segment ending at s_i. All share one explicit warmup, and batches depend on
(data_seed, step) alone, so a branch trains exactly what a from-scratch WSD run of n_i steps
would; its metrics start after s_i (the stable rows are the segments'). Results mark each
branch's last evaluation `annealed`; a run's `point.init_from` names the run it starts from.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

from scaling.errors import ConfigError, DataError
from scaling.io import canonical_json
from scaling.sweep.designs import PlannedRun, run_id_for
from scaling.sweep.spec import WsdOptions
from scaling.train.config import RunConfig

CHECKPOINT_DIR = "checkpoint"  # where train() keeps a run's checkpoints
DECAY_SHAPES = ("linear",)  # what scaling.train.optim's `wsd` schedule implements


def expand_wsd(runs: list[PlannedRun], options: WsdOptions) -> list[PlannedRun]:
    """Replace each group of design runs differing only in length by its stable segments and
    cooldown branches. Segments come before the branches that start from them."""
    if options.decay_shape not in DECAY_SHAPES:
        raise ConfigError("wsd.decay_shape", options.decay_shape, " | ".join(DECAY_SHAPES))
    groups: dict[str, list[PlannedRun]] = {}
    for r in runs:
        groups.setdefault(_group_key(r.config), []).append(r)
    out: list[PlannedRun] = []
    seen: set[str] = set()
    for members in groups.values():
        for run in _expand_group(members, options):
            if run.run_id not in seen:
                seen.add(run.run_id)
                out.append(run)
    return out


def _group_key(config: RunConfig) -> str:
    d = config.to_dict()
    d["train"].pop("steps")
    d["train"].pop("tokens")
    return canonical_json(d)


def _expand_group(members: list[PlannedRun], options: WsdOptions) -> list[PlannedRun]:
    first = members[0].config
    longest = max(r.config.total_steps for r in members)
    warmup = first.optim.warmup_steps
    if warmup is None:  # one explicit warmup for the whole trajectory
        warmup = round(first.optim.warmup_fraction * longest)
    branches: dict[int, tuple[int, PlannedRun, float]] = {}  # n_i -> (s_i, design run, f)
    for r in members:
        for f in options.branch_fractions:
            n = max(1, round(f * r.config.total_steps))
            start = n - max(1, round(options.cooldown_fraction * n))
            if start < max(1, warmup):
                raise ConfigError(
                    "wsd.branch_fractions",
                    f,
                    f"fractions whose stable phase ({start} steps) outlasts the warmup "
                    f"({warmup} steps)",
                )
            branches.setdefault(n, (start, r, f))
    segment_ends = sorted({s for s, _r, _f in branches.values()})
    segments: dict[int, PlannedRun] = {}
    parent: PlannedRun | None = None
    for end in segment_ends:
        cfg = _with(first, steps=end, schedule="constant", warmup=warmup, options=options)
        point = {
            **members[0].point,
            "wsd": "stable",
            "tokens_planned": end * cfg.tokens_per_step,
            "init_from": parent.run_id if parent else None,
            "budget": None,
        }
        extra = {"wsd": "stable", "init_from": parent.run_id if parent else None}
        seg = PlannedRun(run_id_for(cfg, extra), cfg, point)
        segments[end] = seg
        parent = seg
    out = list(segments.values())
    for n, (start, design_run, f) in sorted(branches.items()):
        cfg = _with(first, steps=n, schedule="wsd", warmup=warmup, options=options)
        point = {
            **design_run.point,
            "wsd": "cooldown",
            "branch_fraction": f,
            "branch_step": start,
            "tokens_planned": n * cfg.tokens_per_step,
            "init_from": segments[start].run_id,
        }
        if f != 1.0:
            point["budget"] = None  # a fraction of an IsoFLOP run is off its budget
        extra = {"wsd": "cooldown", "init_from": segments[start].run_id}
        out.append(PlannedRun(run_id_for(cfg, extra), cfg, point))
    return out


def _with(
    config: RunConfig, *, steps: int, schedule: str, warmup: int, options: WsdOptions
) -> RunConfig:
    d = copy.deepcopy(config.to_dict())
    d["train"]["steps"] = steps
    d["train"]["tokens"] = None
    d["optim"]["schedule"] = schedule
    d["optim"]["warmup_steps"] = warmup
    d["optim"]["decay_fraction"] = options.cooldown_fraction
    return RunConfig.from_dict(d)


def start_from_parent(run_dir: Path, parent_dir: Path) -> None:
    """Seed a run's checkpoint with a copy of its parent's final one, once (a run that has its
    own checkpoint resumes from that instead). Copied to a temporary name, then renamed."""
    own = run_dir / CHECKPOINT_DIR
    if own.exists():
        return
    src = parent_dir / CHECKPOINT_DIR
    if not src.is_dir():
        raise DataError(f"run {parent_dir.name} has no checkpoint to start {run_dir.name} from")
    tmp = run_dir / f".{CHECKPOINT_DIR}.seed.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, own)
