"""Per-run plots of a sweep: loss curves, coloured by compute budget.

Each function returns a matplotlib Figure (nothing is shown or saved), so a report saves it and
a test can inspect its axes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

LOSS_LABEL = "eval loss (nats/token)"


def budget_colors(budgets: np.ndarray) -> dict[float, tuple]:
    """One colour per compute budget, dark (small) to light (large)."""
    cmap = plt.get_cmap("viridis")
    b = sorted(set(float(x) for x in budgets))
    span = max(len(b) - 1, 1)
    return {c: cmap(0.1 + 0.75 * i / span) for i, c in enumerate(b)}


def loss_curves(
    curves: pd.DataFrame,
    *,
    convention: str,
    group: str = "C_group",
    loss: str = "eval_loss",
    param_col: str = "N_nonembedding",
) -> Figure:
    """Eval loss against tokens seen (left) and training compute (right), one line per run.

    `curves` has one row per evaluation (`load_results(view="all")`) and a column `group`
    naming each run's compute budget.
    """
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, layout="constrained")
    colors = budget_colors(curves[group].dropna().to_numpy())
    c_col = f"C_{convention}"
    for _run_id, rows in curves.groupby("run_id", sort=False):
        rows = rows.sort_values("step")
        rows = rows[rows["D"] > 0]
        color = colors.get(float(rows[group].iloc[0]), "grey")
        for ax, x in ((ax_d, "D"), (ax_c, c_col)):
            ax.plot(rows[x], rows[loss], "-", color=color, lw=1.2, alpha=0.85)
            ax.plot(rows[x].iloc[-1], rows[loss].iloc[-1], "o", color=color, ms=4)
    for c, color in colors.items():
        ax_c.plot([], [], "-o", color=color, ms=4, label=f"C = {c:.2g} FLOPs")
    ax_d.set_xscale("log")
    ax_c.set_xscale("log")
    ax_d.set_xlabel("tokens seen D")
    ax_c.set_xlabel(f"training compute C (FLOPs, {convention} convention)")
    ax_d.set_ylabel(LOSS_LABEL)
    ax_d.set_title("Loss curves against tokens")
    ax_c.set_title("Loss curves against compute (dot: end of run)")
    ax_c.legend(title="budget", fontsize=8, title_fontsize=8, loc="upper right")
    for ax in (ax_d, ax_c):
        ax.grid(True, which="both", alpha=0.25)
    n_runs = curves["run_id"].nunique()
    fig.suptitle(f"{n_runs} runs, one line each; colour = IsoFLOP budget ({param_col} models)")
    return fig


def allocation_comparison(
    curves: list[dict],
    *,
    convention: str,
    points: dict | None = None,
    c_max: float | None = None,
    level: float = 0.95,
    param_col: str = "N_nonembedding",
) -> Figure:
    """N_opt(C) (left) and D_opt(C) (right) from several estimators side by side, with bands.

    Each entry of `curves`: `label`, `C` (grid), `N` and `D` as (mid, lo, hi) arrays (lo/hi
    may be None), `a` and `b` (exponents, for the legend). `points`: per-budget optima
    {"C", "N", "D"} drawn as markers; `c_max`: the largest budget trained (a dashed line).
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for ax, what, expo in ((axes[0], "N", "a"), (axes[1], "D", "b")):
        for color, cur in zip(colors, curves, strict=False):
            mid, lo, hi = cur[what]
            ax.plot(
                cur["C"],
                mid,
                "-",
                color=color,
                lw=1.8,
                label=f"{cur['label']}: {expo} = {cur[expo]:.3f}",
            )
            if lo is not None and hi is not None:
                ax.fill_between(cur["C"], lo, hi, color=color, alpha=0.2)
        if points:
            ax.plot(
                points["C"],
                points[what],
                "s",
                color="tab:blue",
                ms=7,
                mec="black",
                label="IsoFLOP minima",
            )
        if c_max:
            ax.axvline(c_max, color="grey", ls="--", lw=0.8, label="largest budget trained")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"training compute C (FLOPs, {convention} convention)")
        ax.set_ylabel(f"N_opt ({param_col} parameters)" if what == "N" else "D_opt (tokens)")
        ax.set_title(f"{what}_opt(C), shaded: {level:.0%} bootstrap interval")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, which="both", alpha=0.25)
    return fig
