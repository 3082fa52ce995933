"""Bootstrap over rows, vectorized: all resamples (and a few starts each) in one batched L-BFGS.

A resample is a vector of multinomial counts used as weights on the summed Huber loss, so every
resample shares the data arrays and compiled program. Each resample starts from the full fit's
best point and from the next-best distinct grid starts.
"""

from __future__ import annotations

import numpy as np

from scaling.laws.fitting import FitOptions, Problem, RawFit, constraints, solve_batch
from scaling.laws.forms import Form


def resample_weights(n: int, B: int, seed: int) -> np.ndarray:
    """(B, n) multinomial counts: row b says how often each point appears in resample b."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(np.float64)


def _extra_starts(full: RawFit, starts_SP: np.ndarray, k: int) -> np.ndarray:
    """The grid starts whose runs ended best, skipping ones that ended at the same point."""
    order = np.argsort(np.where(np.isfinite(full.objective_all), full.objective_all, np.inf))
    picked: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    for i in order:
        end = full.theta_all[i]
        if any(np.max(np.abs(end - e)) < 1e-2 for e in ends) and len(picked) < k // 2:
            # first half: distinct end points; the rest: the best starts regardless
            continue
        picked.append(starts_SP[i])
        ends.append(end)
        if len(picked) >= k:
            break
    return np.array(picked).reshape(-1, starts_SP.shape[1])


def bootstrap_raw(
    form: Form,
    logX_nI: np.ndarray,
    logy_n: np.ndarray,
    full: RawFit,
    starts_SP: np.ndarray,
    *,
    B: int = 1000,
    seed: int = 0,
    extra_starts: int = 4,
    fixed: dict[str, float] | None = None,
    bounds: dict | None = None,
    options: FitOptions | None = None,
) -> dict:
    """Refit `B` resamples; return raw parameters (B, P), objectives and a converged mask."""
    options = options or FitOptions()
    n = logy_n.shape[0]
    cons = constraints(form, fixed, bounds)
    problem = Problem(form, logX_nI, logy_n, cons, options.delta)
    starts = np.vstack([full.theta[None, :], _extra_starts(full, starts_SP, extra_starts)])
    K = starts.shape[0]
    w_BN = resample_weights(n, B, seed)
    w_all = np.repeat(w_BN, K, axis=0)  # (B*K, n)
    starts_all = np.tile(starts, (B, 1))
    theta, f, status, _ = solve_batch(problem, starts_all, w_all, options)
    f = np.where(np.isfinite(f), f, np.inf).reshape(B, K)
    best = np.argmin(f, axis=1)
    theta = theta.reshape(B, K, -1)[np.arange(B), best]
    status = status.reshape(B, K)[np.arange(B), best]
    return {
        "theta": theta,
        "objective": f[np.arange(B), best],
        "converged": np.isin(status, (0, 1)),
        "starts_per_resample": K,
    }


def summarize(samples: dict[str, np.ndarray], level: float = 0.95) -> dict[str, dict[str, float]]:
    """Standard error and percentile interval of each quantity over the bootstrap samples."""
    lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
    out = {}
    for name, vals in samples.items():
        v = np.asarray(vals, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2:
            continue
        out[name] = {
            "se": float(np.std(v, ddof=1)),
            "lo": float(np.percentile(v, lo_q)),
            "hi": float(np.percentile(v, hi_q)),
            "level": level,
            "n": int(v.size),
        }
    return out
