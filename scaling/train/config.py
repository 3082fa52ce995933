"""`RunConfig`: everything that determines one training run, as frozen, validated sections.

A config round-trips through TOML/JSON (`from_toml`, `from_dict`, `to_dict`); `to_dict` is
canonical (every field present, defaults filled in), so its JSON is the basis of a run's id —
except options added after ids were first issued, which are left out while at their no-op
default (`train.objective = "causal"`, the model's unset variant fields) so that earlier runs
keep their ids.
Overrides (`with_overrides(["optim.lr=3e-3"])`) parse values as TOML literals.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.model.shape import ModelShape

SCHEDULES = ("warmup_cosine", "warmup_linear", "constant", "wsd")
COMPUTE_DTYPES = ("float32", "bfloat16")
DEFAULT_STEPS = 1000

# The built-in model: ~0.8M parameters on bytes, a useful CPU run in minutes.
DEFAULT_MODEL = ModelShape(d_model=128, n_layers=4, n_heads=4, vocab_size=256, context=256)


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from; `data_seed` alone fixes the order of training batches."""

    source: str = "builtin:python-stdlib"
    tokenizer: str = "bytes"
    data_seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with gradient clipping and a learning-rate schedule.

    Warmup lasts `warmup_steps` if given, else `warmup_fraction` of the run. `wsd` decays over
    the last `decay_fraction` of the run; every schedule but `constant` ends at lr*min_lr_ratio.
    `grad_clip = 0` turns clipping off.
    """

    lr: float = 3e-3
    schedule: str = "warmup_cosine"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Batch, length (`steps` or `tokens`, not both; tokens = steps*batch_size*context), seeds.

    `objective`: causal (next token) | mlm (BERT masking, bidirectional) | span (T5 span
    corruption, decoder-only); see `scaling.data.objectives`. The losses are nats per
    predicted token of that objective.
    """

    batch_size: int = 32
    steps: int | None = None
    tokens: int | None = None
    init_seed: int = 0
    z_loss: float = 0.0
    compute_dtype: str = "float32"
    objective: str = "causal"


@dataclass(frozen=True)
class EvalConfig:
    """Validation: `n_evals` log-spaced steps (always the last) unless `steps` lists them."""

    n_evals: int = 20
    steps: tuple[int, ...] | None = None
    eval_sequences: int = 128
    eval_batch_size: int = 64
    eval_seed: int = 0


@dataclass(frozen=True)
class CheckpointConfig:
    """Save every `every_steps` steps and/or `every_seconds` seconds (0 = never), and at the end."""

    every_steps: int = 0
    every_seconds: float = 300.0
    at_end: bool = True


@dataclass(frozen=True)
class MeshConfig:
    """How one run is split over devices (scaling.train.mesh): the batch over `data` x `fsdp`,
    parameters and optimizer state over `fsdp`. Sizes are integers or "all" (the devices the
    other axis leaves). It changes how a run is computed, not what: not part of a run's
    identity, and a checkpoint resumes on any mesh."""

    data: Any = "all"
    fsdp: Any = 1


@dataclass(frozen=True)
class GuardsConfig:
    """Divergence: a non-finite loss, or a training loss above `spike_factor` times the lowest
    smoothed loss so far (after `min_steps`), or above `max_loss`."""

    spike_factor: float = 3.0
    min_steps: int = 20
    ema_decay: float = 0.9
    max_loss: float = 1e4


SECTIONS: dict[str, type] = {
    "model": ModelShape,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "guards": GuardsConfig,
    "mesh": MeshConfig,
}
# Sections that say how a run is computed, not what it computes (resume across them).
EXECUTION_SECTIONS = ("mesh",)


