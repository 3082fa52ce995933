"""`train(config, run_dir)`: one resumable training run, recorded in its run folder.

The run folder holds config.json, status.json, metrics.jsonl and checkpoint/ (nothing else is
written there). Bad input (config, data, a folder holding another run) raises before anything
is written. A run that diverges ends with state `diverged` and its metrics kept; an exception
marks it `failed` (traceback in status.json) and is re-raised. Resuming restores the latest
checkpoint, drops metrics rows after it and continues; the result equals an uninterrupted run.

Several processes (a run launched with `srun -n N`, on a TPU slice, or with explicit
coordinator settings; see `scaling.train.distributed`) train one run together: every process
runs this same loop on the global mesh and takes part in each step, evaluation and checkpoint;
process 0 alone writes config, status and metrics, and clock-based checkpoint decisions are
process 0's.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import ConfigError, DataError
from scaling.train import metrics as run_files
from scaling.train.checkpoint import CHECKPOINT_DIR, Checkpointer
from scaling.train.config import EXECUTION_SECTIONS, RunConfig, eval_steps
from scaling.train.guards import GuardState, check_loss

SYNC_EVERY = 10  # pull per-step losses to the host (and run the guards) every this many steps


@dataclass
class RunOutcome:
    """How a run ended: state (done | diverged), last step, tokens, the last metrics row."""

    state: str
    step: int
    tokens: int
    run_dir: Path
    final: dict[str, Any] | None = None
    reason: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # unigram_entropy, entropy_rate (nats)


def check_data(config: RunConfig, data: Any) -> None:
    """Refuse data the run cannot use: vocabulary too large for the model, splits shorter than
    one sequence, a training split smaller than one batch."""
    from scaling.data.objectives import objective_vocab_size

    ctx, B = config.model.context, config.train.batch_size
    objective = config.train.objective
    need = objective_vocab_size(objective, data.vocab_size, ctx)
    if need > config.model.vocab_size:
        extra = "" if objective == "causal" else f" + the special tokens of objective {objective}"
        raise ConfigError(
            "model.vocab_size",
            config.model.vocab_size,
            f">= {need} (the vocabulary of {config.data.source} with "
            f"{config.data.tokenizer}{extra})",
        )
    for split, arr in (("train", data.train), ("validation", data.val)):
        if arr.shape[0] < ctx + 1:
            raise ConfigError(
                "model.context",
                ctx,
                f"<= {arr.shape[0] - 1} (the {split} split of {config.data.source} has "
                f"{arr.shape[0]} tokens)",
            )
    if data.train.shape[0] < B * (ctx + 1):
        raise DataError(
            f"data.source = {config.data.source!r}: the train split has {data.train.shape[0]} "
            f"tokens, fewer than one batch of {B} x {ctx + 1}; use a larger corpus or a smaller "
            "train.batch_size / model.context"
        )


def load_data(config: RunConfig) -> Any:
    """The run's tokens (prepared into the cache on first use), checked against the config."""
    from scaling.data import load_tokens

    data = load_tokens(config.data.source, config.data.tokenizer)
    check_data(config, data)
    return data


def train(
    config: RunConfig, run_dir: str | Path, *, resume: bool = True, progress: bool = False
) -> RunOutcome:
    """Train `config` in `run_dir`, resuming its checkpoint when `resume` (else starting over).

    Returns a RunOutcome for `done` and `diverged`; re-raises exceptions after recording them
    as `failed` in status.json. A run already done or diverged returns without training.
    """
    from scaling.train import distributed

    distributed.initialize()  # several processes launched for this run: join them (else no-op)
    writer = distributed.is_writer()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError("run_dir", str(run_dir), "a folder (this is a file)")
    data = load_data(config)
    existing = run_files.read_config(run_dir) if run_dir.is_dir() else None
    if resume and existing is not None and _identity(existing) != _identity(config.to_dict()):
        raise ConfigError(
            "run_dir", str(run_dir), "a folder of a run with this same config (or resume=False)"
        )
    if resume:
        finished = finished_outcome(run_dir, data) if existing is not None else None
        if finished is not None:
            return finished
    elif writer:
        _clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if writer:
        run_files.write_config(run_dir, config.to_dict())
    distributed.barrier("scaling train: run folder ready")
    try:
        return _Run(config, run_dir, data, progress and writer).run()
    except BaseException as e:
        if not writer:
            raise
        step = _last_status_step(run_dir)
        run_files.write_status(
            run_dir,
            "failed",
            step=step,
            tokens=step * config.tokens_per_step,
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
        )
        raise


def finished_outcome(run_dir: Path, data: Any) -> RunOutcome | None:
    """The outcome of a run already `done` or `diverged` in `run_dir`, else None."""
    status = run_files.read_status(run_dir) or {}
    if status.get("state") not in ("done", "diverged"):
        return None
    rows = run_files.read_rows(run_dir)
    return RunOutcome(
        status["state"],
        int(status.get("step", 0)),
        int(status.get("tokens", 0)),
        run_dir,
        rows[-1] if rows else None,
        status.get("reason"),
        rows,
        data_summary(data),
    )


