"""A fake `train()` for sweep tests: the real one's file contract, milliseconds per step.

Deterministic metrics from (config, step); checkpoints every `checkpoint.every_steps` steps
(default 2) as JSON; resumes from its checkpoint, dropping metrics rows past it. Each call appends
{pid, start_step} to invocations.jsonl so tests can count runs and see resumes. optim.lr >= 1
diverges at step 3; optim.lr == 0.5 raises. FAKE_STEP_S (env) sets the seconds per step.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from scaling.io import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl


def fake_train(config, run_dir, *, resume=True, progress=False):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step_s = float(os.environ.get("FAKE_STEP_S", "0.02"))
    n_steps = config.total_steps
    tokens_per_step = config.tokens_per_step
    ckpt_every = config.checkpoint.every_steps or 2
    evals = sorted({max(1, n_steps * i // 4) for i in range(1, 5)})
    ckpt = run_dir / "checkpoint" / "state.json"
    start = read_json(ckpt)["step"] if resume and ckpt.is_file() else 0
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] <= start]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(run_dir / "metrics.jsonl", text)
    append_jsonl(run_dir / "invocations.jsonl", {"pid": os.getpid(), "start_step": start})
    atomic_write_json(run_dir / "config.json", config.to_dict())
    lr = config.optim.lr
    if lr == 0.5:
        raise RuntimeError("fake failure for lr=0.5")

    def status(state, step, **extra):
        atomic_write_json(
            run_dir / "status.json",
            {
                "state": state,
                "step": step,
                "tokens": step * tokens_per_step,
                "updated": time.time(),
                **extra,
            },
        )

    status("running", start)
    for step in range(start + 1, n_steps + 1):
        time.sleep(step_s)
        loss = 1.0 + 3.0 / math.sqrt(step) * (1 + lr) + 0.01 * config.train.init_seed
        loss += 1.0 / config.model.d_model
        if lr >= 1.0 and step >= 3:
            append_jsonl(run_dir / "metrics.jsonl", _row(step, tokens_per_step, float("nan"), lr))
            status("diverged", step, reason="non-finite loss")
            return "diverged"
        if step in evals:
            append_jsonl(run_dir / "metrics.jsonl", _row(step, tokens_per_step, loss, lr))
        if step % ckpt_every == 0 or step == n_steps:
            atomic_write_json(ckpt, {"step": step})
            status("running", step)
    status("done", n_steps)
    return "done"


def _row(step, tokens_per_step, loss, lr):
    return {
        "step": step,
        "tokens": step * tokens_per_step,
        "train_loss": loss,
        "eval_loss": loss,
        "eval_loss_se": 0.01,
        "lr": lr,
        "tokens_per_s": 1000.0,
        "mfu": 0.1,
        "wall_time": 0.0,
    }
