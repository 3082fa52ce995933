"""The report's figures, built from a `Study`: one matplotlib Figure per file stem.

Fit plots come from the analysis layer (`scaling.plots.laws`); loss curves and the side-by-side
allocation of approaches 2 and 3 with intervals from `scaling.plots.runs`.
"""

from __future__ import annotations

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from scaling.laws import allocation as alloc
from scaling.plots import laws as law_plots
from scaling.plots.runs import allocation_comparison, loss_curves
from scaling.report.study import LEVEL, Study

LOSS_UNITS = "eval loss (nats/token)"


def make_figures(study: Study) -> dict[str, Figure]:
    """All figures of the report, by file stem (fits that failed have no figure)."""
    figs = {"loss_curves": loss_curves(study.curves, convention=study.convention)}
    if "approach2" in study.fits:
        figs["isoflop"] = law_plots.isoflop_curves(study.data, study.fits["approach2"])
        figs["isoflop"].axes[0].set_ylabel(f"final {LOSS_UNITS}")
    if "approach3" in study.fits:
        fig = law_plots.loss_vs_compute(study.data, study.fits["approach3"], LEVEL)
        fig.axes[0].set_ylabel(f"final {LOSS_UNITS}")
        fig.axes[0].legend(loc="lower left", fontsize="small")
        figs["frontier"] = fig
    if "approach2" in study.fits or "approach3" in study.fits:
        figs["allocation"] = allocation_figure(study)
    if "approach3" in study.fits:
        fig = law_plots.residuals(study.data, study.fits["approach3"])
        ax = fig.axes[0]
        delta = study.fits["approach3"].options.get("delta")
        if delta:
            ax.plot([], [], "--", color="C3", lw=0.8, label=f"Huber δ = ±{delta:g}")
        ax.plot([], [], "o", color="C0", ms=4, label="runs (final loss)")
        ax.legend(fontsize="small")
        figs["residuals"] = fig
    for fig in figs.values():
        tidy_log_axes(fig)
    return figs


def _short_sci(value: float, _pos: int) -> str:
    """2e+04 -> '2e4' (labels between the powers of ten on a short log axis)."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tidy_log_axes(fig: Figure) -> None:
    """Readable log axes: a y axis spanning under a decade (loss) becomes linear with plain
    labels; x axes label only 1, 2 and 5 x 10^k, so short log ranges keep their labels apart."""
    for ax in fig.axes:
        if not ax.has_data():
            continue
        if ax.get_yscale() == "log":
            lo, hi = ax.get_ylim()
            if lo > 0 and hi / lo < 10:
                ax.set_yscale("linear")
                ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        if ax.get_xscale() == "log":
            lo, hi = ax.get_xlim()
            if lo > 0 and hi / lo < 1e3:
                ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
                ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_short_sci))
            else:
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def c_grid(study: Study, decades_beyond: float = 2.0) -> np.ndarray:
    """Compute budgets from just below the smallest trained to 100x the largest."""
    lo = np.log10(np.min(study.data.C)) - 0.2
    hi = np.log10(study.c_max) + decades_beyond
    return np.logspace(lo, hi, 200)


def _band(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central LEVEL interval of bootstrap draws [draws, points] at each point, NaN draws
    left out; NaN (no band) at points where every draw is NaN."""
    q = 50 * (1 - LEVEL)
    lo, hi = np.full(vals.shape[1], np.nan), np.full(vals.shape[1], np.nan)
    some = ~np.isnan(vals).all(axis=0)
    if some.any():
        lo[some], hi[some] = np.nanpercentile(vals[:, some], [q, 100 - q], axis=0)
    return lo, hi


def allocation_curves(study: Study, C: np.ndarray) -> list[dict]:
    """N_opt(C), D_opt(C) with bootstrap bands for approaches 2 and 3 (those that fitted)."""
    out = []
    if "approach2" in study.fits:
        res, s = study.fits["approach2"], study.samples2
        p = res.params
        cur = {"label": "approach 2 (IsoFLOP)", "a": p["a"], "b": p["b"], "C": C}
        for what, e, g, lg in (("N", "a", "G_N", "logG_N"), ("D", "b", "G_D", "logG_D")):
            mid = p[g] * C ** p[e]
            lo = hi = None
            if s:
                lo, hi = _band(np.exp(s[lg][:, None] + s[e][:, None] * np.log(C)[None, :]))
            cur[what] = (mid, lo, hi)
        out.append(cur)
    if "approach3" in study.fits:
        res, s, k = study.fits["approach3"], study.samples3, study.flops_factor
        cur = {
            "label": "approach 3 (parametric)",
            "a": res.allocation["a"],
            "b": res.allocation["b"],
            "C": C,
        }
        for what, f, fb in (
            ("N", alloc.optimal_n, alloc.optimal_n_batch),
            ("D", alloc.optimal_d, alloc.optimal_d_batch),
        ):
            mid = f(res.params, C, k)
            lo = hi = None
            if s:
                lo, hi = _band(np.stack([fb(s, c, k) for c in C], axis=1))
            cur[what] = (mid, lo, hi)
        out.append(cur)
    return out


def allocation_figure(study: Study) -> Figure:
    points = None
    if "approach2" in study.fits:
        b = study.fits["approach2"].diagnostics["budgets"]
        points = {
            "C": [x["C"] for x in b],
            "N": [x["N_opt"] for x in b],
            "D": [x["D_opt"] for x in b],
        }
    return allocation_comparison(
        allocation_curves(study, c_grid(study)),
        convention=study.convention,
        points=points,
        c_max=study.c_max,
        level=LEVEL,
    )
