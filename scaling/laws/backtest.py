"""Backtests: hold out the largest budgets or sizes (or a split column), fit the rest, score.

The score is the RMSE of log-loss on held-out points and the share of them inside the predicted
interval (bootstrap percentiles of the prediction, widened by the in-sample residual spread).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from scaling.errors import ConfigError, FitError
from scaling.laws.fitting import FitOptions, Problem, constraints, solve_batch
from scaling.laws.forms import Form, get_form
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData

HOLDOUT_HELP = (
    "largest:K[:COL] (the K largest distinct values of COL, default the law's main input), "
    "COL>=VALUE / COL>VALUE / COL<=VALUE / COL<VALUE (rows held out), or split:COL "
    "(rows where COL is 0 are held out)"
)
_COMPARE = re.compile(r"^\s*([^<>=]+?)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


def _column(data: LawData, name: str) -> np.ndarray:
    if name in ("N", "D", "C", "loss"):
        return data.get(name)
    if data.frame is None or name not in data.frame.columns:
        available = [] if data.frame is None else list(map(str, data.frame.columns))
        raise ConfigError("--holdout column", name, "N, D, C, loss, " + ", ".join(available))
    return pd.to_numeric(data.frame[name], errors="coerce").to_numpy(dtype=np.float64)


def holdout_mask(data: LawData, spec: str, primary: str) -> np.ndarray:
    """Boolean mask of held-out rows for a SPEC (see HOLDOUT_HELP)."""
    spec = spec.strip()
    if spec.startswith("largest:"):
        parts = spec.split(":")
        try:
            k = int(parts[1])
        except (IndexError, ValueError):
            raise ConfigError("--holdout", spec, HOLDOUT_HELP) from None
        col = _column(data, parts[2] if len(parts) > 2 else primary)
        values = np.unique(col)
        if not 0 < k < values.size:
            raise ConfigError("--holdout K", k, f"1 to {values.size - 1} (distinct values)")
        mask = col >= values[-k]
    elif spec.startswith("split:"):
        mask = _column(data, spec[6:]) == 0
    elif m := _COMPARE.match(spec):
        col, op, value = _column(data, m.group(1)), m.group(2), float(m.group(3))
        mask = {">=": col >= value, ">": col > value, "<=": col <= value, "<": col < value}[op]
    else:
        raise ConfigError("--holdout", spec, HOLDOUT_HELP)
    if mask.all() or not mask.any():
        raise ConfigError("--holdout", spec, "a split leaving points on both sides")
    return mask


def score(
    form: Form, fit: FitResult, test: LawData, residual_rmse: float, level: float = 0.95
) -> dict:
    """RMSE of log-loss on held-out points and coverage of the predicted interval."""
    inputs = {r: test.get(r) for r in form.inputs}
    logpred = np.log(form.predict(fit.params, **inputs))
    err = logpred - np.log(test.loss)
    out = {
        "n_test": len(test),
        "rmse_log": float(np.sqrt(np.mean(err**2))),
        "mean_error_log": float(np.mean(err)),
        "coverage": None,
    }
    samples = fit.diagnostics.get("bootstrap", {}).get("samples")
    if samples:
        names = [p.natural for p in form.params]
        draws = np.array([samples[n] for n in names]).T
        preds = np.array(
            [np.log(form.predict(dict(zip(names, row, strict=True)), **inputs)) for row in draws]
        )
        q = 50 * (1 - level), 50 * (1 + level)
        lo, hi = np.percentile(preds, q, axis=0)
        z = 1.959964 if level == 0.95 else float(np.sqrt(2) * _erfinv(level))
        half = np.hypot((hi - lo) / 2, z * residual_rmse)
        mid = (hi + lo) / 2
        inside = np.abs(np.log(test.loss) - mid) <= half
        out.update(coverage=float(np.mean(inside)), level=level)
    return out


def _erfinv(p: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(p))


def backtest(data: LawData, spec: str, primary: str, fit_fn) -> FitResult:
    """Fit `fit_fn(train) -> FitResult` on the kept rows and score it on the held-out rows."""
    mask = holdout_mask(data, spec, primary)
    train, test = data.subset(~mask), data.subset(mask)
    result = fit_fn(train)
    form = get_form(result.law)
    scored = score(form, result, test, result.diagnostics.get("rmse_log", 0.0))
    result.backtest = {"holdout": spec, "n_train": len(train), **scored}
    return result


# ----------------------------------------------------------- many learning curves at once

CURVE_ESTIMATORS = {
    "power_law_offset": {},  # L = E + B x^-beta
    "power_law": {"E": 0.0},  # L = B x^-beta (E fixed at 0)
}


def _curve_starts(form: Form, fixed: dict) -> np.ndarray:
    grid = {
        "e": np.array([-2.0, -0.7, 0.0]),
        "b": np.array([0.0, 2.5, 5.0, 10.0]),
        "beta": np.array([0.1, 0.3, 0.7]),
    }
    pts = np.array(list(itertools.product(*(grid[p.raw] for p in form.params))))
    for i, v in constraints(form, fixed).fixed.items():
        pts[:, i] = v
    return np.unique(pts, axis=0)


def backtest_curves(
    df: pd.DataFrame,
    *,
    curve_cols: Sequence[str],
    x_col: str,
    loss_col: str,
    split_col: str,
    estimators: dict[str, dict] | None = None,
    options: FitOptions | None = None,
) -> dict:
    """Fit each learning curve's training rows with each estimator; RMSE of log-loss held out.

    All curves and starts run as one batch: a start's weights select its curve's training rows.
    `estimators` maps a name to fixed constants of L(D) = E + B/D^beta ({} = all free).
    """
    from scaling.laws.forms import POWER_D

    estimators = estimators or CURVE_ESTIMATORS
    options = options or FitOptions(max_iter=400)
    for c in (*curve_cols, x_col, loss_col, split_col):
        if c not in df.columns:
            raise ConfigError("column", c, ", ".join(map(str, df.columns)))
    df = df.reset_index(drop=True)
    x = df[x_col].to_numpy(dtype=np.float64)
    y = df[loss_col].to_numpy(dtype=np.float64)
    if not (np.all(np.isfinite(x) & (x > 0)) and np.all(np.isfinite(y) & (y > 0))):
        raise FitError(f"{x_col} and {loss_col} must be finite and positive")
    train = df[split_col].to_numpy() != 0
    curves = df.groupby(list(curve_cols), sort=True).indices
    logX, logy = np.log(x)[:, None], np.log(y)
    out: dict = {"curves": len(curves), "estimators": {}}
    for name, fixed in estimators.items():
        cons = constraints(POWER_D, fixed)
        problem = Problem(POWER_D, logX, logy, cons, options.delta)
        starts = _curve_starts(POWER_D, fixed)
        n_free = len(problem.free)
        keys = [
            key
            for key, idx in curves.items()
            if train[idx].sum() > n_free and (~train[idx]).sum() > 0
        ]
        width = max(int(train[curves[k]].sum()) for k in keys)
        W, X, Y = (np.zeros((len(keys), width)) for _ in range(3))
        for j, key in enumerate(keys):
            rows = curves[key][train[curves[key]]]
            W[j, : rows.size], X[j, : rows.size], Y[j, : rows.size] = 1.0, logX[rows, 0], logy[rows]
        K = starts.shape[0]
        theta, f, status, _ = solve_batch(
            problem,
            np.tile(starts, (len(keys), 1)),
            np.repeat(W, K, axis=0),
            options,
            lane_data=(np.repeat(X, K, axis=0)[:, :, None], np.repeat(Y, K, axis=0)),
        )
        f = np.where(np.isfinite(f), f, np.inf).reshape(len(keys), K)
        best = np.argmin(f, axis=1)
        theta = theta.reshape(len(keys), K, -1)[np.arange(len(keys)), best]
        status = status.reshape(len(keys), K)[np.arange(len(keys)), best]
        errs, per_curve = [], []
        for j, key in enumerate(keys):
            idx = curves[key]
            test = idx[~train[idx]]
            params = POWER_D.natural(theta[j])
            pred = POWER_D.predict(params, D=x[test])
            e = np.log(pred) - logy[test]
            errs.append(e)
            per_curve.append(
                {
                    "curve": [str(k) for k in np.atleast_1d(key)],
                    "n_train": int(W[j].sum()),
                    "n_test": int(test.size),
                    "rmse_log": float(np.sqrt(np.mean(e**2))),
                    "converged": bool(status[j] in (0, 1)),
                    "params": params,
                }
            )
        all_err = np.concatenate(errs)
        out["estimators"][name] = {
            "fixed": fixed,
            "rmse_log": float(np.sqrt(np.mean(all_err**2))),
            "mean_curve_rmse_log": float(np.mean([c["rmse_log"] for c in per_curve])),
            "n_test": int(all_err.size),
            "curves_fitted": len(per_curve),
            "converged_fraction": float(np.mean([c["converged"] for c in per_curve])),
            "per_curve": per_curve,
        }
    return out
