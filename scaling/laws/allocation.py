"""Compute-optimal allocation N_opt(C), D_opt(C) under the data's FLOP convention.

For L = E + A/N^α + B/D^β with C = k·N·D (k = 6 under Kaplan's and Hoffmann's 6ND rule, or
whatever the data's convention implies), minimising L at fixed C gives
N_opt = G (C/k)^a, D_opt = G^-1 (C/k)^b, a = β/(α+β), b = α/(α+β), G = (αA/(βB))^(1/(α+β)).
"""

from __future__ import annotations

import numpy as np

from scaling.errors import FitError

DEFAULT_FLOPS_FACTOR = 6.0


def flops_factor(N: np.ndarray | None, D: np.ndarray | None, C: np.ndarray | None) -> float:
    """k in C = k·N·D, the median over rows (6 when the table has no FLOP column)."""
    if C is None or N is None or D is None:
        return DEFAULT_FLOPS_FACTOR
    return float(np.exp(np.median(np.log(C) - np.log(N) - np.log(D))))


def chinchilla_allocation(params: dict[str, float], k: float = DEFAULT_FLOPS_FACTOR) -> dict:
    """Exponents a, b and coefficients of N_opt = G (C/k)^a, D_opt = (C/k)^b / G."""
    alpha, beta, A, B = params["alpha"], params["beta"], params["A"], params["B"]
    if not (alpha > 0 and beta > 0):
        raise FitError(f"allocation needs alpha > 0 and beta > 0; got alpha={alpha}, beta={beta}")
    s = alpha + beta
    G = (alpha * A / (beta * B)) ** (1.0 / s)
    return {"a": beta / s, "b": alpha / s, "G": G, "flops_factor": k}


def optimal_n(params: dict[str, float], C, k: float = DEFAULT_FLOPS_FACTOR) -> np.ndarray:
    al = chinchilla_allocation(params, k)
    return al["G"] * (np.asarray(C, dtype=np.float64) / k) ** al["a"]


def optimal_d(params: dict[str, float], C, k: float = DEFAULT_FLOPS_FACTOR) -> np.ndarray:
    al = chinchilla_allocation(params, k)
    return (np.asarray(C, dtype=np.float64) / k) ** al["b"] / al["G"]


def optimal_n_batch(p: dict[str, np.ndarray], C: float, k: float) -> np.ndarray:
    """N_opt at one budget for arrays of parameters (bootstrap samples). A sample with a
    negative exponent (or overflowing scales) has no allocation: it gives NaN, which the
    intervals leave out, without a RuntimeWarning."""
    s = p["alpha"] + p["beta"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / s)
        return G * (C / k) ** (p["beta"] / s)


def optimal_d_batch(p: dict[str, np.ndarray], C: float, k: float) -> np.ndarray:
    return (C / k) / optimal_n_batch(p, C, k)
