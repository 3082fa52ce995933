"""Learning-rate transfer across width: each width's optimal learning rate under sp and mup.

Reads a finished sweep (sweeps/mup_transfer.toml): the final eval loss of every run, grouped by
(parametrization, width) over the learning-rate grid (powers of 2). A width's optimum is the
vertex of the parabola in log2(lr) through the best grid point and its two neighbours (the grid
point itself where the best is at the grid's edge, a neighbour diverged or the three points are
not convex). Transfer is judged by the spread of the optima across widths in grid steps (one
step = a factor of 2): muP predicts <= 1, sp more. Prints the table, a verdict per
parametrization and the check that sp and mup at the base width are the same runs; plots loss
against learning rate per width, one panel per parametrization.

    .venv/bin/python analysis/lr_transfer.py runs/mup_transfer --plot docs/mup_transfer.png
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import DataError
from scaling.sweep.results import load_results

TRANSFER_STEPS = 1.0  # optima spread over at most this many grid steps: "transfers"


@dataclass(frozen=True)
class Optimum:
    """One width's learning-rate curve and its optimum."""

    parametrization: str
    width: int
    lrs: tuple[float, ...]
    losses: tuple[float, ...]  # nan: diverged
    best_lr: float  # the best grid point
    best_loss: float
    log2_opt: float  # the parabola's vertex (or the best grid point), log2(lr)
    how: str  # parabola | edge | grid

    @property
    def opt_lr(self) -> float:
        return 2.0**self.log2_opt


def curves(df: pd.DataFrame, seed: int | None = None) -> dict[tuple[str, int], pd.DataFrame]:
    """Final eval loss by learning rate for each (parametrization, width): the mean over init
    seeds (only `seed`'s run when given); nan where a run diverged (in any seed)."""
    df = df.copy()
    if "model.parametrization" not in df.columns:
        df["model.parametrization"] = "sp"
    df["model.parametrization"] = df["model.parametrization"].fillna("sp")
    df.loc[df["state"] != "done", "eval_loss"] = math.nan
    if seed is not None:
        df = df[df["train.init_seed"] == seed]
    out = {}
    for (p, w), g in df.groupby(["model.parametrization", "model.d_model"]):
        mean = g.groupby("optim.lr")["eval_loss"].agg(lambda v: v.mean(skipna=False))
        out[(str(p), int(w))] = mean.rename("eval_loss").reset_index()
    return out


def optimum(parametrization: str, width: int, curve: pd.DataFrame) -> Optimum:
    """The optimum of one curve: parabola in log2(lr) through the best point and neighbours."""
    lrs = curve["optim.lr"].to_numpy(dtype=float)
    losses = curve["eval_loss"].to_numpy(dtype=float)
    if not np.isfinite(losses).any():
        raise DataError(f"{parametrization} width {width}: every run diverged or failed")
    i = int(np.nanargmin(losses))
    x = np.log2(lrs)
    log2_opt, how = float(x[i]), "grid"
    if i in (0, len(lrs) - 1):
        how = "edge"
    elif np.isfinite(losses[i - 1 : i + 2]).all():
        a, b, _ = np.polyfit(x[i - 1 : i + 2], losses[i - 1 : i + 2], 2)
        if a > 0:
            log2_opt, how = float(np.clip(-b / (2 * a), x[i - 1], x[i + 1])), "parabola"
    return Optimum(
        parametrization,
        width,
        tuple(lrs),
        tuple(losses),
        float(lrs[i]),
        float(losses[i]),
        log2_opt,
        how,
    )


def spread(optima: list[Optimum], grid_step: float) -> tuple[float, int]:
    """(spread of the fitted optima, spread of the best grid points), in grid steps."""
    fit = [o.log2_opt for o in optima]
    grid = [math.log2(o.best_lr) for o in optima]
    return (max(fit) - min(fit)) / grid_step, round((max(grid) - min(grid)) / grid_step)