@dataclass(frozen=True)
class RunConfig:
    """One training run. Sections: model (ModelShape), data, optim, train, eval, checkpoint,
    guards, mesh."""

    model: ModelShape = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived quantities -------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """Target tokens per optimizer step (batch_size * context)."""
        return self.train.batch_size * self.model.context

    @property
    def total_steps(self) -> int:
        t = self.train
        if t.steps is not None:
            return t.steps
        if t.tokens is not None:
            return max(1, math.ceil(t.tokens / self.tokens_per_step))
        return DEFAULT_STEPS

    @property
    def warmup_steps(self) -> int:
        o = self.optim
        if o.warmup_steps is not None:
            return min(o.warmup_steps, self.total_steps)
        return round(o.warmup_fraction * self.total_steps)

    # ---- (de)serialization --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON-able dict: every field of every section, tuples as lists."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            sec = getattr(self, name)
            if name == "model":  # its own canonical form: unset variant fields left out
                out[name] = {k: _jsonable(v) for k, v in sec.to_dict().items()}
                continue
            out[name] = {f.name: _jsonable(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
        if out["train"]["objective"] == "causal":
            del out["train"]["objective"]
        if out["mesh"] == {"data": "all", "fsdp": 1}:  # the default: as before mesh existed
            del out["mesh"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) dict of sections; missing fields take defaults."""
        if not isinstance(d, dict):
            raise ConfigError("config", type(d).__name__, "a table of sections")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(unknown[0], d[unknown[0]], "sections " + ", ".join(SECTIONS))
        defaults = cls()
        sections = {}
        for name, typ in SECTIONS.items():
            given = d.get(name, {})
            if not isinstance(given, dict):
                raise ConfigError(name, given, f"a table of {name}.* keys")
            base = dataclasses.asdict(getattr(defaults, name))
            sections[name] = _build_section(name, typ, {**base, **given}, set(given))
        return cls(**sections)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        """Read a TOML file of sections ([model], [optim], ...)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", str(path), "an existing TOML file")
        try:
            d = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError("--config", str(path), f"valid UTF-8 TOML ({e})") from None
        return cls.from_dict(d)

    def with_overrides(self, assignments: list[str]) -> RunConfig:
        """Apply `section.key=value` strings; values are TOML literals (bare words are strings).

        `train.steps` and `train.tokens` are alternatives: setting one clears the other.
        """
        d = self.to_dict()
        for a in assignments:
            key, sep, raw = a.partition("=")
            key = key.strip()
            section, dot, name = key.partition(".")
            if not sep or not dot:
                raise ConfigError("--set", a, "section.key=value, e.g. optim.lr=3e-3")
            if section not in SECTIONS:
                raise ConfigError(key, raw, "sections " + ", ".join(SECTIONS))
            allowed = [f.name for f in dataclasses.fields(SECTIONS[section])]
            if name not in allowed:
                raise ConfigError(key, raw, ", ".join(f"{section}.{k}" for k in allowed))
            d.setdefault(section, {})[name] = parse_literal(raw.strip())  # a default mesh: no key
            if section == "train" and name in ("steps", "tokens"):
                d["train"]["tokens" if name == "steps" else "steps"] = None
        return RunConfig.from_dict(d)


def parse_literal(raw: str) -> Any:
    """Parse a TOML literal (3e-3, 10, true, "x", [1, 2]); anything else is a plain string."""
    if raw.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _build_section(name: str, typ: type, values: dict[str, Any], given: set[str]) -> Any:
    allowed = [f.name for f in dataclasses.fields(typ)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}", values[unknown[0]], ", ".join(f"{name}.{k}" for k in allowed)
        )
    hints = typing.get_type_hints(typ)
    coerced = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    if typ is ModelShape:
        try:
            return ModelShape(**coerced)
        except ConfigError as e:  # name the section in the field
            raise ConfigError(f"model.{e.field}", e.value, e.allowed) from None
    return typ(**coerced)


def _coerce(key: str, v: Any, hint: Any) -> Any:
    """Check `v` against a field's type hint; ints are accepted for floats, lists for tuples."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if v is None:
        if optional:
            return None
        raise ConfigError(key, v, f"a value of type {_type_name(hint)}")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base)
    if origin is tuple:
        if not isinstance(v, list | tuple) or not all(_is_int(x) for x in v):
            raise ConfigError(key, v, "a list of integers")
        return tuple(int(x) for x in v)
    if base is bool:
        if not isinstance(v, bool):
            raise ConfigError(key, v, "true or false")
        return v
    if base is int:
        if not _is_int(v):
            raise ConfigError(key, v, "an integer")
        return int(v)
    if base is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(key, v, "a number")
        return float(v)
    if base is str:
        if not isinstance(v, str):
            raise ConfigError(key, v, "a string")
        return v
    return v


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2**53)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _positive(key: str, v: float | int | None, what: str = "a positive number") -> None:
    if v is not None and not v > 0:
        raise ConfigError(key, v, what)


def _validate(c: RunConfig) -> None:
    o, t, e, ck, g = c.optim, c.train, c.eval, c.checkpoint, c.guards
    if o.schedule not in SCHEDULES:
        raise ConfigError("optim.schedule", o.schedule, " | ".join(SCHEDULES))
    _positive("optim.lr", o.lr)
    if o.warmup_steps is not None and o.warmup_steps < 0:
        raise ConfigError("optim.warmup_steps", o.warmup_steps, "an integer >= 0")
    for key, v in (
        ("optim.warmup_fraction", o.warmup_fraction),
        ("optim.min_lr_ratio", o.min_lr_ratio),
    ):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(key, v, "a number in [0, 1]")
    if not 0.0 < o.decay_fraction <= 1.0:
        raise ConfigError("optim.decay_fraction", o.decay_fraction, "a number in (0, 1]")
    for key, v in (("optim.b1", o.b1), ("optim.b2", o.b2)):
        if not 0.0 <= v < 1.0:
            raise ConfigError(key, v, "a number in [0, 1)")
    _positive("optim.eps", o.eps)
    for key, v in (("optim.weight_decay", o.weight_decay), ("optim.grad_clip", o.grad_clip)):
        if v < 0:
            raise ConfigError(key, v, "a number >= 0")
    _positive("train.batch_size", t.batch_size, "a positive integer")
    if t.steps is not None and t.tokens is not None:
        raise ConfigError("train.tokens", t.tokens, "unset when train.steps is set (one of them)")
    _positive("train.steps", t.steps, "a positive integer")
    _positive("train.tokens", t.tokens, "a positive integer")
    if t.z_loss < 0:
        raise ConfigError("train.z_loss", t.z_loss, "a number >= 0")
    if t.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError("train.compute_dtype", t.compute_dtype, " | ".join(COMPUTE_DTYPES))
    from scaling.data.objectives import OBJECTIVES

    if t.objective not in OBJECTIVES:
        raise ConfigError("train.objective", t.objective, " | ".join(OBJECTIVES))
    _positive("eval.n_evals", e.n_evals, "a positive integer")
    _positive("eval.eval_sequences", e.eval_sequences, "a positive integer")
    _positive("eval.eval_batch_size", e.eval_batch_size, "a positive integer")
    if e.steps is not None:
        n = c.total_steps
        bad = [s for s in e.steps if not 1 <= s <= n]
        if bad or not e.steps:
            raise ConfigError("eval.steps", list(e.steps), f"a non-empty list of steps in [1, {n}]")
    if ck.every_steps < 0:
        raise ConfigError("checkpoint.every_steps", ck.every_steps, "an integer >= 0 (0 = off)")
    if ck.every_seconds < 0:
        raise ConfigError("checkpoint.every_seconds", ck.every_seconds, "a number >= 0 (0 = off)")
    if not g.spike_factor > 1.0:
        raise ConfigError("guards.spike_factor", g.spike_factor, "a number > 1")
    if g.min_steps < 0:
        raise ConfigError("guards.min_steps", g.min_steps, "an integer >= 0")
    if not 0.0 <= g.ema_decay < 1.0:
        raise ConfigError("guards.ema_decay", g.ema_decay, "a number in [0, 1)")
    _positive("guards.max_loss", g.max_loss)
    for key, v in (("mesh.data", c.mesh.data), ("mesh.fsdp", c.mesh.fsdp)):
        if v != "all" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(key, v, 'a positive integer or "all"')
    if c.mesh.data == "all" and c.mesh.fsdp == "all":
        raise ConfigError("mesh.fsdp", "all", 'a size when mesh.data = "all" (one axis "all")')


def eval_steps(config: RunConfig) -> list[int]:
    """The steps after which validation runs: explicit, or `n_evals` log-spaced in [1, total]
    (rounded, deduplicated, always including the last step)."""
    n = config.total_steps
    if config.eval.steps is not None:
        return sorted(set(config.eval.steps) | {n})
    k = config.eval.n_evals
    if k == 1 or n == 1:
        return [n]
    steps = {round(math.exp(math.log(n) * i / (k - 1))) for i in range(k)}
    return sorted({min(max(s, 1), n) for s in steps} | {n})
