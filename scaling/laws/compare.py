"""Compare the scaling laws of groups of runs (architecture variants, objectives) on one table.

For each group (the values of a column, `model.variant` by default):
1. the compute frontier: per compute budget, the IsoFLOP minimum (`frontier="isoflop"`: the
   vertex of chinchilla approach 2's parabola of loss in log N) or the lowest-loss run
   (`frontier="envelope"`, approach 1);
2. L(C) = E + A_C / C^gamma fitted to those frontier points, all groups in one robust fit
   (Huber on log residuals, `scaling.laws.fitting`). E, the irreducible loss, is one constant
   for all groups by default (`offset="shared"`: the same data and loss leave the same entropy),
   one per group (`"free"`, needs 4+ budgets per group) or 0 (`"zero"`, Kaplan's pure power law);
3. bootstrap over runs: each resample redraws the runs of every budget of every group (with
   replacement, budget by budget), recomputes the frontier and refits; percentile intervals;
4. derived: each group's gamma, its difference from the baseline's (the exponents "differ"
   when the interval of the difference excludes 0), and its compute multiplier at a stated loss
   L*: k = C_group(L*) / C_baseline(L*), "reaches L* with k x the baseline's compute";
5. optionally L(N, D) = E + A/N^alpha + B/D^beta per group (chinchilla approach 3), reported as
   identified only when it converges and its bootstrap intervals of alpha and beta are narrower
   than `ND_MAX_WIDTH`.
Losses are compared as they are in the table: for objectives, nats per predicted token of each
objective (so E is per group there: use offset="free" or "zero").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

from scaling.errors import ConfigError, DataError, FitError
from scaling.laws.bootstrap import summarize
from scaling.laws.chinchilla import approach3, group_budgets, isoflop_minimum
from scaling.laws.fitting import FitOptions, Problem, constraints, fit_raw, solve_batch
from scaling.laws.forms import Form, RawParam
from scaling.laws.tables import LawData

FRONTIERS = ("isoflop", "envelope")
OFFSETS = ("shared", "free", "zero")
MIN_BUDGETS = 3  # frontier points per group for L(C)
MIN_SIZES = 3  # distinct model sizes per budget for an IsoFLOP parabola
MAX_REDRAWS = 50  # resamples of one budget whose parabola has no interior minimum
ND_MAX_WIDTH = 0.5  # L(N, D) "identified": 95% intervals of alpha and beta narrower than this
GAMMA_BOUNDS = (1e-3, 3.0)
# Defaults left out of a results table's config columns (run ids of older configs unchanged).
COLUMN_DEFAULTS = {"train.objective": "causal"}


@dataclass(frozen=True)
class CompareOptions:
    """What to compare and how; every field is recorded in the result."""

    by: str = "model.variant"
    baseline: str | None = None  # default: "gpt2" / "causal" if present, else the first group
    loss: str = "eval_loss"
    flops: str = "C_attention"
    params: str = "N_nonembedding"
    tokens: str = "D"
    frontier: str = "isoflop"
    offset: str = "shared"
    target_loss: float | None = None  # L*; default: middle of the loss range all frontiers span
    bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    nd: bool = True  # also fit L(N, D) per group
    nd_bootstrap: int = 200
    gap_decades: float = 0.05
    delta: float = 1e-3

    def __post_init__(self) -> None:
        if self.frontier not in FRONTIERS:
            raise ConfigError("frontier", self.frontier, " | ".join(FRONTIERS))
        if self.offset not in OFFSETS:
            raise ConfigError("offset", self.offset, " | ".join(OFFSETS))
        if self.bootstrap < 0 or self.nd_bootstrap < 0:
            raise ConfigError("bootstrap", self.bootstrap, "an integer >= 0")
        if not 0 < self.level < 1:
            raise ConfigError("level", self.level, "a number in (0, 1)")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ConfigError("target_loss", self.target_loss, "a positive loss")


@dataclass
class GroupRuns:
    """One group's runs, labelled by compute budget."""

    name: str
    C: np.ndarray
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    budget: np.ndarray  # budget label per run (0, 1, ...)


