"""Hoffmann et al.'s three approaches to compute-optimal allocation.

1. `approach1`: the minimum-loss envelope over compute budgets, then N_opt ∝ C^a, D_opt ∝ C^b.
2. `approach2`: IsoFLOP profiles: per budget, a parabola of loss in log N on a window around the
   minimum (interior minimum required; warnings for wide or off-centre windows), then power laws.
3. `approach3`: the parametric fit L = E + A/N^α + B/D^β (see `scaling.laws.parametric`).
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ConfigError, FitError
from scaling.laws.forms import CHINCHILLA
from scaling.laws.parametric import fit_parametric
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData

BUDGET_GAP_DECADES = 0.05  # budgets farther apart than this (in log10 C) are distinct
WIDE_WINDOW_DECADES = 1.5
MIN_BUDGET_POINTS = 3  # for a parabola
MIN_BUDGET_RUNS = 5  # budgets with fewer runs are skipped (and listed) by approach 2


def approach3(data: LawData, **kwargs) -> FitResult:
    """Approach 3: parametric fit of the Chinchilla form (Huber, 4,500 starts by default)."""
    kwargs.setdefault("method", "chinchilla approach 3 (parametric L = E + A/N^alpha + B/D^beta)")
    return fit_parametric(CHINCHILLA, data, **kwargs)


def group_budgets(C: np.ndarray, gap_decades: float = BUDGET_GAP_DECADES) -> np.ndarray:
    """Label each row with its compute budget: sorted log10 C split at gaps > `gap_decades`."""
    logc = np.log10(C)
    order = np.argsort(logc)
    labels = np.empty(len(C), dtype=np.int64)
    group = 0
    for j, i in enumerate(order):
        if j and logc[i] - logc[order[j - 1]] > gap_decades:
            group += 1
        labels[i] = group
    return labels


def _power_fit(logc: np.ndarray, logy: np.ndarray) -> dict[str, float]:
    """OLS of log y on log C: slope, intercept and the slope's standard error."""
    X = np.stack([logc, np.ones_like(logc)], axis=1)
    coef, *_ = np.linalg.lstsq(X, logy, rcond=None)
    out = {"slope": float(coef[0]), "intercept": float(coef[1]), "slope_se": float("nan")}
    if len(logc) > 2:
        resid = logy - X @ coef
        s2 = float(resid @ resid) / (len(logc) - 2)
        cov = s2 * np.linalg.inv(X.T @ X)
        out["slope_se"] = float(np.sqrt(cov[0, 0]))
    return out


def _allocation_result(
    law: str, method: str, data: LawData, points: list[dict], flags: list[str], extra: dict
) -> FitResult:
    if len(points) < 2:
        raise FitError(f"{law}: {len(points)} usable compute budget(s); need at least 2")
    C = np.array([p["C"] for p in points])
    n_fit = _power_fit(np.log(C), np.log([p["N_opt"] for p in points]))
    d_fit = _power_fit(np.log(C), np.log([p["D_opt"] for p in points]))
    params = {
        "a": n_fit["slope"],
        "b": d_fit["slope"],
        "G_N": float(np.exp(n_fit["intercept"])),
        "G_D": float(np.exp(d_fit["intercept"])),
    }
    intervals = {}
    for name, f in (("a", n_fit), ("b", d_fit)):
        if np.isfinite(f["slope_se"]):
            se = f["slope_se"]
            intervals[name] = {"se": se, "lo": f["slope"] - 1.96 * se, "hi": f["slope"] + 1.96 * se}
            intervals[name]["level"] = 0.95
    return FitResult(
        law=law,
        method=method,
        params=params,
        converged=not flags,
        flags=flags,
        intervals=intervals,
        allocation={"a": params["a"], "b": params["b"]},
        diagnostics={"budgets": points, **extra},
        columns=dict(data.columns),
        convention=data.convention,
        n_points=len(data),
        data_hash=data.hash(),
        formula="N_opt = G_N C^a, D_opt = G_D C^b",
    )


def approach1(data: LawData, *, gap_decades: float = BUDGET_GAP_DECADES) -> FitResult:
    """Approach 1 on final losses: per budget the lowest-loss run; then power laws in C."""
    C, N, D, L = data.get("C"), data.get("N"), data.get("D"), data.loss
    labels = group_budgets(C, gap_decades)
    points = []
    for g in np.unique(labels):
        idx = np.nonzero(labels == g)[0]
        i = idx[np.argmin(L[idx])]
        points.append(
            {
                "C": float(C[i]),
                "N_opt": float(N[i]),
                "D_opt": float(D[i]),
                "L_min": float(L[i]),
                "runs": len(idx),
            }
        )
    return _allocation_result(
        "envelope",
        "chinchilla approach 1: minimum-loss run per compute budget, OLS of log N, log D on log C",
        data,
        points,
        [],
        {"gap_decades": gap_decades},
    )


