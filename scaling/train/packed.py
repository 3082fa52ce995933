"""`train_packed(configs, run_dirs)`: K same-shape runs trained together by one jitted step.

The K members share the model shape, batch size, data source and the optimizer's static
settings; they may differ in init_seed, data_seed, learning rate and schedule, length (steps or
tokens), evaluation steps, guards and checkpointing. Parameters and optimizer states are stacked
along a leading axis; each step takes the per-run learning rates as a [K] array and per-run
batches stacked [K, B, T+1], each drawn from its run's own (data_seed, step). On accelerators
one vmapped call steps all K; on CPUs the members are stepped in groups of one member a device
(`member_groups`, `PackedState`): one call per group, one compilation per group size.

Each member keeps its own step counter, so members resumed from different checkpoints can share
a pack. Each writes config.json, status.json, metrics.jsonl and checkpoint/ exactly as `train`
would (same rows; the same values to float32 tolerance), so a packed run can be resumed alone
or in a pack. Two differences, by design: a row's `tokens_per_s` and `mfu` are the member's own
share (its tokens over the pack's wall time), and status.json carries `pack_size`.

A member that diverges, or reaches its last step, is masked: its slot stays in the pack (no
re-packing, no recompilation) but its update is zeroed, so its parameters are frozen, and
nothing more is recorded for it. The pack ends when every member has ended. On CPUs an ended
member is not computed at all (two host devices share the cores: a pack of 2 with one ended
steps the other as fast as `train` alone, d_model 128). Known costs: on accelerators an ended
member's slot is still computed until the pack ends (pack runs of similar length); evaluations
and checkpoints run member by member; a pack of one member is handed to `train`.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scaling.errors import ConfigError
from scaling.train import metrics as run_files
from scaling.train.checkpoint import Checkpointer
from scaling.train.config import RunConfig, eval_steps
from scaling.train.guards import GuardState, check_loss
from scaling.train.loop import (
    SYNC_EVERY,
    RunOutcome,
    _clear,
    data_summary,
    finished_outcome,
    load_data,
)

# Fields every member of a pack must share: they fix the compiled step's shapes, its static
# arguments (optimizer constants, z-loss, dtype) or the shared data and validation set.
SHARED_FIELDS = (
    "model",
    "data.source",
    "data.tokenizer",
    "train.batch_size",
    "train.z_loss",
    "train.compute_dtype",
    "optim.b1",
    "optim.b2",
    "optim.eps",
    "optim.weight_decay",
    "optim.grad_clip",
    "eval.eval_sequences",
    "eval.eval_batch_size",
    "eval.eval_seed",
)


def check_packable(configs: list[RunConfig]) -> None:
    """Raise ConfigError naming the first field in SHARED_FIELDS on which members differ."""
    if not configs:
        raise ConfigError("configs", "[]", "at least one RunConfig")
    for c in configs:
        objective = getattr(c.train, "objective", "causal")
        if objective != "causal":
            raise ConfigError(
                "train.objective", objective, "causal (packed training runs next-token batches)"
            )
    dicts = [c.to_dict() for c in configs]
    for key in SHARED_FIELDS:
        section, _, name = key.partition(".")
        values = [d[section].get(name) if name else d[section] for d in dicts]
        for v in values[1:]:
            if v != values[0]:
                raise ConfigError(
                    key, v, f"{values[0]!r} (the value of member 0: packed runs share {key})"
                )


def make_packed_step(
    graphdef: Any, tx: Any, *, z_loss: float = 0.0, shardings: tuple[Any, Any, Any] | None = None
) -> Callable:
    """`jit(vmap(train_step))` over stacked members, params and optimizer state donated:
    `step(params_K, opt_state_K, batch_KBT1, lr_K, active_K) -> (params_K, opt_state_K,
    metrics_K)`. Members with `active` False keep their parameters and optimizer state (vmapped:
    their update is computed and discarded; one member unbatched: not computed, nan metrics).

    `shardings` (state, batch, per-member vector: `pack_shardings`) fixes the layout of inputs
    and outputs. When it splits the members over devices, each device steps its own members
    (`shard_map`), and a device holding one member steps it unbatched: XLA's CPU backend ran
    reductions over arrays with an axis of size 1 (here the members') ~15x slower (YNNPACK;
    d_model 256: the vmapped step of one member 13% slower than the same model's plain step)."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    from scaling.train.step import train_step

    one_model = functools.partial(train_step, graphdef, tx=tx, z_loss=z_loss)

    def step_alone(params, opt_state, batch, lr, active):
        """One member, unbatched; an inactive one is not stepped at all (`lax.cond`)."""
        alone = jax.tree.map(lambda a: a[0], (params, opt_state, batch, lr))
        metrics = jax.eval_shape(one_model, *alone)[2]

        def idle(p, o, b, r):  # nan metrics, varying over devices as r is (shard_map)
            nan = jnp.nan + 0 * r
            return p, o, jax.tree.map(lambda m: jnp.full(m.shape, nan, m.dtype), metrics)

        out = jax.lax.cond(active[0], one_model, idle, *alone)
        return jax.tree.map(lambda a: a[None], out)

    def packed(params, opt_state, batch, lr, active):
        if batch.shape[0] == 1:
            return step_alone(params, opt_state, batch, lr, active)
        new_p, new_o, out = jax.vmap(one_model)(params, opt_state, batch, lr)

        def keep(new, old):
            mask = active.reshape(active.shape + (1,) * (new.ndim - 1))
            return jnp.where(mask, new, old)

        return jax.tree.map(keep, new_p, params), jax.tree.map(keep, new_o, opt_state), out

    if shardings is None:
        return jax.jit(packed, donate_argnums=(0, 1))
    state, batch_sh, vec = shardings
    if state.spec == PartitionSpec("d"):  # members split over the devices
        packed = jax.shard_map(packed, mesh=state.mesh, in_specs=state.spec, out_specs=state.spec)
    return jax.jit(
        packed,
        donate_argnums=(0, 1),
        in_shardings=(state, state, batch_sh, vec, vec),
        out_shardings=(state, state, vec),
    )


def pack_shardings(K: int, batch_size: int) -> tuple[Any, Any, Any, Any]:
    """Shardings (state, batch, per-member vector, replicated) of a pack of K: the members
    split over the local devices when K divides evenly, else each batch split as one run's
    would be (`default_batch_split`), else one device."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from scaling.train.mesh import default_batch_split

    devices = jax.local_devices()
    n_dev = len(devices)
    state, batch, vec = PartitionSpec(), PartitionSpec(), PartitionSpec()
    if n_dev > 1 and K % n_dev == 0:
        state, batch, vec = PartitionSpec("d"), PartitionSpec("d"), PartitionSpec("d")
    else:
        devices = devices[: default_batch_split(batch_size, n_dev, devices[0].platform)]
        if len(devices) > 1:
            batch = PartitionSpec(None, "d")
    mesh = Mesh(np.array(devices), ("d",))
    return (
        NamedSharding(mesh, state),
        NamedSharding(mesh, batch),
        NamedSharding(mesh, vec),
        NamedSharding(mesh, PartitionSpec()),
    )


def member_groups(K: int, devices: list[Any], group_size: int | None = None) -> list[range]:
    """The members each jitted call of a pack's step advances, in order. By default: all K in
    one vmapped call on accelerators; on CPUs as many as there are devices, one member a device
    stepped unbatched. There vmapping several members on a device costs 4-14% a member over one
    model's step (d_model 256, one device), and calls of one member a device measured faster
    (`benchmarks/packing.py`, two host devices: d_model 256, K = 16: 1.03x the sequential
    runs' tokens/s against 0.96x vmapped; d_model 64, K = 8: 1.14x against 1.07x)."""
    check_group_size(group_size)
    if group_size is None:
        group_size = len(devices) if devices[0].platform == "cpu" else K
    return [range(s, min(s + group_size, K)) for s in range(0, K, group_size)]


def check_group_size(group_size: Any) -> None:
    """Raise ConfigError unless `group_size` is None or a positive integer."""
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ConfigError("group_size", group_size, "None or a positive integer (members a call)")


class _Layout(NamedTuple):
    """The jitted calls of one group size, and its shardings."""

    state: Any
    replicated: Any
    step: Callable
    take: Callable
    evaluate: Callable


class PackedState:
    """The device state of a pack: its members' parameters and optimizer states, stacked per
    group (`member_groups`), and the jitted calls that step, read and evaluate them (one
    compilation per distinct group size). `params` and `opt_states` are the K members' trees."""

    def __init__(
        self,
        graphdef: Any,
        tx: Any,
        params: list[Any],
        opt_states: list[Any],
        batch_size: int,
        *,
        z_loss: float = 0.0,
        group_size: int | None = None,
    ):
        import jax

        self.K = len(params)
        self.groups = member_groups(self.K, jax.local_devices(), group_size)
        self._layouts = {
            n: self._layout(graphdef, tx, n, batch_size, z_loss)
            for n in sorted({len(g) for g in self.groups})
        }
        self.params, self.opt_states = [], []
        for g in self.groups:
            sh = self._layouts[len(g)].state
            self.params.append(jax.device_put(stack_trees([params[k] for k in g]), sh))
            self.opt_states.append(jax.device_put(stack_trees([opt_states[k] for k in g]), sh))
        self._where = [(i, j) for i, g in enumerate(self.groups) for j in range(len(g))]
        self._eval_batches: dict[int, list[Any]] = {}

    @staticmethod
    def _layout(graphdef: Any, tx: Any, n: int, batch_size: int, z_loss: float) -> _Layout:
        import jax

        from scaling.train.step import eval_step, host_collectives, launched_when_ready

        state, batch, vec, replicated = pack_shardings(n, batch_size)
        step = make_packed_step(graphdef, tx, z_loss=z_loss, shardings=(state, batch, vec))
        take = jax.jit(member_dyn, out_shardings=replicated)  # one compilation for every k
        evaluate = jax.jit(
            lambda stacked, k, b: eval_step(graphdef, member_dyn(stacked, k), b),
            out_shardings=replicated,
        )
        if host_collectives(state.mesh.devices.flat):  # launch collectives on ready inputs
            take = launched_when_ready(take)  # a member to every device
            evaluate = launched_when_ready(evaluate)
            if state.spec == replicated.spec:  # members on every device, each batch split
                step = launched_when_ready(step)
        return _Layout(state, replicated, step, take, evaluate)

    def step(self, batch: np.ndarray, lr: np.ndarray, active: np.ndarray) -> list[Any]:
        """One step of every group with an active member (batch [K, B, T+1], lr and active [K]);
        the losses of the groups stepped, as (group, device array [len(group)]) pairs."""
        losses = []
        for i, g in enumerate(self.groups):
            s = slice(g.start, g.stop)
            if not active[s].any():  # every member of this group has left the pack
                continue
            self.params[i], self.opt_states[i], out = self._layouts[len(g)].step(
                self.params[i], self.opt_states[i], batch[s], lr[s], active[s]
            )
            losses.append((g, out["loss"]))
        return losses

    def arrays(self, k: int) -> dict[str, Any]:
        """Member k's {"params", "opt_state"}, replicated (for a checkpoint)."""
        i, j = self._where[k]
        tree = {"params": self.params[i], "opt_state": self.opt_states[i]}
        return self._layouts[len(self.groups[i])].take(tree, np.int32(j))

    def set_eval_batches(self, batches: list[np.ndarray]) -> None:
        """The validation batches every member is evaluated on (host arrays)."""
        import jax

        self._eval_batches = {
            n: [jax.device_put(b, lay.replicated) for b in batches]
            for n, lay in self._layouts.items()
        }

    def eval_losses(self, k: int) -> np.ndarray:
        """Member k's loss on each validation sequence (`set_eval_batches`)."""
        i, j = self._where[k]
        n = len(self.groups[i])
        evaluate = self._layouts[n].evaluate
        return np.concatenate(
            [np.asarray(evaluate(self.params[i], np.int32(j), b)) for b in self._eval_batches[n]]
        )


def stack_trees(trees: list[Any]) -> Any:
    """Stack K same-structured pytrees along a new leading axis, on the host (numpy): an eager
    jnp.stack would compile once per leaf shape, seconds of a pack's start on a small CPU."""
    import jax

    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree: Any, k: int) -> Any:
    """The k-th member of a stacked pytree."""
    import jax

    return jax.tree.map(lambda x: x[k], tree)


def train_packed(
    configs: list[RunConfig],
    run_dirs: list[str | Path],
    *,
    resume: bool = True,
    group_size: int | None = None,
) -> list[RunOutcome]:
    """Train `configs[k]` in `run_dirs[k]` for every k, in one pack; outcomes in the same order.

    Members already done or diverged (with `resume`) return without training. On an exception
    every member still training is marked `failed` (traceback in status.json) and it re-raises.
    `group_size`: members per jitted call (`member_groups`; None: the device's default).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if len(configs) != len(run_dirs):
        raise ConfigError("run_dirs", len(run_dirs), f"{len(configs)} folders, one per config")
    if len({d.absolute() for d in run_dirs}) != len(run_dirs):
        raise ConfigError("run_dirs", [str(d) for d in run_dirs], "distinct folders")
    check_packable(configs)
    check_group_size(group_size)
    data = load_data(configs[0])
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    for k, (cfg, run_dir) in enumerate(zip(configs, run_dirs, strict=True)):
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError("run_dir", str(run_dir), "a folder (this is a file)")
        existing = run_files.read_config(run_dir) if run_dir.is_dir() else None
        if resume and existing is not None and existing != cfg.to_dict():
            raise ConfigError(
                "run_dir", str(run_dir), "a folder of a run with this same config (or resume=False)"
            )
        if resume and existing is not None:
            outcomes[k] = finished_outcome(run_dir, data)
    todo = [k for k, o in enumerate(outcomes) if o is None]
    if len(todo) == 1:  # a pack of one is a single run: train() is never slower than it
        from scaling.train.loop import train

        outcomes[todo[0]] = train(configs[todo[0]], run_dirs[todo[0]], resume=resume)
        todo = []
    for k in todo:
        if not resume:
            _clear(run_dirs[k])
        run_dirs[k].mkdir(parents=True, exist_ok=True)
        run_files.write_config(run_dirs[k], configs[k].to_dict())
    if todo:
        pack = _Pack([configs[k] for k in todo], [run_dirs[k] for k in todo], data, group_size)
        try:
            for k, out in zip(todo, pack.run(), strict=True):
                outcomes[k] = out
        except BaseException as e:
            tb = traceback.format_exc()
            for m in pack.members:
                if m.state is None:
                    step = int((run_files.read_status(m.run_dir) or {}).get("step", 0) or 0)
                    run_files.write_status(
                        m.run_dir,
                        "failed",
                        step=step,
                        tokens=step * m.cfg.tokens_per_step,
                        error=f"{type(e).__name__}: {e}",
                        traceback=tb,
                    )
            raise
    return [o for o in outcomes if o is not None]


class _Member:
    """Host-side state of one member: its step, guard, loss sums, throughput and files."""

    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.total = cfg.total_steps
        self.evals = set(eval_steps(cfg))
        self.ckpt = Checkpointer(run_dir)
        self.start = 0
        self.step = 0
        self.state: str | None = None  # None while training, then done | diverged
        self.reason: str | None = None
        self.guard = GuardState()
        self.loss_sum, self.loss_n, self.elapsed0 = 0.0, 0, 0.0
        self.timed_tokens, self.timed_s = 0, 0.0
        self.t_last_ckpt = 0.0

    def step_at(self, i: int) -> int:
        """This member's step number at pack iteration i (1-based)."""
        return self.start + i

    def is_training_at(self, i: int) -> bool:
        return self.state is None and self.step_at(i) <= self.total


class _Pack:
    """One packed training process over members that all still have steps to run."""

    def __init__(
        self, configs: list[RunConfig], run_dirs: list[Path], data: Any, group_size: int | None
    ):
        self.configs, self.data, self.group_size = configs, data, group_size
        self.members = [_Member(c, d) for c, d in zip(configs, run_dirs, strict=True)]

    def run(self) -> list[RunOutcome]:
        import jax
        import jax.numpy as jnp

        from scaling import flops
        from scaling.data import eval_batches, train_batch
        from scaling.train.optim import lr_at, make_optimizer
        from scaling.train.runtime import enable_compilation_cache
        from scaling.train.step import init_params
        from scaling.train.throughput import MFU_CONVENTION, device_peak, mfu

        enable_compilation_cache()
        cfg0, members = self.configs[0], self.members
        shape, K = cfg0.model, len(members)
        B, ctx = cfg0.train.batch_size, shape.context
        dtype = jnp.bfloat16 if cfg0.train.compute_dtype == "bfloat16" else jnp.float32
        tx = make_optimizer(cfg0)  # the same for every member (check_packable)

        # Per-member initial state (init_params: the same draw as a single run), restored from
        # the member's checkpoint when it has one, then stacked.
        params_k, opt_k = [], []
        for m in members:
            graphdef, p = init_params(shape, m.cfg.train.init_seed, dtype)
            arrays = {"params": p, "opt_state": tx.init(p)}
            latest = m.ckpt.latest_step()
            host: dict[str, Any] = {}
            if latest is not None:
                if latest > m.total:
                    raise ConfigError(
                        "train.steps",
                        m.total,
                        f">= {latest} (the step of the checkpoint in {m.run_dir})",
                    )
                arrays, host = m.ckpt.restore(latest, arrays)
                m.start = latest
            run_files.truncate_rows(m.run_dir, m.start)
            if host.get("guard"):
                m.guard = GuardState.from_dict(host["guard"])
            m.loss_sum, m.loss_n = float(host.get("loss_sum", 0.0)), int(host.get("loss_n", 0))
            m.elapsed0 = float(host.get("elapsed", 0.0))
            m.step = m.start
            params_k.append(arrays["params"])
            opt_k.append(arrays["opt_state"])
        state = PackedState(
            graphdef, tx, params_k, opt_k, B, z_loss=cfg0.train.z_loss, group_size=self.group_size
        )
        del params_k, opt_k
        state.set_eval_batches(
            eval_batches(
                self.data.val,
                context=ctx,
                n_sequences=cfg0.eval.eval_sequences,
                batch_size=cfg0.eval.eval_batch_size,
                seed=cfg0.eval.eval_seed,
            )
        )
        peak = device_peak(cfg0.train.compute_dtype)
        fpt = flops.flops_per_token(shape, MFU_CONVENTION)
        per_step = cfg0.tokens_per_step

        def evaluate(k: int) -> tuple[float, float]:
            per_seq = state.eval_losses(k).astype(np.float64)
            se = per_seq.std(ddof=1) / math.sqrt(per_seq.size) if per_seq.size > 1 else math.nan
            return float(per_seq.mean()), float(se)

        t_start = time.perf_counter()
        for m in members:
            m.t_last_ckpt = t_start
            run_files.write_status(
                m.run_dir, "running", step=m.start, tokens=m.start * per_step, pack_size=K
            )
        n_iter = max(m.total - m.start for m in members)
        idle = np.zeros((B, ctx + 1), np.int32)
        pending: list[tuple[int, list[Any]]] = []  # (pack iteration, `PackedState.step` losses)
        t_mark: float | None = None

        for i in range(1, n_iter + 1):
            active = np.array([m.is_training_at(i) for m in members])
            if not active.any():
                break
            batch = np.stack(
                [
                    train_batch(
                        self.data.train,
                        seed=m.cfg.data.data_seed,
                        step=m.step_at(i) - 1,
                        batch_size=B,
                        context=ctx,
                    )
                    if a
                    else idle
                    for m, a in zip(members, active, strict=True)
                ]
            )
            lr = np.array(
                [
                    lr_at(m.cfg, m.step_at(i) - 1) if a else 0.0
                    for m, a in zip(members, active, strict=True)
                ],
                np.float32,
            )
            pending.append((i, state.step(batch, lr, active)))
            now = time.perf_counter()
            due = [
                a
                and (
                    m.step_at(i) in m.evals
                    or m.step_at(i) == m.total
                    or (
                        bool(m.cfg.checkpoint.every_steps)
                        and m.step_at(i) % m.cfg.checkpoint.every_steps == 0
                    )
                    or (
                        bool(m.cfg.checkpoint.every_seconds)
                        and now - m.t_last_ckpt >= m.cfg.checkpoint.every_seconds
                    )
                )
                for m, a in zip(members, active, strict=True)
            ]
            if t_mark is not None and not (any(due) or len(pending) >= SYNC_EVERY):
                continue
            # Sync: pull pending losses [n, K], run each member's guard, account throughput.
            fetched = jax.device_get([[loss for _, loss in groups] for _, groups in pending])
            losses = np.full((len(pending), K), np.nan)  # nan: a member's group was not stepped
            for row, (_, groups), values in zip(losses, pending, fetched, strict=True):
                for (g, _), v in zip(groups, values, strict=True):
                    row[g.start : g.stop] = v
            now = time.perf_counter()
            counted = t_mark is not None  # the first (compiling) iteration is not timed
            dt = now - t_mark if counted else 0.0
            t_mark = now
            for k, m in enumerate(members):
                if m.state is not None:
                    continue
                steps_run = 0
                for (j, _), loss in zip(pending, losses[:, k], strict=True):
                    if not m.is_training_at(j):
                        continue
                    steps_run += 1
                    s = m.step_at(j)
                    m.step = s
                    m.reason = check_loss(m.cfg.guards, m.guard, s, float(loss))
                    if m.reason:
                        break
                    m.loss_sum += float(loss)
                    m.loss_n += 1
                if counted:
                    m.timed_s += dt
                    m.timed_tokens += steps_run * per_step
                if m.reason:
                    m.state = "diverged"
                    self._finish(m, K)
            pending.clear()
            for k, m in enumerate(members):
                if m.state is not None or not m.is_training_at(i):
                    continue
                s = m.step_at(i)
                if s in m.evals:
                    eval_loss, eval_se = evaluate(k)
                    tps = m.timed_tokens / m.timed_s if m.timed_s > 0 else None
                    row = run_files.metrics_row(
                        shape,
                        step=s,
                        tokens=s * per_step,
                        train_loss=m.loss_sum / m.loss_n if m.loss_n else math.nan,
                        eval_loss=eval_loss,
                        eval_loss_se=eval_se,
                        lr=float(lr_at(m.cfg, s - 1)),
                        tokens_per_s=tps,
                        mfu=mfu(tps, fpt, peak) if tps else None,
                        peak_flops=peak.flops,
                        peak_source=peak.source,
                        wall_time=m.elapsed0 + time.perf_counter() - t_start,
                    )
                    run_files.append_row(m.run_dir, row)
                    m.loss_sum, m.loss_n, m.timed_tokens, m.timed_s = 0.0, 0, 0, 0.0
                    run_files.write_status(
                        m.run_dir, "running", step=s, tokens=s * per_step, pack_size=K
                    )
                if due[k] and (s < m.total or m.cfg.checkpoint.at_end):
                    host = {
                        "loss_sum": m.loss_sum,
                        "loss_n": m.loss_n,
                        "guard": m.guard.to_dict(),
                        "elapsed": m.elapsed0 + time.perf_counter() - t_start,
                    }
                    m.ckpt.save(s, state.arrays(k), host)
                    m.t_last_ckpt = time.perf_counter()
                if s == m.total:
                    m.state = "done"
                    self._finish(m, K)
            t_mark = time.perf_counter()  # eval and checkpoint time is not training time
        for m in members:
            if m.state is None:  # resumed from a checkpoint at its last step: nothing to run
                m.state = "done"
                self._finish(m, K)
        return [self._outcome(m) for m in members]

    def _finish(self, m: _Member, pack_size: int) -> None:
        m.ckpt.close()
        run_files.write_status(
            m.run_dir,
            m.state or "done",
            step=m.step,
            tokens=m.step * m.cfg.tokens_per_step,
            reason=m.reason,
            pack_size=pack_size,
        )

    def _outcome(self, m: _Member) -> RunOutcome:
        rows = run_files.read_rows(m.run_dir)
        return RunOutcome(
            m.state or "done",
            m.step,
            m.step * m.cfg.tokens_per_step,
            m.run_dir,
            rows[-1] if rows else None,
            m.reason,
            rows,
            data_summary(self.data),
        )


def member_dyn(tree: Any, k: Any) -> Any:
    """The k-th member of a stacked pytree, k traced (one compilation for every k)."""
    import jax

    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False), tree)