def _identity(config_dict: dict) -> dict:
    """A config less how it is computed (the device mesh): what a resume must match."""
    return {k: v for k, v in config_dict.items() if k not in EXECUTION_SECTIONS}


def _clear(run_dir: Path) -> None:
    """Remove what train() writes in a run folder (never other files, e.g. a sweep's lease)."""
    for name in (run_files.CONFIG_FILE, run_files.STATUS_FILE, run_files.METRICS_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)


def _last_status_step(run_dir: Path) -> int:
    return int((run_files.read_status(run_dir) or {}).get("step", 0) or 0)


class _Run:
    """The state of one training process (one segment of a possibly resumed run)."""

    def __init__(self, config: RunConfig, run_dir: Path, data: Any, progress: bool):
        self.config, self.run_dir, self.data, self.progress = config, run_dir, data, progress

    def run(self) -> RunOutcome:
        import jax
        import jax.numpy as jnp

        from scaling import flops
        from scaling.data import eval_batches, train_batch
        from scaling.data.objectives import attends_causally, make_objective_batch
        from scaling.train import distributed
        from scaling.train.mesh import make_mesh
        from scaling.train.optim import lr_at, make_optimizer
        from scaling.train.runtime import enable_compilation_cache
        from scaling.train.step import (
            host_collectives,
            init_params,
            launched_when_ready,
            make_eval_step,
            make_run_step,
        )
        from scaling.train.throughput import MFU_CONVENTION, Peak, device_peak, mfu

        enable_compilation_cache()
        several = distributed.process_count() > 1
        writer = distributed.is_writer()
        cfg, shape, run_dir = self.config, self.config.model, self.run_dir
        total, per_step = cfg.total_steps, cfg.tokens_per_step
        B, ctx = cfg.train.batch_size, shape.context
        objective = cfg.train.objective
        causal = attends_causally(objective)

        def for_objective(batch: Any, seed: int, step: int) -> Any:
            """The raw batch for `causal`, else the objective's inputs/targets/weights."""
            if objective == "causal":
                return batch
            ob = make_objective_batch(
                objective, batch, seed=seed, step=step, data_vocab=self.data.vocab_size
            )
            return {"inputs": ob.inputs, "targets": ob.targets, "weights": ob.weights}

        # Devices (config.mesh): the batch over data x fsdp, params and optimizer over fsdp.
        run_mesh = make_mesh(cfg.mesh, B)
        replicated, sharded = run_mesh.replicated(), run_mesh.batch()

        dtype = jnp.bfloat16 if cfg.train.compute_dtype == "bfloat16" else jnp.float32
        graphdef, params = init_params(shape, cfg.train.init_seed, dtype)
        tx = make_optimizer(cfg)
        arrays = {"params": params, "opt_state": tx.init(params)}
        state_sharding = run_mesh.state(arrays)
        arrays = run_mesh.put(arrays, state_sharding)

        ckpt = Checkpointer(run_dir)
        host: dict[str, Any] = {"loss_sum": 0.0, "loss_n": 0, "elapsed": 0.0, "guard": None}
        start = 0
        latest = ckpt.latest_step()
        if latest is not None:
            if latest > total:
                raise ConfigError(
                    "train.steps", total, f">= {latest} (the step of the checkpoint in {run_dir})"
                )
            arrays, host = ckpt.restore(latest, arrays)
            start = latest
        if writer:
            run_files.truncate_rows(run_dir, start)
        guard = GuardState.from_dict(host["guard"]) if host.get("guard") else GuardState()
        loss_sum, loss_n = float(host["loss_sum"]), int(host["loss_n"])
        elapsed0 = float(host["elapsed"])
        params, opt_state = arrays["params"], arrays["opt_state"]
        del arrays

        step_fn = make_run_step(
            graphdef, tx, run_mesh, state_sharding, z_loss=cfg.train.z_loss, causal=causal
        )
        val = eval_batches(
            self.data.val,
            context=ctx,
            n_sequences=cfg.eval.eval_sequences,
            batch_size=cfg.eval.eval_batch_size,
            seed=cfg.eval.eval_seed,
        )
        eval_sharding = sharded if val.shape[1] % run_mesh.size == 0 else replicated
        val = [for_objective(b, cfg.eval.eval_seed, i) for i, b in enumerate(val)]  # fixed
        eval_fn = make_eval_step(
            graphdef,
            causal=causal,
            in_shardings=(state_sharding["params"], eval_sharding),
            out_shardings=replicated,
        )
        if host_collectives(run_mesh.mesh.devices.flat):  # its mean gathers over devices
            eval_fn = launched_when_ready(eval_fn)
        peak = device_peak(cfg.train.compute_dtype)
        if several:  # tokens/s are the whole run's: count every process's devices (alike)
            n_proc = distributed.process_count()
            peak = Peak(peak.flops * n_proc, f"{peak.source} x {n_proc} processes")
        fpt = flops.flops_per_token(shape, MFU_CONVENTION, causal=causal)
        evals = set(eval_steps(cfg))
        ck_steps, ck_secs = cfg.checkpoint.every_steps, cfg.checkpoint.every_seconds

        t_start = time.perf_counter()
        t_last_ckpt = t_start
        if writer:
            run_files.write_status(run_dir, "running", step=start, tokens=start * per_step)
        bar = _progress_bar(total, start) if self.progress else None

        pending: list[tuple[int, Any]] = []  # (step, device loss) not yet on the host
        timed_tokens, timed_s = 0, 0.0  # training throughput since the last row
        t_mark: float | None = None  # None until the first (compiling) step has finished
        last_loss = math.nan
        state, reason, step = "done", None, start

        def evaluate() -> tuple[float, float]:
            per_seq = np.concatenate(
                [np.asarray(eval_fn(params, run_mesh.put(b, eval_sharding))) for b in val]
            ).astype(np.float64)
            se = per_seq.std(ddof=1) / math.sqrt(per_seq.size) if per_seq.size > 1 else math.nan
            return float(per_seq.mean()), float(se)

        for step in range(start + 1, total + 1):
            batch = train_batch(
                self.data.train, seed=cfg.data.data_seed, step=step - 1, batch_size=B, context=ctx
            )
            batch = for_objective(batch, cfg.data.data_seed, step - 1)
            params, opt_state, out = step_fn(
                params, opt_state, run_mesh.put(batch, sharded), np.float32(lr_at(cfg, step - 1))
            )
            pending.append((step, out["loss"]))
            is_eval = step in evals
            time_due = bool(ck_secs) and time.perf_counter() - t_last_ckpt >= ck_secs
            if several:  # clocks differ: process 0 decides, every SYNC_EVERY steps
                time_due = step % SYNC_EVERY == 0 and distributed.agree(time_due)
            ck_due = (ck_steps and step % ck_steps == 0) or step == total or time_due
            if t_mark is not None and not (is_eval or ck_due or len(pending) >= SYNC_EVERY):
                continue
            # Sync: pull the pending losses, run the guards, account throughput.
            losses = jax.device_get([loss for _, loss in pending])
            now = time.perf_counter()
            if t_mark is None:  # the first step compiled: do not count it
                t_mark = now
            else:
                timed_s += now - t_mark
                timed_tokens += len(pending) * per_step
                t_mark = now
            for (s, _), loss in zip(pending, losses, strict=True):
                last_loss = float(loss)
                reason = check_loss(cfg.guards, guard, s, last_loss)
                if reason:
                    step = s
                    break
                loss_sum += last_loss
                loss_n += 1
            pending.clear()
            if reason:
                state = "diverged"
                break
            if bar is not None:
                bar.update(step - bar.n)
                tps = timed_tokens / timed_s if timed_s else None
                bar.set_postfix_str(
                    f"loss {last_loss:.4f}" + (f", {tps:,.0f} tok/s" if tps else ""), refresh=False
                )
            if is_eval:
                eval_loss, eval_se = evaluate()
                tps = timed_tokens / timed_s if timed_s > 0 else None
                row = run_files.metrics_row(
                    shape,
                    causal=causal,
                    step=step,
                    tokens=step * per_step,
                    train_loss=loss_sum / loss_n if loss_n else math.nan,
                    eval_loss=eval_loss,
                    eval_loss_se=eval_se,
                    lr=float(lr_at(cfg, step - 1)),
                    tokens_per_s=tps,
                    mfu=mfu(tps, fpt, peak) if tps else None,
                    peak_flops=peak.flops,
                    peak_source=peak.source,
                    wall_time=elapsed0 + time.perf_counter() - t_start,
                )
                if writer:
                    run_files.append_row(run_dir, row)
                    run_files.write_status(run_dir, "running", step=step, tokens=step * per_step)
                loss_sum, loss_n, timed_tokens, timed_s = 0.0, 0, 0, 0.0
                if bar is not None:
                    bar.set_postfix_str(f"loss {last_loss:.4f}, eval {eval_loss:.4f}")
            if ck_due and (step < total or cfg.checkpoint.at_end):
                host = {
                    "loss_sum": loss_sum,
                    "loss_n": loss_n,
                    "guard": guard.to_dict(),
                    "elapsed": elapsed0 + time.perf_counter() - t_start,
                }
                ckpt.save(step, {"params": params, "opt_state": opt_state}, host)
                t_last_ckpt = time.perf_counter()
            t_mark = time.perf_counter()  # eval and checkpoint time is not training time
        ckpt.close()
        if bar is not None:
            bar.close()
        tokens = step * per_step
        if writer:
            run_files.write_status(run_dir, state, step=step, tokens=tokens, reason=reason)
        distributed.barrier("scaling train: run written")
        rows = run_files.read_rows(run_dir)
        return RunOutcome(
            state,
            step,
            tokens,
            run_dir,
            rows[-1] if rows else None,
            reason,
            rows,
            data_summary(self.data),
        )


def data_summary(data: Any) -> dict[str, Any]:
    """What the data's manifest says about its entropy (nats/token), for summaries."""
    m = data.manifest
    return {
        "unigram_entropy": getattr(m, "unigram_entropy", None),
        "entropy_rate": getattr(m, "entropy_rate", None),
    }


def _progress_bar(total: int, start: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1)
