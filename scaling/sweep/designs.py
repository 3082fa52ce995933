"""Designs (grid, IsoFLOP, ladder) crossed with axes: `plan(spec)` -> the sweep's runs.

Every run gets a deterministic `run_id`: 12 hex digits of the SHA-256 of the canonical JSON of
everything that changes its result (its full config, less the checkpoint cadence, which does not:
resuming gives the same losses). Token counts are whole optimizer steps (`train.steps`), so the
achieved compute of an IsoFLOP run is its budget up to half a step (min_steps bounds the gap).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from scaling import flops
from scaling.data.objectives import attends_causally
from scaling.errors import ConfigError
from scaling.io import canonical_json
from scaling.model.shape import ModelShape
from scaling.sweep.spec import Design, SweepSpec
from scaling.train.config import SECTIONS, RunConfig

SHAPE_KEYS = ("d_model", "n_layers", "n_heads")  # chosen by a sized design
LENGTH_KEYS = ("train.steps", "train.tokens")  # chosen by every design
HASH_EXCLUDED_SECTIONS = ("checkpoint", "mesh")  # how a run is computed, not what
WSD_KEYS = ("optim.schedule", "optim.decay_fraction", "optim.warmup_steps")  # set by [wsd]
LOG_TOLERANCE = 1e-3  # bisections on log N stop at 0.1%


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id, its config and the design point it stands for."""

    run_id: str
    config: RunConfig
    point: dict = field(default_factory=dict)

    @property
    def shape(self) -> ModelShape:
        return self.config.model

    @property
    def tokens(self) -> int:
        return self.config.total_steps * self.config.tokens_per_step

    def record(self) -> dict:
        """The JSON record kept in runs/<run_id>/run.json and plan.json."""
        return {"run_id": self.run_id, "config": self.config.to_dict(), "point": self.point}


def run_id_for(config: RunConfig, extra: dict | None = None) -> str:
    """12 hex digits of sha256(canonical JSON of what changes the run's result)."""
    d = config.to_dict()
    for name in HASH_EXCLUDED_SECTIONS:
        d.pop(name, None)
    if extra:
        d["__extra__"] = extra
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()[:12]


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the sweep, ordered by design point, then axis values; ids unique."""
    base = copy.deepcopy(spec.base)
    _check_base(base, spec.design)
    _check_ladder_options(spec.design)
    if spec.wsd is not None:
        for key in WSD_KEYS:
            if key in spec.axes:
                raise ConfigError("axes." + key, list(spec.axes[key]), "an axis [wsd] does not set")
    _validate(base, "base")
    ordered: list[tuple[int, int, PlannedRun]] = []
    for c, combo in enumerate(_axis_combinations(spec.axes)):
        cfg_dict = _with_axes(base, combo)
        resolved = _validate(cfg_dict, "axes" if combo else "base", combo)
        points = design_points(spec.design, resolved, spec.convention)
        for i, (shape, steps, point) in enumerate(points):
            d = copy.deepcopy(cfg_dict)
            d["model"] = shape.to_dict()
            d.setdefault("train", {})
            d["train"]["steps"] = steps
            d["train"]["tokens"] = None
            config = _validate(d, "axes" if combo else "base", combo)
            full_point = {**point, "axes": dict(combo), "convention": spec.convention}
            ordered.append((i, c, PlannedRun(run_id_for(config), config, full_point)))
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for _i, _c, run in sorted(ordered, key=lambda t: (t[0], t[1])):
        if run.run_id not in seen:  # two design points may map onto one run (one shape)
            seen.add(run.run_id)
            runs.append(run)
    if spec.wsd is not None:
        from scaling.sweep.wsd import expand_wsd

        runs = expand_wsd(runs, spec.wsd)
    return runs


def design_points(
    design: Design, config: RunConfig, convention: str
) -> list[tuple[ModelShape, int, dict]]:
    """(shape, steps, point) for each design point under the resolved base `config`."""
    if design.kind == "grid":
        return _grid_points(design, config)
    if design.kind == "ladder":
        return [
            _at_ratio(design, config, _sized_shape(n, config.model, design), n, r)
            for n in design.sizes
            for r in design.tokens_per_param
        ]
    return _isoflop_points(design, config, convention)


# --- grid and ladder -------------------------------------------------------------------------
def _grid_points(design: Design, config: RunConfig) -> list[tuple[ModelShape, int, dict]]:
    if design.sizes:
        sized = [(n, _sized_shape(n, config.model, design)) for n in design.sizes]
    else:
        sized = [(None, _explicit_shape(s, config.model)) for s in design.shapes]
    points = []
    for target, shape in sized:
        if design.tokens:
            for tokens in design.tokens:
                steps = _steps_for_tokens(tokens, config, "design.tokens", design.min_steps)
                point = {"design": "grid", "target_N": target, "tokens_planned": tokens}
                points.append((shape, steps, point))
        else:
            points.extend(
                _at_ratio(design, config, shape, target, r) for r in design.tokens_per_param
            )
    return points


def _at_ratio(
    design: Design, config: RunConfig, shape: ModelShape, target: float | None, ratio: float
) -> tuple[ModelShape, int, dict]:
    n = getattr(flops.param_counts(shape), design.param_count)
    tokens = ratio * n
    steps = _steps_for_tokens(tokens, config, "design.tokens_per_param", design.min_steps)
    point = {
        "design": design.kind,
        "target_N": target,
        "tokens_per_param": ratio,
        "tokens_planned": tokens,
    }
    return shape, steps, point


def _steps_for_tokens(tokens: float, config: RunConfig, key: str, min_steps: int) -> int:
    per_step = config.tokens_per_step
    steps = round(tokens / per_step)
    if steps < min_steps:
        need = min_steps * per_step
        raise ConfigError(
            key,
            tokens,
            f"a token count of at least {need} ({min_steps} steps of batch_size "
            f"{config.train.batch_size} x context {config.model.context}; design.min_steps)",
        )
    return steps


# --- isoflop ---------------------------------------------------------------------------------
def _isoflop_points(
    design: Design, config: RunConfig, convention: str
) -> list[tuple[ModelShape, int, dict]]:
    points = []
    for budget in design.budgets:
        try:
            points.extend(_budget_points(design, config, convention, budget))
        except _BudgetTooSmallError as e:
            smallest = _smallest_budget(design, config, convention, budget)
            raise ConfigError(
                "design.budgets",
                budget,
                f"a budget of at least about {smallest:.3g} FLOPs ({convention} convention); "
                f"at {budget:.3g} {e}",
            ) from None
    return points


class _BudgetTooSmallError(Exception):
    """A budget too small for its sizes (too few steps, or a size below the smallest model)."""


def _budget_points(
    design: Design, config: RunConfig, convention: str, budget: float
) -> list[tuple[ModelShape, int, dict]]:
    n_opt = prior_optimum(design, config, convention, budget)
    k = design.sizes_per_budget
    exponents = [0.0] if k == 1 else [2 * i / (k - 1) - 1 for i in range(k)]
    points: list[tuple[ModelShape, int, dict]] = []
    shapes_seen: set[ModelShape] = set()
    for e in exponents:
        target = n_opt * design.spread**e
        try:
            shape = _shape_for(target, config.model, design)
        except ConfigError as err:
            raise _BudgetTooSmallError(
                f"its size {target:.3g} is below the smallest model (N_nonembedding {err.allowed})"
            ) from None
        if shape in shapes_seen:
            continue
        shapes_seen.add(shape)
        tokens = flops.tokens_for_flops(shape, budget, convention, causal=_causal(config))
        steps = round(tokens / config.tokens_per_step)
        if steps < design.min_steps:
            raise _BudgetTooSmallError(
                f"its size d_model={shape.d_model}, n_layers={shape.n_layers} trains {steps} "
                f"steps (batch_size {config.train.batch_size} x context "
                f"{config.model.context}) < design.min_steps={design.min_steps}"
            )
        point = {"design": "isoflop", "target_N": target, "budget": budget, "N_opt_prior": n_opt}
        points.append((shape, steps, point))
    return points


def _causal(config: RunConfig) -> bool:
    """Whether the run's attention is causal (budgets count the attention it trains with)."""
    return attends_causally(config.train.objective)


