"""The figure of a comparison (scaling.laws.compare): every group's compute frontier on one
axis — frontier points, fitted L(C) and its bootstrap band, one colour per group."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from scaling.laws.compare import Comparison


def frontiers_figure(c: Comparison, runs: dict[str, np.ndarray] | None = None) -> Figure:
    """Loss against compute (log x): points, fitted curves and bands per group; L* dotted.

    `runs` (optional): group -> (n, 2) array of every run's (C, loss), drawn faint."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8), layout="constrained")
    colours = plt.get_cmap("tab10")
    lo = min(f["C"] for pts in c.frontiers.values() for f in pts)
    hi = max(f["C"] for pts in c.frontiers.values() for f in pts)
    C = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 200)
    for i, name in enumerate(c.groups):
        colour = colours(i % 10)
        r = c.row(name)
        if runs and name in runs:
            ax.scatter(*runs[name].T, s=10, color=colour, alpha=0.25, linewidths=0)
        pts = np.array([(f["C"], f["L"]) for f in c.frontiers[name]])
        gi = r.get("gamma_interval")
        interval = f" [{gi['lo']:.3f}, {gi['hi']:.3f}]" if gi else ""
        label = f"{name}: gamma = {r['gamma']:.3f}{interval}"
        if name != c.baseline:
            label += f", k = {r['multiplier']:.2g}"
        ax.plot(pts[:, 0], pts[:, 1], "o", color=colour, ms=6)
        ax.plot(C, c.predict(name, C), "-", color=colour, lw=1.6, label=label)
        band = c.band(name, C)
        if band is not None:
            ax.fill_between(C, *band, color=colour, alpha=0.15, linewidth=0)
    ax.axhline(c.target_loss, color="0.4", ls=":", lw=1)
    ax.annotate(
        f"L* = {c.target_loss:.3g}",
        (C[0], c.target_loss),
        textcoords="offset points",
        xytext=(2, 3),
        fontsize=8,
        color="0.3",
    )
    o = c.options
    ax.set_xscale("log")
    ax.set_xlabel(f"training compute C [FLOP] ({o['flops']})")
    ax.set_ylabel(f"loss ({o['loss']}) [nats per predicted token]")
    frontier = "IsoFLOP minima" if o["frontier"] == "isoflop" else "min-loss run per budget"
    level = f"{o['level']:.0%}"
    ax.set_title(f"{o['by']}: {frontier}; L = E + A/C^gamma; {level} bands", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, which="both", alpha=0.25)
    return fig
