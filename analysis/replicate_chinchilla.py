"""Replicate Chinchilla approach 3 on Epoch AI's reconstruction of Hoffmann et al.'s runs.

Fits the 240 rows Epoch uses (the 5 highest losses dropped; D = C/(6N)) with the robust fitter
(Huber delta=1e-3 on log residuals, summed; Hoffmann's 4,500-start grid), bootstraps it, prints
the constants beside Epoch's and Hoffmann's published ones, refits all 245 rows to show what the
outliers do, and writes figures to --out.

    .venv/bin/python analysis/replicate_chinchilla.py --out analysis/out --bootstrap 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from scaling.errors import FitError
from scaling.laws.chinchilla import approach1, approach2, approach3
from scaling.laws.published import (
    EPOCH_2024,
    EPOCH_2024_SE,
    EPOCH_COLUMNS,
    HOFFMANN_2022,
    epoch_rows,
)
from scaling.laws.tables import select
from scaling.plots import laws as plots

DATA = Path(__file__).resolve().parent / "data" / "chinchilla-epoch" / "svg_extracted_data.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="Epoch's svg_extracted_data.csv")
    ap.add_argument("--out", default="analysis/out", help="folder for figures and fit JSON")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    frame = pd.read_csv(args.data)
    rows = epoch_rows(frame)
    data = select(rows, ("N", "D", "C"), **EPOCH_COLUMNS)
    t0 = time.perf_counter()
    fit = approach3(data, bootstrap=args.bootstrap, seed=args.seed)
    seconds = time.perf_counter() - t0
    print(fit.to_table())
    print(f"\n(fit + {args.bootstrap}-resample bootstrap: {seconds:.1f} s)\n")

    a = fit.allocation
    print(f"{'':8}{'this fit':>22}{'SE':>12}{'Epoch 2024':>14}{'SE':>10}{'Hoffmann 2022':>16}")
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        value = fit.params.get(name, a.get(name))
        se = fit.intervals.get(name, {}).get("se", float("nan"))
        ep = EPOCH_2024.get(name)
        if ep is None and name in ("a", "b"):
            s = EPOCH_2024["alpha"] + EPOCH_2024["beta"]
            ep = (EPOCH_2024["beta"] if name == "a" else EPOCH_2024["alpha"]) / s
        ep_se = EPOCH_2024_SE.get(name, float("nan"))
        print(
            f"{name:8}{value:>22.10g}{se:>12.4g}{ep:>14.6g}{ep_se:>10.4g}"
            f"{HOFFMANN_2022[name]:>16.6g}"
        )
    print(f"\nsummed Huber objective: {fit.objective:.6e} (Epoch's target: <= 1.0183e-3)")

    full = approach3(select(frame, ("N", "D", "C"), **EPOCH_COLUMNS))
    print(
        f"\nall {full.n_points} rows (outliers kept): E = {full.params['E']:.4f}, "
        f"alpha = {full.params['alpha']:.4f}, beta = {full.params['beta']:.4f}, "
        f"a = {full.allocation['a']:.4f}. The 5 high-loss rows move E and beta far outside "
        "the 240-row intervals: the selection matters."
    )

    env = approach1(data)
    print(
        f"\napproach 1 (envelope per budget): a = {env.allocation['a']:.4f}, "
        f"b = {env.allocation['b']:.4f}"
    )
    try:
        iso = approach2(data)
        print(f"approach 2 (IsoFLOP): a = {iso.allocation['a']:.4f}")
    except FitError as e:
        iso = None
        print(f"approach 2 (IsoFLOP) not applicable to this scatter of runs: {e}")

    fit.save(out / "chinchilla_approach3.json")
    full.save(out / "chinchilla_approach3_245rows.json")
    figures = {
        "loss_vs_compute.png": plots.loss_vs_compute(data, fit),
        "optimal_allocation.png": plots.optimal_allocation(fit, data),
        "residuals.png": plots.residuals(data, fit),
        "envelope_allocation.png": plots.optimal_allocation(env, data),
    }
    if iso is not None:
        figures["isoflop.png"] = plots.isoflop_curves(data, iso)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
    print(f"\nwrote {', '.join(figures)} and fit JSON to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