def prior_optimum(design: Design, config: RunConfig, convention: str, budget: float) -> float:
    """The predicted optimal size at `budget`: prior_coefficient * C**prior_exponent if given,
    else the size whose tokens (C / FLOPs per token) are prior_tokens_per_param x its N."""
    if design.prior_coefficient is not None:
        return design.prior_coefficient * budget**design.prior_exponent
    ratio = design.prior_tokens_per_param

    def log_excess(log_n: float) -> float:  # log(D/N) - log(ratio), decreasing in N
        shape = _shape_for(math.exp(log_n), config.model, design)
        n = getattr(flops.param_counts(shape), design.param_count)
        tokens = flops.tokens_for_flops(shape, budget, convention, causal=_causal(config))
        return math.log(tokens / n / ratio)

    lo, hi = math.log(1.0), math.log(max(budget, 10.0))
    lo = _first_buildable(lo, hi, config, design)
    if log_excess(lo) <= 0:
        return math.exp(lo)
    while hi - lo > LOG_TOLERANCE:
        mid = 0.5 * (lo + hi)
        try:
            ok = log_excess(mid) > 0
        except ConfigError:
            ok = False
        lo, hi = (mid, hi) if ok else (lo, mid)
    return math.exp(lo)


def _first_buildable(lo: float, hi: float, config: RunConfig, design: Design) -> float:
    """The smallest log-size the ladder can build (bisection between unbuildable and buildable)."""
    try:
        _shape_for(math.exp(lo), config.model, design)
        return lo
    except ConfigError:
        pass
    while hi - lo > LOG_TOLERANCE:
        mid = 0.5 * (lo + hi)
        try:
            _shape_for(math.exp(mid), config.model, design)
            hi = mid
        except ConfigError:
            lo = mid
    return hi