def table(optima: dict[str, list[Optimum]], grid_step: float) -> str:
    """Markdown: optimum per width per parametrization, then the spread and verdict."""
    lines = [
        "| parametrization | width | best grid lr | its loss | fitted optimum lr | "
        "log2 | fit | shift vs smallest width (grid steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, opts in optima.items():
        ref = opts[0].log2_opt
        for o in opts:
            lines.append(
                f"| {p} | {o.width} | {o.best_lr:.3g} | {o.best_loss:.4f} | {o.opt_lr:.3g} | "
                f"{o.log2_opt:+.2f} | {o.how} | {(o.log2_opt - ref) / grid_step:+.2f} |"
            )
    lines.append("")
    for p, opts in optima.items():
        fit, grid = spread(opts, grid_step)
        verdict = "transfers" if fit <= TRANSFER_STEPS else "does not transfer"
        lines.append(
            f"- {p}: optima spread over {fit:.2f} grid steps (fitted), {grid} (best grid "
            f"points) across widths {[o.width for o in opts]}: {verdict} "
            f"(criterion: <= {TRANSFER_STEPS:g} step)"
        )
    return "\n".join(lines)


def same_at_base(df: pd.DataFrame) -> str | None:
    """Where the sweep has mup runs at their base width: the largest |loss difference| from the
    sp runs of the same width, learning rate and seed (0 when they are the same model)."""
    if "model.base_d_model" not in df.columns or "model.parametrization" not in df.columns:
        return None
    at = df[df["model.d_model"] == df["model.base_d_model"]]
    key = ["optim.lr", "train.init_seed"]
    sp = at[at["model.parametrization"] == "sp"].set_index(key)["eval_loss"]
    mu = at[at["model.parametrization"] == "mup"].set_index(key)["eval_loss"]
    both = sp.index.intersection(mu.index)
    if both.empty:
        return None
    diff = np.abs(sp[both].to_numpy() - mu[both].to_numpy())
    lrs = np.asarray([lr for lr, _ in both])
    low = diff[lrs <= np.median(lrs)]
    return (
        f"sp vs mup at the base width ({int(at['model.d_model'].iloc[0])}), {len(both)} runs: "
        f"largest |eval loss difference| {np.nanmax(diff):.3g} (lower half of the lr grid: "
        f"{np.nanmax(low):.3g})"
    )


def plot(optima: dict[str, list[Optimum]], path: str) -> None:
    """Eval loss vs learning rate, one line per width, one panel per parametrization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(optima), figsize=(5.2 * len(optima), 4.0), sharey=True)
    axes = np.atleast_1d(axes)
    widths = sorted({o.width for opts in optima.values() for o in opts})
    cmap = plt.get_cmap("viridis")
    finite = [v for opts in optima.values() for o in opts for v in o.losses if np.isfinite(v)]
    lo, best_hi = min(finite), max(o.best_loss for opts in optima.values() for o in opts)
    for ax, (p, opts) in zip(axes, optima.items(), strict=True):
        for o in opts:
            color = cmap(widths.index(o.width) / max(len(widths) - 1, 1))
            ax.plot(o.lrs, o.losses, "o-", color=color, ms=4, label=f"width {o.width}")
            ax.axvline(o.opt_lr, color=color, ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (optim.lr)")
        ax.set_title(f"{p}: final eval loss vs learning rate\n(dotted: fitted optimum)")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylim(lo - 0.05, best_hi + 0.6 * (best_hi - lo) + 0.3)  # the valleys, not blow-ups
    axes[0].set_ylabel("eval loss (nats/byte)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def all_optima(df: pd.DataFrame, seed: int | None = None) -> dict[str, list[Optimum]]:
    """{parametrization: optima by increasing width}, sp first."""
    optima: dict[str, list[Optimum]] = {}
    for (p, w), curve in sorted(curves(df, seed).items(), key=lambda kv: (kv[0][0] != "sp", kv[0])):
        optima.setdefault(p, []).append(optimum(p, w, curve))
    return optima


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep folder (scaling sweep run sweeps/mup_transfer.toml)")
    ap.add_argument("--plot", help="write the loss-vs-lr figure here (PNG/PDF)")
    args = ap.parse_args(argv)
    df = load_results(args.sweep, view="final", include_diverged=True)
    if df.empty:
        print(f"{args.sweep}: no finished runs", file=sys.stderr)
        return 2
    lrs = np.log2(sorted(df["optim.lr"].unique()))
    grid_step = float(np.median(np.diff(lrs))) if len(lrs) > 1 else 1.0
    seeds = sorted(int(s) for s in df["train.init_seed"].unique())
    n_div = int((df["state"] != "done").sum())
    print(
        f"{len(df)} runs ({n_div} diverged), init seeds {seeds}, learning-rate grid step "
        f"x{2**grid_step:g}; loss = mean final eval loss over the seeds"
    )
    optima = all_optima(df)
    print(table(optima, grid_step))
    if len(seeds) > 1:
        print("\neach seed alone (spread of the fitted optima across widths, grid steps):")
        for seed in seeds:
            alone = all_optima(df, seed)
            cells = ", ".join(
                f"{p} {spread(o, grid_step)[0]:.2f} ({' '.join(f'{x.log2_opt:+.1f}' for x in o)})"
                for p, o in alone.items()
            )
            print(f"- seed {seed}: {cells}")
    check = same_at_base(df)
    if check:
        print(check)
    if args.plot:
        plot(optima, args.plot)
        print(f"figure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