@dataclass
class Comparison:
    """The comparison: per-group rows, frontiers, fitted laws, bootstrap samples, provenance."""

    groups: list[str]
    baseline: str
    target_loss: float
    rows: list[dict[str, Any]]
    frontiers: dict[str, list[dict[str, float]]]
    params: dict[str, dict[str, float]]  # group -> {E, A_C, gamma}
    samples: dict[str, dict[str, list[float]]]  # group -> {E, A_C, gamma} bootstrap draws
    nd: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def row(self, group: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["group"] == group)

    def predict(self, group: str, C: np.ndarray) -> np.ndarray:
        p = self.params[group]
        return p["E"] + p["A_C"] * np.asarray(C, dtype=np.float64) ** -p["gamma"]

    def band(self, group: str, C: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap interval of the fitted frontier at C (None without bootstrap)."""
        s = self.samples.get(group)
        if not s or not s["gamma"]:
            return None
        E, A, g = (np.asarray(s[k])[:, None] for k in ("E", "A_C", "gamma"))
        curves = E + A * np.asarray(C, dtype=np.float64)[None, :] ** -g
        q = 50 * (1 - self.options["level"])
        return np.nanpercentile(curves, q, axis=0), np.nanpercentile(curves, 100 - q, axis=0)

    def markdown(self) -> str:
        return comparison_markdown(self)


# ----------------------------------------------------------------------------- input
def group_runs(df: pd.DataFrame, opts: CompareOptions) -> list[GroupRuns]:
    """Validated runs per group; a one-line DataError for a missing column or a thin group."""
    needed = {
        "--by": opts.by,
        "--loss": opts.loss,
        "--flops": opts.flops,
        "--params": opts.params,
        "--tokens": opts.tokens,
    }
    for flag, col in needed.items():
        if col not in df.columns:
            if col in COLUMN_DEFAULTS:
                continue
            shown = ", ".join(map(str, list(df.columns)[:30]))
            raise DataError(f"column {col!r} ({flag}) not in the table; available: {shown}")
    labels = group_labels(df, opts.by)
    if labels.isna().any():
        raise DataError(f"column {opts.by!r} (--by) has empty values; every run needs a group")
    out = []
    for name in _ordered(labels.unique()):
        sub = df[labels == name]
        arrays = {}
        for role, col in (("C", opts.flops), ("N", opts.params), ("D", opts.tokens)):
            arrays[role] = _positive(sub, col, role)
        arrays["loss"] = _positive(sub, opts.loss, "loss")
        budget = group_budgets(arrays["C"], opts.gap_decades)
        g = GroupRuns(str(name), budget=budget, **arrays)
        _check_group(g, opts)
        out.append(g)
    if len(out) < 2:
        raise DataError(
            f"column {opts.by!r} has {len(out)} group(s) ({', '.join(g.name for g in out)}); "
            "a comparison needs at least 2"
        )
    return out


def group_labels(df: pd.DataFrame, by: str) -> pd.Series:
    """Each row's group, with a results table's left-out defaults filled in (objective causal)."""
    if by not in df.columns:
        if by not in COLUMN_DEFAULTS:
            shown = ", ".join(map(str, list(df.columns)[:30]))
            raise DataError(f"column {by!r} (--by) not in the table; available: {shown}")
        return pd.Series(COLUMN_DEFAULTS[by], index=df.index)
    labels = df[by].astype(object)
    missing = labels.isna()
    labels = labels.map(str).astype(object)
    labels[missing] = COLUMN_DEFAULTS.get(by)
    return labels


def _ordered(values) -> list:
    return sorted(values, key=lambda v: str(v))


def _positive(df: pd.DataFrame, col: str, role: str) -> np.ndarray:
    try:
        arr = pd.to_numeric(df[col], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise DataError(f"column {col!r} ({role}) is not numeric: {e}") from None
    if not (np.isfinite(arr) & (arr > 0)).all():
        raise DataError(f"column {col!r} ({role}) has non-finite or non-positive values")
    return arr


def _check_group(g: GroupRuns, opts: CompareOptions) -> None:
    n_budgets = int(g.budget.max()) + 1
    if n_budgets < MIN_BUDGETS:
        raise DataError(
            f"group {opts.by}={g.name}: {n_budgets} compute budget(s) "
            f"(C = {', '.join(f'{c:.3g}' for c in _budget_C(g))}); need at least {MIN_BUDGETS} "
            "to fit L(C)"
        )
    if opts.frontier == "isoflop":
        for b, c in enumerate(_budget_C(g)):
            sizes = np.unique(g.N[g.budget == b]).size
            if sizes < MIN_SIZES:
                raise DataError(
                    f"group {opts.by}={g.name}: budget C = {c:.3g} has {sizes} model size(s); "
                    f"an IsoFLOP minimum needs at least {MIN_SIZES} (or use frontier=envelope)"
                )


def _budget_C(g: GroupRuns) -> list[float]:
    return [float(np.exp(np.mean(np.log(g.C[g.budget == b])))) for b in np.unique(g.budget)]


# ----------------------------------------------------------------------------- frontier
def frontier_points(g: GroupRuns, frontier: str, idx: np.ndarray | None = None) -> np.ndarray:
    """(budgets, 2) array of (C, L) frontier points from the runs `idx` (default: all).

    Raises FitError when a budget's parabola has no interior minimum."""
    idx = np.arange(g.C.size) if idx is None else idx
    out = []
    for b in np.unique(g.budget[idx]):
        sel = idx[g.budget[idx] == b]
        c = float(np.exp(np.mean(np.log(g.C[sel]))))
        if frontier == "envelope":
            out.append((c, float(np.min(g.loss[sel]))))
            continue
        if np.unique(g.N[sel]).size < MIN_SIZES:
            raise FitError(f"budget C = {c:.3g}: fewer than {MIN_SIZES} distinct sizes")
        try:
            m, _ = isoflop_minimum(np.log(g.N[sel]), g.loss[sel], np.log(g.D[sel]), None)
        except FitError as e:
            raise FitError(f"budget C = {c:.3g}: {e} (or use frontier=envelope)") from None
        out.append((c, m["L_min"]))
    return np.array(out)


def _resample(g: GroupRuns, frontier: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Frontier of one bootstrap resample (runs redrawn within each budget); redraws a budget
    whose resample has no IsoFLOP minimum. Returns the points and the number of redraws."""
    points, redraws = [], 0
    for b in np.unique(g.budget):
        members = np.nonzero(g.budget == b)[0]
        for attempt in range(MAX_REDRAWS + 1):
            pick = rng.choice(members, size=members.size, replace=True)
            try:
                points.append(frontier_points(g, frontier, pick)[0])
                break
            except FitError:
                redraws += 1
                if attempt == MAX_REDRAWS:
                    points.append(frontier_points(g, frontier, members)[0])
    return np.array(points), redraws


# ----------------------------------------------------------------------------- L(C) fit
_FORMS: dict[tuple[int, str], Form] = {}


def frontier_form(n_groups: int, offset: str) -> Form:
    """L(C) = E_g + A_g / C^gamma_g for groups g (one-hot columns after log C); cached so the
    compiled fit is reused."""
    key = (n_groups, offset)
    if key in _FORMS:
        return _FORMS[key]
    V = n_groups
    n_e = {"shared": 1, "free": V, "zero": 0}[offset]
    params = [RawParam(f"e{i}", f"E[{i}]", True) for i in range(n_e)]
    params += [RawParam(f"a{i}", f"A_C[{i}]", True) for i in range(V)]
    params += [RawParam(f"g{i}", f"gamma[{i}]") for i in range(V)]

    def log_predict(theta, logX):
        logC, onehot = logX[:, 0], logX[:, 1:]
        a = onehot @ theta[n_e : n_e + V]
        g = onehot @ theta[n_e + V : n_e + 2 * V]
        power = a - g * logC
        if n_e == 0:
            return power
        e = theta[0] if n_e == 1 else onehot @ theta[:V]
        return jnp.logaddexp(e, power)

    form = Form(
        name=f"frontier-{offset}-{V}",
        inputs=("C",),
        params=tuple(params),
        log_predict=log_predict,
        grid=lambda _x, _y: {},
        formula="L_g(C) = E + A_C,g / C^gamma_g",
        default_bounds={f"gamma[{i}]": GAMMA_BOUNDS for i in range(V)},
    )
    _FORMS[key] = form
    return form


def _design(points: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-group (C, L) points into log inputs [log C, one-hot] and log losses."""
    V = len(points)
    rows, ys = [], []
    for i, p in enumerate(points):
        for c, loss in p:
            rows.append([math.log(c)] + [1.0 if j == i else 0.0 for j in range(V)])
            ys.append(math.log(loss))
    return np.array(rows), np.array(ys)


def _starts(points: list[np.ndarray], offset: str) -> np.ndarray:
    """Starts from per-group OLS of log(L - E) on log C at several E (fractions of min L), each
    also with halved and doubled exponents."""
    fractions = (0.0,) if offset == "zero" else (0.05, 0.3, 0.5, 0.7, 0.85, 0.95)
    lowest = min(float(np.min(p[:, 1])) for p in points)
    starts = []
    for f in fractions:
        es, lines = [], []
        for p in points:
            e = f * (float(np.min(p[:, 1])) if offset == "free" else lowest)
            logc, logr = np.log(p[:, 0]), np.log(p[:, 1] - e)
            slope = np.polyfit(logc, logr, 1)[0]
            es.append(math.log(max(e, 1e-6)))
            lines.append((float(np.mean(logc)), float(np.mean(logr)), float(-slope)))
        e_part = {"shared": es[:1], "free": es, "zero": []}[offset]
        for scale in (1.0, 0.5, 2.0):
            gs = [float(np.clip(g * scale, 0.01, 0.9 * GAMMA_BOUNDS[1])) for _, _, g in lines]
            a_s = [mr + g * mc for (mc, mr, _), g in zip(lines, gs, strict=True)]
            starts.append(e_part + a_s + gs)
    return np.array(starts)


def _unpack(theta: np.ndarray, V: int, offset: str) -> list[dict[str, float]]:
    n_e = {"shared": 1, "free": V, "zero": 0}[offset]
    out = []
    for i in range(V):
        e = 0.0 if n_e == 0 else math.exp(theta[0] if n_e == 1 else theta[i])
        out.append({"E": e, "A_C": math.exp(theta[n_e + i]), "gamma": float(theta[n_e + V + i])})
    return out


def fit_frontiers(
    points: list[np.ndarray], offset: str, options: FitOptions
) -> tuple[np.ndarray, Problem, list[str]]:
    """The joint robust fit of L(C) to every group's frontier points: raw theta, problem, flags."""
    form = frontier_form(len(points), offset)
    logX, logy = _design(points)
    bounds = _e_bounds(points, offset)
    raw = fit_raw(form, logX, logy, starts=_starts(points, offset), bounds=bounds, options=options)
    problem = Problem(form, logX, logy, constraints(form, None, bounds), options.delta)
    return raw.theta, problem, list(raw.flags)


def _e_bounds(points: list[np.ndarray], offset: str) -> dict:
    """E below the lowest frontier loss it applies to (an irreducible loss is reached by none)."""
    if offset == "zero":
        return {}
    if offset == "shared":
        return {"E[0]": (1e-6, 0.999 * min(float(np.min(p[:, 1])) for p in points))}
    return {f"E[{i}]": (1e-6, 0.999 * float(np.min(p[:, 1]))) for i, p in enumerate(points)}


def _bootstrap_fits(
    problem: Problem, theta0: np.ndarray, draws: list[list[np.ndarray]], options: FitOptions
) -> np.ndarray:
    """Refit every resample's frontier points (one lane each, started at the full fit)."""
    Xs, ys = zip(*(_design(d) for d in draws), strict=True)
    X, y = np.stack(Xs), np.stack(ys)
    starts = np.repeat(theta0[None, :], len(draws), axis=0)
    theta, f, _, _ = solve_batch(problem, starts, np.ones(y.shape[1]), options, lane_data=(X, y))
    theta[~np.isfinite(f)] = np.nan
    return theta


# ----------------------------------------------------------------------------- derived
def compute_at(p: dict[str, Any], loss: float) -> Any:
    """C at which E + A_C / C^gamma equals `loss` (inf where loss <= E); arrays broadcast."""
    E, A, g = (np.asarray(p[k], dtype=np.float64) for k in ("E", "A_C", "gamma"))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(loss > E, (A / np.maximum(loss - E, 1e-300)) ** (1.0 / g), np.inf)
    return c


def default_target_loss(params: list[dict[str, float]], points: list[np.ndarray]) -> float:
    """L* inside every group's fitted frontier over its measured compute range, if they overlap
    (the middle of the overlap, geometric); else the middle of the baseline's range (index 0)."""
    ranges = []
    for p, pts in zip(params, points, strict=True):
        lo_c, hi_c = float(np.min(pts[:, 0])), float(np.max(pts[:, 0]))
        ranges.append((_predict(p, hi_c), _predict(p, lo_c)))
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if lo >= hi:
        lo, hi = ranges[0]
    return float(math.sqrt(lo * hi))


def _predict(p: dict[str, float], C: float) -> float:
    return p["E"] + p["A_C"] * C ** -p["gamma"]


# ----------------------------------------------------------------------------- main entry
def compare(df: pd.DataFrame, opts: CompareOptions | None = None) -> Comparison:
    """Fit and compare every group's L(C) (and L(N, D)) with bootstrap intervals."""
    opts = opts or CompareOptions()
    groups = group_runs(df, opts)
    names = [g.name for g in groups]
    baseline = _baseline(names, opts)
    groups.sort(key=lambda g: (g.name != baseline, names.index(g.name)))  # baseline first
    names = [g.name for g in groups]
    for g in groups:
        if opts.offset == "free" and int(g.budget.max()) + 1 < MIN_BUDGETS + 1:
            raise DataError(
                f"group {opts.by}={g.name}: offset=free fits 3 constants per group and needs "
                f"at least {MIN_BUDGETS + 1} compute budgets; use offset=shared or zero"
            )
    fit_opts = FitOptions(delta=opts.delta)
    points = []
    for g in groups:
        try:
            points.append(frontier_points(g, opts.frontier))
        except FitError as e:
            raise FitError(f"group {opts.by}={g.name}: {e}") from None
    theta, problem, flags = fit_frontiers(points, opts.offset, fit_opts)
    V = len(groups)
    params = _unpack(theta, V, opts.offset)
    target = opts.target_loss or default_target_loss(params, points)

    samples: list[dict[str, np.ndarray]] = [{} for _ in groups]
    diagnostics: dict[str, Any] = {"frontier_fit_flags": flags}
    if opts.bootstrap:
        rng = np.random.default_rng(opts.seed)
        draws, redraws = [], 0
        for _ in range(opts.bootstrap):
            one = []
            for g in groups:
                pts, r = _resample(g, opts.frontier, rng)
                one.append(pts)
                redraws += r
            draws.append(one)
        theta_B = _bootstrap_fits(problem, theta, draws, fit_opts)
        ok = np.all(np.isfinite(theta_B), axis=1)
        per = [_unpack(t, V, opts.offset) if k else None for t, k in zip(theta_B, ok, strict=True)]
        for i in range(V):
            samples[i] = {
                key: np.array([p[i][key] if p else np.nan for p in per])
                for key in ("E", "A_C", "gamma")
            }
        budgets = sum(int(g.budget.max()) + 1 for g in groups) * opts.bootstrap
        diagnostics["bootstrap"] = {
            "resamples": opts.bootstrap,
            "finite_fits": int(ok.sum()),
            "budget_redraws": redraws,
            "budget_redraw_fraction": redraws / max(budgets, 1),
            "resampling": "runs redrawn with replacement within each budget of each group",
        }
        if redraws / max(budgets, 1) > 0.1:
            flags.append(
                f"{redraws / budgets:.0%} of resampled budgets had no IsoFLOP minimum and were "
                "redrawn (intervals are conditional on a minimum)"
            )
    rows = _rows(groups, names, params, samples, points, target, opts)
    nd = {g.name: _nd_fit(g, opts) for g in groups} if opts.nd else {}
    return Comparison(
        groups=names,
        baseline=baseline,
        target_loss=float(target),
        rows=rows,
        frontiers={
            g.name: [{"C": float(c), "L": float(v)} for c, v in pts]
            for g, pts in zip(groups, points, strict=True)
        },
        params={n: p for n, p in zip(names, params, strict=True)},
        samples={
            n: {k: [float(x) for x in v] for k, v in s.items()}
            for n, s in zip(names, samples, strict=True)
        },
        nd=nd,
        flags=flags,
        options={**asdict(opts), "baseline": baseline},
        diagnostics=diagnostics,
    )


def _baseline(names: list[str], opts: CompareOptions) -> str:
    if opts.baseline is not None:
        if opts.baseline not in names:
            raise ConfigError("baseline", opts.baseline, ", ".join(names))
        return opts.baseline
    for candidate in ("gpt2", "causal"):
        if candidate in names:
            return candidate
    return names[0]


def _interval(values: np.ndarray, level: float) -> dict[str, float] | None:
    with np.errstate(over="ignore", invalid="ignore"):  # a few resamples have huge A_C or k
        s = summarize({"x": values}, level).get("x")
    return None if s is None else s


def _rows(groups, names, params, samples, points, target, opts) -> list[dict[str, Any]]:
    base = params[0]
    c_base = float(compute_at(base, target))
    rows = []
    for i, (g, p, pts) in enumerate(zip(groups, params, points, strict=True)):
        c_g = float(compute_at(p, target))
        row: dict[str, Any] = {
            "group": g.name,
            "runs": int(g.C.size),
            "budgets": int(g.budget.max()) + 1,
            "C_range": [float(np.min(pts[:, 0])), float(np.max(pts[:, 0]))],
            "E": p["E"],
            "A_C": p["A_C"],
            "gamma": p["gamma"],
            "C_at_target": c_g,
            "multiplier": c_g / c_base,
            "extrapolated": not (np.min(pts[:, 0]) <= c_g <= np.max(pts[:, 0])),
        }
        s = samples[i]
        if s:
            row["gamma_interval"] = _interval(s["gamma"], opts.level)
            if i:
                row["delta_gamma"] = p["gamma"] - base["gamma"]
                d = _interval(s["gamma"] - samples[0]["gamma"], opts.level)
                row["delta_gamma_interval"] = d
                row["exponent_differs"] = bool(d is not None and (d["lo"] > 0 or d["hi"] < 0))
                gi, bi = row["gamma_interval"], _interval(samples[0]["gamma"], opts.level)
                row["intervals_overlap"] = bool(
                    gi is None or bi is None or (gi["lo"] <= bi["hi"] and bi["lo"] <= gi["hi"])
                )
                ratio = compute_at(s, target) / compute_at(samples[0], target)
                finite = np.isfinite(ratio)
                row["multiplier_interval"] = _interval(np.log(ratio[finite]), opts.level)
                if row["multiplier_interval"]:
                    mi = row["multiplier_interval"]
                    row["multiplier_interval"] = {
                        "lo": math.exp(mi["lo"]),
                        "hi": math.exp(mi["hi"]),
                        "level": mi["level"],
                        "n": mi["n"],
                    }
                row["multiplier_unreachable_fraction"] = float(np.mean(~finite))
        rows.append(row)
    return rows


def _nd_fit(g: GroupRuns, opts: CompareOptions) -> dict[str, Any]:
    """Chinchilla approach 3 on the group's runs; `identified` per ND_MAX_WIDTH."""
    data = LawData(loss=g.loss, N=g.N, D=g.D, C=g.C, columns={"C": opts.flops})
    try:
        res = approach3(data, bootstrap=opts.nd_bootstrap, seed=opts.seed, level=opts.level)
    except FitError as e:
        return {"identified": False, "reason": str(e)}
    widths = {
        k: res.intervals[k]["hi"] - res.intervals[k]["lo"]
        for k in ("alpha", "beta")
        if k in res.intervals
    }
    identified = (
        res.converged and len(widths) == 2 and all(w < ND_MAX_WIDTH for w in widths.values())
    )
    reason = ""
    if not identified:
        if not res.converged:
            reason = "fit did not converge: " + "; ".join(res.flags)
        elif len(widths) < 2:
            reason = "no bootstrap intervals (nd_bootstrap = 0)"
        else:
            reason = (
                f"{opts.level:.0%} intervals of alpha/beta are {widths['alpha']:.2g}/"
                f"{widths['beta']:.2g} wide (> {ND_MAX_WIDTH}): the design does not separate "
                "N from D"
            )
    a, b = res.params["alpha"], res.params["beta"]
    return {
        "identified": bool(identified),
        "reason": reason,
        "params": dict(res.params),
        "intervals": {k: dict(v) for k, v in res.intervals.items() if k in res.params},
        "gamma_from_nd": a * b / (a + b),  # the compute-optimal loss exponent of L(N, D)
        "converged": bool(res.converged),
    }


# ----------------------------------------------------------------------------- output
def _fmt_interval(iv: dict | None, fmt: str = "{:.3f}") -> str:
    if not iv:
        return ""
    return f"[{fmt.format(iv['lo'])}, {fmt.format(iv['hi'])}]"


def comparison_markdown(c: Comparison) -> str:
    """A readable table of exponents, multipliers and L(N, D), with a legend."""
    o = c.options
    level = f"{o['level']:.0%}"
    lines = [
        f"Frontier: {_frontier_words(o['frontier'])}; L(C) = E + A_C/C^gamma fitted to it "
        f"(E {_offset_words(o['offset'])}); C = {o['flops']}, loss = {o['loss']}. "
        f"Intervals: {level} bootstrap percentiles over {o['bootstrap']} resamples of runs. "
        f"Multiplier k: the group reaches L* = {c.target_loss:.4g} with k x the compute of "
        f"{c.baseline}.",
        "",
        f"| {o['by']} | runs | gamma [{level}] | gamma - gamma({c.baseline}) | exponent differs? "
        f"| k at L* [{level}] | E | L(N, D): alpha, beta |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in c.rows:
        name = r["group"] + (" (baseline)" if r["group"] == c.baseline else "")
        gamma = f"{r['gamma']:.3f} {_fmt_interval(r.get('gamma_interval'))}"
        if r["group"] == c.baseline:
            delta, differs, k = "", "", "1"
        else:
            delta = f"{r['delta_gamma']:+.3f} {_fmt_interval(r.get('delta_gamma_interval'))}"
            differs = "yes" if r.get("exponent_differs") else "no"
            k = f"{r['multiplier']:.3g} {_fmt_interval(r.get('multiplier_interval'), '{:.3g}')}"
            if r["extrapolated"]:
                k += " (extrapolated)"
        nd = c.nd.get(r["group"])
        if not nd:
            nd_text = "not fitted"
        elif nd["identified"]:
            p = nd["params"]
            nd_text = f"{p['alpha']:.2f}, {p['beta']:.2f}"
        else:
            nd_text = "not identified"
        lines.append(
            f"| {name} | {r['runs']} | {gamma} | {delta} | {differs} | {k} | {r['E']:.3g} "
            f"| {nd_text} |"
        )
    reasons = [f"- {g}: {v['reason']}" for g, v in c.nd.items() if not v["identified"]]
    if reasons:
        lines += ["", "L(N, D) not identified:", *reasons]
    if c.flags:
        lines += ["", "Flags:", *[f"- {f}" for f in c.flags]]
    return "\n".join(lines) + "\n"


def _frontier_words(frontier: str) -> str:
    return {
        "isoflop": "IsoFLOP minima (vertex of a parabola of loss in log10 N per budget, "
        "chinchilla approach 2)",
        "envelope": "minimum-loss run per budget (chinchilla approach 1)",
    }[frontier]


def _offset_words(offset: str) -> str:
    return {
        "shared": "one constant shared by all groups",
        "free": "one per group",
        "zero": "fixed at 0",
    }[offset]


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
