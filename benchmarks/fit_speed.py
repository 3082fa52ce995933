"""Speed of the approach-3 fit: batched JAX L-BFGS vs a plain loop of scipy L-BFGS-B.

Times, in one run, on Epoch's 240 rows: (1) the 4,500-start JAX fit three ways: in a new process
with an empty compilation cache (compiles everything), in a new process with the persistent
compilation cache filled (what a user's second `scaling fit` pays), and again in a warm process;
(2) scipy.optimize.minimize(method="L-BFGS-B") from each of the same 4,500 starts in turn, as
Epoch's notebook does (numerical gradient, summed Huber objective) — the full loop, ~700 s on a
2-core machine; `--scipy-starts K` runs K evenly spread starts and extrapolates (stated in the
output); (3) the 1,000-resample bootstrap. Prints the ratios.

    .venv/bin/python benchmarks/fit_speed.py [--scipy-starts 4500] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from scaling.laws.forms import CHINCHILLA
from scaling.laws.parametric import fit_parametric
from scaling.laws.published import EPOCH_COLUMNS, epoch_rows
from scaling.laws.tables import select

DATA = Path(__file__).resolve().parents[1] / "analysis/data/chinchilla-epoch/svg_extracted_data.csv"


def scipy_objective(theta, logN, logD, logL, delta):
    e, a, b, alpha, beta = theta
    pred = logsumexp([a - alpha * logN, b - beta * logD, np.full_like(logN, e)], axis=0)
    return float(np.sum(huber(delta, pred - logL)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scipy-starts", type=int, default=4500, help="starts for the scipy loop")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    data = select(epoch_rows(pd.read_csv(DATA)), ("N", "D"), **EPOCH_COLUMNS)
    logN, logD, logL = np.log(data.N), np.log(data.D), np.log(data.loss)
    grid = CHINCHILLA.start_grid(np.stack([logN, logD], 1), logL)

    with tempfile.TemporaryDirectory() as cc:
        empty = first_fit_in_new_process(cc)
        cached = first_fit_in_new_process(cc)
    fit_parametric(CHINCHILLA, data)
    t = time.perf_counter()
    fit = fit_parametric(CHINCHILLA, data)
    warm = time.perf_counter() - t
    print(
        f"JAX batched L-BFGS, {len(grid)} starts: {warm:.2f} s warm; first fit in a new process "
        f"{empty:.2f} s with an empty compilation cache, {cached:.2f} s with it filled; "
        f"objective {fit.objective:.8e}, converged={fit.converged}"
    )

    K = min(max(args.scipy_starts, 1), len(grid))
    pick = np.linspace(0, len(grid) - 1, K).round().astype(int)
    best = np.inf
    t = time.perf_counter()
    for x0 in grid[pick]:
        r = minimize(scipy_objective, x0, args=(logN, logD, logL, 1e-3), method="L-BFGS-B")
        best = min(best, float(r.fun))
    loop = time.perf_counter() - t
    full = loop * len(grid) / K
    how = "measured" if len(grid) == K else f"extrapolated from {K} evenly spread starts"
    print(
        f"scipy L-BFGS-B loop: {loop:.1f} s for {K} starts -> {full:.0f} s for {len(grid)} "
        f"({how}); best objective {best:.8e}"
    )
    print(
        f"ratio scipy loop / JAX fit: {full / warm:.0f}x warm, {full / cached:.0f}x new process "
        f"(compilation cached), {full / empty:.0f}x new process compiling (target >= 50x)"
    )

    if args.bootstrap:
        t = time.perf_counter()
        b = fit_parametric(CHINCHILLA, data, bootstrap=args.bootstrap)
        total = time.perf_counter() - t
        se = {k: b.intervals[k]["se"] for k in ("alpha", "beta")}
        print(
            f"fit + {args.bootstrap}-resample bootstrap: {total:.1f} s "
            f"(bootstrap alone ~{total - warm:.1f} s; target < 60 s); "
            f"SE(alpha)={se['alpha']:.4f}, SE(beta)={se['beta']:.4f}"
        )
    return 0


def first_fit_in_new_process(compilation_cache: str) -> float:
    """Seconds of the first full fit in a fresh Python process (imports and data excluded)."""
    code = (
        "import time, pandas as pd\n"
        "from scaling.laws.forms import CHINCHILLA\n"
        "from scaling.laws.parametric import fit_parametric\n"
        "from scaling.laws.published import EPOCH_COLUMNS, epoch_rows\n"
        "from scaling.laws.tables import select\n"
        f"data = select(epoch_rows(pd.read_csv({str(DATA)!r})), ('N', 'D'), **EPOCH_COLUMNS)\n"
        "t = time.perf_counter(); fit_parametric(CHINCHILLA, data)\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "SCALING_COMPILATION_CACHE": compilation_cache}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