def isoflop_minimum(
    logn: np.ndarray, loss: np.ndarray, logd: np.ndarray, window: float | None
) -> tuple[dict, list[str]]:
    """Fit loss = p2 x² + p1 x + p0 (x = log10 N) near the minimum; the vertex and warnings."""
    x = logn / np.log(10)
    i_min = int(np.argmin(loss))
    sel = np.ones_like(x, dtype=bool) if window is None else np.abs(x - x[i_min]) <= window / 2
    xs, ys = x[sel], loss[sel]
    if xs.size < MIN_BUDGET_POINTS:
        raise FitError(
            f"IsoFLOP window holds {xs.size} point(s) around log10 N = {x[i_min]:.3g}; "
            f"need at least {MIN_BUDGET_POINTS} (widen --window)"
        )
    p2, p1, p0 = np.polyfit(xs, ys, 2)
    lo, hi = float(xs.min()), float(xs.max())
    vertex = -p1 / (2 * p2) if p2 != 0 else np.inf
    if not (p2 > 0 and lo < vertex < hi):
        raise FitError(
            f"IsoFLOP parabola has no interior minimum in log10 N window [{lo:.3g}, {hi:.3g}] "
            f"(curvature {p2:.3g}, vertex {vertex:.3g}); allowed: a window around a minimum"
        )
    warnings = []
    if hi - lo > WIDE_WINDOW_DECADES:
        warnings.append(f"window spans {hi - lo:.2f} decades of N (> {WIDE_WINDOW_DECADES})")
    left, right = int(np.sum(xs < vertex)), int(np.sum(xs > vertex))
    rel = (vertex - lo) / (hi - lo)
    if min(left, right) < 2 or not 0.2 <= rel <= 0.8:
        warnings.append(
            f"window off-centre: {left} point(s) left and {right} right of the minimum "
            f"(at {rel:.0%} of the window)"
        )
    coef = np.polyfit(xs, logd[sel], 1)
    logd_opt = float(np.polyval(coef, vertex))
    out = {
        "N_opt": float(10**vertex),
        "D_opt": float(np.exp(logd_opt)),
        "L_min": float(np.polyval([p2, p1, p0], vertex)),
        "parabola": [float(p2), float(p1), float(p0)],
        "window_log10N": [lo, hi],
        "points": int(xs.size),
    }
    return out, warnings


def approach2(
    data: LawData,
    *,
    window: float | None = None,
    gap_decades: float = BUDGET_GAP_DECADES,
    min_runs: int = MIN_BUDGET_RUNS,
) -> FitResult:
    """Approach 2: IsoFLOP parabolas per budget (window = width in decades of N, or all points)."""
    if window is not None and not window > 0:
        raise ConfigError("window", window, "a positive width in decades of N")
    C, N, D, L = data.get("C"), data.get("N"), data.get("D"), data.loss
    labels = group_budgets(C, gap_decades)
    points, flags, skipped = [], [], []
    for g in np.unique(labels):
        idx = np.nonzero(labels == g)[0]
        c = float(np.exp(np.mean(np.log(C[idx]))))
        if idx.size < min_runs:
            skipped.append({"C": c, "runs": int(idx.size)})
            continue
        try:
            m, warns = isoflop_minimum(np.log(N[idx]), L[idx], np.log(D[idx]), window)
        except FitError as e:
            raise FitError(f"budget C = {c:.4g}: {e}") from None
        points.append({"C": c, "runs": int(idx.size), **m, "warnings": warns})
        flags += [f"budget C = {c:.3g}: {w}" for w in warns]
    return _allocation_result(
        "isoflop",
        "chinchilla approach 2: IsoFLOP parabolas of loss in log10 N per budget, OLS of log "
        "N_opt, log D_opt on log C",
        data,
        points,
        flags,
        {"window_decades": window, "gap_decades": gap_decades, "skipped_budgets": skipped},
    )


def budget_minimum(data: LawData, idx: np.ndarray) -> tuple[dict | None, str]:
    """The IsoFLOP minimum of the runs `idx` (one budget, all points), or None and why not."""
    try:
        m, _ = isoflop_minimum(np.log(data.N[idx]), data.loss[idx], np.log(data.D[idx]), None)
        return m, ""
    except FitError as e:
        return None, str(e)


def approach2_bootstrap(
    data: LawData, groups: list[np.ndarray], B: int, seed: int
) -> dict[str, np.ndarray]:
    """Approach 2's uncertainty: resample runs within each budget (`groups`: row indices per
    budget), refit each parabola and the power laws of N_opt and D_opt over budgets.

    Returns arrays of length B: `a`, `b` (exponents), `logG_N`, `logG_D` (log intercepts);
    NaN where a resample has fewer than 3 distinct sizes or no interior minimum at some budget.
    """
    rng = np.random.default_rng(seed)
    out = {k: np.full(B, np.nan) for k in ("a", "b", "logG_N", "logG_D")}
    logc = np.array([np.mean(np.log(data.C[idx])) for idx in groups])
    for i in range(B):
        logn, logd = [], []
        for idx in groups:
            pick = rng.choice(idx, size=idx.size, replace=True)
            if np.unique(data.N[pick]).size < 3:
                break
            m, _ = budget_minimum(data, pick)
            if m is None:
                break
            logn.append(np.log(m["N_opt"]))
            logd.append(np.log(m["D_opt"]))
        else:
            a, log_gn = np.polyfit(logc, logn, 1)
            b, log_gd = np.polyfit(logc, logd, 1)
            out["a"][i], out["b"][i], out["logG_N"][i], out["logG_D"][i] = a, b, log_gn, log_gd
    return out