def _smallest_budget(design: Design, config: RunConfig, convention: str, budget: float) -> float:
    """A budget (within 1% of the smallest found by bisection) whose sizes are all buildable
    and get min_steps steps. Shapes are discrete, so a slightly larger budget can still fail."""

    def fits(c: float) -> bool:
        try:
            _budget_points(design, config, convention, c)
            return True
        except (_BudgetTooSmallError, ConfigError):
            return False

    hi = budget
    while not fits(hi):
        hi *= 4.0
        if hi > budget * 1e12:
            return float("inf")
    lo = hi / 4.0 if hi > budget else budget
    if fits(lo):
        return lo
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


# --- shapes ----------------------------------------------------------------------------------
def _shape_for(target: float, base_model: ModelShape, design: Design) -> ModelShape:
    """The ladder's shape nearest `target` non-embedding parameters, built with the base's
    vocabulary, context and variant, the design's ladder options, and the base's other model
    fields (tied embeddings, qk_norm, ...) where the ladder does not take them itself."""
    from scaling.model.ladder import shape_for_params

    params = _ladder_options()
    model = base_model.to_dict()
    kw = {k: v for k, v in model.items() if k in params and k not in SHAPE_KEYS}
    kw.update(design.ladder)
    shape = shape_for_params(target, **kw)
    default = ModelShape(d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads)
    rest = {
        k: v
        for k, v in model.items()
        if k not in SHAPE_KEYS and k not in kw and v != getattr(default, k)
    }
    return shape.replace(**rest) if rest else shape


def _ladder_options() -> list[str]:
    """The keyword options of the model ladder (allowed in [design.ladder])."""
    from scaling.model.ladder import shape_for_params

    return list(inspect.signature(shape_for_params).parameters)[1:]


def _check_ladder_options(design: Design) -> None:
    allowed = _ladder_options()
    unknown = sorted(set(design.ladder) - set(allowed))
    if unknown:
        raise ConfigError(
            "design.ladder." + unknown[0], design.ladder[unknown[0]], ", ".join(allowed)
        )
    from scaling.model.ladder import shape_for_params

    try:  # a bad option value (an unknown recipe, a negative aspect) fails here, named
        shape_for_params(1e5, **design.ladder)
    except ConfigError as e:
        if e.field in design.ladder:
            raise ConfigError("design.ladder." + e.field, e.value, e.allowed) from None


def _sized_shape(target: float, base_model: ModelShape, design: Design) -> ModelShape:
    """`_shape_for` with the ladder's errors named by their sweep-file key."""
    try:
        return _shape_for(target, base_model, design)
    except ConfigError as e:
        key = f"design.ladder.{e.field}" if e.field in design.ladder else "design.sizes"
        raise ConfigError(key, e.value, e.allowed) from None


def _explicit_shape(table: dict, base_model: ModelShape) -> ModelShape:
    fields = base_model.to_dict()
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError("design.shapes." + unknown[0], table[unknown[0]], ", ".join(fields))
    try:
        return ModelShape(**{**fields, **table})
    except ConfigError as e:
        raise ConfigError("design.shapes." + e.field, e.value, e.allowed) from None


# --- configs and axes ------------------------------------------------------------------------
def _check_base(base: dict, design: Design) -> None:
    for key in LENGTH_KEYS:
        section, name = key.split(".")
        if base.get(section, {}).get(name) is not None:
            raise ConfigError(
                "base." + key, base[section][name], "unset: the design sets each run's length"
            )
    if design.kind != "grid" or design.sizes:
        for name in SHAPE_KEYS:
            if name in base.get("model", {}):
                raise ConfigError(
                    "base.model." + name,
                    base["model"][name],
                    "unset: the design chooses each run's shape (set variant, vocab_size, "
                    "context, ... here)",
                )


def _axis_combinations(axes: dict[str, tuple]) -> list[tuple[tuple[str, Any], ...]]:
    for key in axes:
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError("axes." + key, list(axes[key]), "sections " + ", ".join(SECTIONS))
        allowed = [f.name for f in dataclasses.fields(SECTIONS[section])]  # defaulted too
        if name not in allowed:
            raise ConfigError(
                "axes." + key, list(axes[key]), ", ".join(f"{section}.{k}" for k in allowed)
            )
        if key in LENGTH_KEYS or (section == "model" and name in SHAPE_KEYS):
            raise ConfigError("axes." + key, list(axes[key]), "a key the design does not set")
    keys = list(axes)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def _with_axes(base: dict, combo: tuple[tuple[str, Any], ...]) -> dict:
    d = copy.deepcopy(base)
    for key, value in combo:
        section, name = key.split(".")
        d.setdefault(section, {})[name] = value
    return d


def _validate(d: dict, where: str, combo: tuple = ()) -> RunConfig:
    """RunConfig.from_dict, with errors naming the sweep-file key (base.* or axes.*)."""
    try:
        return RunConfig.from_dict(d)
    except ConfigError as e:
        axis_keys = {k for k, _ in combo}
        prefix = "axes." if e.field in axis_keys else "base."
        raise ConfigError(prefix + e.field, e.value, e.allowed) from None
