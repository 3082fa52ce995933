"""Sweep files: TOML with a `[base]` run config, a `[design]`, crossed `[axes]` and options.

`load_spec(path)` reads and validates a sweep file; every problem is one `ConfigError` naming the
key, the value and what is allowed, raised before anything is planned, started or written.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.sweep.executor_options import ExecutorOptions, parse_executor

DESIGN_KINDS = ("grid", "isoflop", "ladder")
DEFAULT_CONVENTION = "attention"  # 6N + attention-logit FLOPs: exact for small models too
PARAM_COUNTS = ("N_nonembedding", "N_total", "N_chinchilla")
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "convention",
    "base",
    "design",
    "axes",
    "wsd",
    "executor",
)
MAX_SPEC_BYTES = 1 << 20

# Keys allowed in [design], per kind (plus the common ones).
_COMMON_DESIGN_KEYS = ("kind", "min_steps", "param_count", "ladder")
_DESIGN_KEYS = {
    "grid": ("sizes", "shapes", "tokens", "tokens_per_param"),
    "isoflop": (
        "budgets",
        "sizes_per_budget",
        "spread",
        "prior_tokens_per_param",
        "prior_coefficient",
        "prior_exponent",
    ),
    "ladder": ("sizes", "n_min", "n_max", "k", "tokens_per_param"),
}
_WSD_KEYS = ("enabled", "cooldown_fraction", "branch_fractions", "decay_shape")


@dataclass(frozen=True)
class Design:
    """The design of a sweep: which (shape, tokens) points it trains. Fields by kind.

    grid: (`sizes` | `shapes`) x (`tokens` | `tokens_per_param`);
    isoflop: `budgets` x `sizes_per_budget` sizes spread log-uniformly by a factor `spread` on
    either side of a prior optimum (N_opt = prior_coefficient * C**prior_exponent, or by default
    the Chinchilla rule D = prior_tokens_per_param * N); ladder: `sizes` (or `n_min`, `n_max`,
    `k`) at `tokens_per_param`. Sizes are non-embedding parameter targets for the model ladder.
    """

    kind: str
    sizes: tuple[float, ...] = ()
    shapes: tuple[dict, ...] = ()
    tokens: tuple[int, ...] = ()
    tokens_per_param: tuple[float, ...] = ()
    budgets: tuple[float, ...] = ()
    sizes_per_budget: int = 5
    spread: float = 4.0
    prior_tokens_per_param: float = 20.0
    prior_coefficient: float | None = None
    prior_exponent: float = 0.5
    min_steps: int = 10
    param_count: str = "N_nonembedding"
    ladder: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WsdOptions:
    """Warmup-stable-decay branches: one stable run per size, cooldowns branched from it.

    Each branch starts from the stable run's checkpoint at `branch_fractions` x the design's
    tokens and cools down over `cooldown_fraction` of its own length (Hägele et al. 2024).
    """

    cooldown_fraction: float = 0.2
    branch_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    decay_shape: str = "linear"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    name: str
    base: dict
    design: Design
    convention: str = DEFAULT_CONVENTION
    axes: dict[str, tuple] = field(default_factory=dict)
    wsd: WsdOptions | None = None
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    description: str = ""
    source_text: str = ""
    source_path: str = ""


def load_spec(path: str | Path) -> SweepSpec:
    """Read, parse and validate a sweep file (TOML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("sweep file", str(path), "an existing TOML file")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise ConfigError("sweep file", str(path), f"a TOML file under {MAX_SPEC_BYTES} bytes")
    try:
        text = p.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError("sweep file", str(path), "UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("sweep file", str(path), f"valid TOML ({e})") from e
    try:
        return parse_spec(raw, name=p.stem, source_text=text, source_path=str(p))
    except ConfigError as e:  # name the file the bad value is in
        if e.context is not None:
            raise
        raise ConfigError(e.field, e.value, e.allowed, context=str(p)) from None


def parse_spec(
    raw: dict, *, name: str = "sweep", source_text: str = "", source_path: str = ""
) -> SweepSpec:
    """Validate the parsed TOML of a sweep file and return its `SweepSpec`."""
    _check_keys(raw, TOP_LEVEL_KEYS, "")
    convention = raw.get("convention", DEFAULT_CONVENTION)
    from scaling.flops import CONVENTIONS

    if convention not in CONVENTIONS:
        raise ConfigError("convention", convention, " | ".join(CONVENTIONS))
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError("base", base, "a table of run-config sections ([base.model], ...)")
    if "design" not in raw:
        raise ConfigError(
            "design", None, f"a [design] table with kind = {' | '.join(DESIGN_KINDS)}"
        )
    design = _parse_design(raw["design"])
    axes = _parse_axes(raw.get("axes", {}))
    wsd = _parse_wsd(raw["wsd"]) if "wsd" in raw else None
    executor = parse_executor(raw["executor"]) if "executor" in raw else ExecutorOptions()
    sweep_name = raw.get("name", name)
    if not isinstance(sweep_name, str) or not sweep_name:
        raise ConfigError("name", sweep_name, "a non-empty string")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", description, "a string")
    return SweepSpec(
        name=sweep_name,
        base=base,
        design=design,
        convention=convention,
        axes=axes,
        wsd=wsd,
        executor=executor,
        description=description,
        source_text=source_text,
        source_path=source_path,
    )


def _check_keys(table: dict, allowed: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            known = ", ".join(allowed)
            raise ConfigError(prefix + key, table[key], f"no key {key!r} here; known: {known}")


def _parse_design(raw: Any) -> Design:
    if not isinstance(raw, dict):
        raise ConfigError("design", raw, "a table with kind = " + " | ".join(DESIGN_KINDS))
    kind = raw.get("kind")
    if kind not in DESIGN_KINDS:
        raise ConfigError("design.kind", kind, " | ".join(DESIGN_KINDS))
    _check_keys(raw, _COMMON_DESIGN_KEYS + _DESIGN_KEYS[kind], "design.")
    kw: dict[str, Any] = {"kind": kind}
    if "min_steps" in raw:
        kw["min_steps"] = _positive_int("design.min_steps", raw["min_steps"])
    if "param_count" in raw:
        if raw["param_count"] not in PARAM_COUNTS:
            raise ConfigError("design.param_count", raw["param_count"], " | ".join(PARAM_COUNTS))
        kw["param_count"] = raw["param_count"]
    if "ladder" in raw:
        if not isinstance(raw["ladder"], dict):
            raise ConfigError("design.ladder", raw["ladder"], "a table of ladder options")
        kw["ladder"] = dict(raw["ladder"])
    if kind == "grid":
        kw.update(_parse_grid(raw))
    elif kind == "isoflop":
        kw.update(_parse_isoflop(raw))
    else:
        kw.update(_parse_ladder(raw))
    return Design(**kw)


def _parse_grid(raw: dict) -> dict:
    out: dict[str, Any] = {}
    if ("sizes" in raw) == ("shapes" in raw):
        raise ConfigError("design.sizes", raw.get("sizes"), "exactly one of sizes or shapes")
    if "sizes" in raw:
        out["sizes"] = _positive_list("design.sizes", raw["sizes"])
    else:
        shapes = raw["shapes"]
        if not isinstance(shapes, list) or not shapes:
            raise ConfigError("design.shapes", shapes, "a non-empty list of model tables")
        for s in shapes:
            if not isinstance(s, dict):
                raise ConfigError("design.shapes", s, "tables like {d_model=64, n_layers=2, ...}")
        out["shapes"] = tuple(dict(s) for s in shapes)
    if ("tokens" in raw) == ("tokens_per_param" in raw):
        raise ConfigError(
            "design.tokens", raw.get("tokens"), "exactly one of tokens or tokens_per_param"
        )
    if "tokens" in raw:
        out["tokens"] = tuple(int(v) for v in _positive_list("design.tokens", raw["tokens"]))
    else:
        out["tokens_per_param"] = _positive_list("design.tokens_per_param", raw["tokens_per_param"])
    return out


def _parse_isoflop(raw: dict) -> dict:
    if "budgets" not in raw:
        raise ConfigError("design.budgets", None, "a non-empty list of positive FLOP budgets")
    out: dict[str, Any] = {"budgets": _positive_list("design.budgets", raw["budgets"])}
    if "sizes_per_budget" in raw:
        out["sizes_per_budget"] = _positive_int("design.sizes_per_budget", raw["sizes_per_budget"])
    if "spread" in raw:
        spread = raw["spread"]
        if not _is_number(spread) or not spread > 1:
            raise ConfigError("design.spread", spread, "a number > 1 (size factor each side)")
        out["spread"] = float(spread)
    for key in ("prior_tokens_per_param", "prior_coefficient", "prior_exponent"):
        if key in raw:
            v = raw[key]
            if not _is_number(v) or not v > 0:
                raise ConfigError("design." + key, v, "a positive number")
            out[key] = float(v)
    return out


def _parse_ladder(raw: dict) -> dict:
    out: dict[str, Any] = {}
    explicit = "sizes" in raw
    geometric = [k for k in ("n_min", "n_max", "k") if k in raw]
    if explicit == bool(geometric) or (geometric and len(geometric) != 3):
        raise ConfigError(
            "design.sizes", raw.get("sizes"), "either sizes = [...] or all of n_min, n_max, k"
        )
    if explicit:
        out["sizes"] = _positive_list("design.sizes", raw["sizes"])
    else:  # K targets spaced geometrically from n_min to n_max
        n_min = _positive_number("design.n_min", raw["n_min"])
        n_max = _positive_number("design.n_max", raw["n_max"])
        k = _positive_int("design.k", raw["k"])
        if k > 1 and not n_max > n_min:
            raise ConfigError("design.n_max", n_max, f"a number > n_min = {n_min:g} when k > 1")
        ratio = (n_max / n_min) ** (1.0 / (k - 1)) if k > 1 else 1.0
        out["sizes"] = tuple(n_min * ratio**i for i in range(k))
    ratio = raw.get("tokens_per_param", 20.0)
    out["tokens_per_param"] = (_positive_number("design.tokens_per_param", ratio),)
    return out


def _parse_axes(raw: Any) -> dict[str, tuple]:
    if not isinstance(raw, dict):
        raise ConfigError("axes", raw, 'a table of "section.key" = [values, ...]')
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # [axes.optim] lr = [...]
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    axes: dict[str, tuple] = {}
    for key, values in flat.items():
        if key.count(".") != 1:
            raise ConfigError(
                "axes." + key, values, 'keys of the form "section.key", e.g. "optim.lr"'
            )
        if not isinstance(values, list) or not values:
            raise ConfigError("axes." + key, values, "a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError("axes." + key, values, "a list of distinct values")
        axes[key] = tuple(values)
    return axes


def _parse_wsd(raw: Any) -> WsdOptions | None:
    if not isinstance(raw, dict):
        raise ConfigError("wsd", raw, "a table with keys " + ", ".join(_WSD_KEYS))
    _check_keys(raw, _WSD_KEYS, "wsd.")
    if raw.get("enabled", True) is False:
        return None
    kw: dict[str, Any] = {}
    if "cooldown_fraction" in raw:
        v = raw["cooldown_fraction"]
        if not _is_number(v) or not 0 < v < 1:
            raise ConfigError("wsd.cooldown_fraction", v, "a number in (0, 1)")
        kw["cooldown_fraction"] = float(v)
    if "branch_fractions" in raw:
        fr = raw["branch_fractions"]
        if not isinstance(fr, list) or not fr or not all(_is_number(f) and 0 < f <= 1 for f in fr):
            raise ConfigError("wsd.branch_fractions", fr, "a non-empty list of numbers in (0, 1]")
        kw["branch_fractions"] = tuple(sorted({float(f) for f in fr}))
    if "decay_shape" in raw:
        kw["decay_shape"] = raw["decay_shape"]
    return WsdOptions(**kw)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive_number(name: str, v: Any) -> float:
    if not _is_number(v) or not v > 0:
        raise ConfigError(name, v, "a positive number")
    return float(v)


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(name, v, "a positive integer")
    return v


def _positive_list(name: str, values: Any) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise ConfigError(name, values, "a non-empty list of positive numbers")
    for v in values:
        if not _is_number(v) or not v > 0:
            raise ConfigError(name, v, "positive numbers only (each entry > 0)")
    return tuple(float(v) for v in values)
